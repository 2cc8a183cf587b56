"""When the local engine runs a batch of clips: a pure function of what the batch holds.

Clips are batched in arrival order (with the project's VideoLLM every clip of a run has the same
visual token count and prompt, so there is no padding to cut by sorting). A batch is run as soon as
it is full, or, partial, when another video's decode ends while it holds a clip of a video that had
already ended and no decoded clip is waiting: a batch never waits for more than one more video's
worth of decoding when the decoders are the bottleneck (the model would idle anyway), and stays full
when they are not (short videos of one clip each still make full batches). Whatever is left when the
decoders are done is run at the end.
"""
from __future__ import annotations

from collections.abc import Sequence


def batch_is_due(ends: Sequence[int | None], batch_size: int, ended: int | None = None,
                 decoded_waiting: bool = False) -> bool:
    """Whether to run the batch now.

    `ends`: one entry per clip in the batch: when its video's decode ended (how many decodes had
    ended before it), None while that video still decodes. `ended`: the same for a decode that has
    just ended, None when what just happened is a clip joining the batch. `decoded_waiting`: a
    decoded item is ready to be taken without a wait."""
    if len(ends) >= batch_size:
        return True
    if ended is None:
        return False
    waited = any(e is not None and e < ended for e in ends)
    return waited and not decoded_waiting


def default_queue_size(batch_size: int, workers: int) -> int:
    """Clips decoded ahead of the model: two batches, plus two per decode worker."""
    return 2 * batch_size + 2 * workers
