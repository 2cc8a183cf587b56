"""The batch policy (engine.batching): a pure function of what the batch holds."""
from __future__ import annotations

from tarsier.engine.batching import batch_is_due, default_queue_size


def test_a_full_batch_runs_at_once():
    assert batch_is_due([None, None, None, None], batch_size=4)
    assert batch_is_due([0, 1, None, 2, None], batch_size=4)
    assert not batch_is_due([None, None, None], batch_size=4)


def test_a_clip_joining_never_runs_a_partial_batch():
    assert not batch_is_due([0, 1], batch_size=4)           # videos that ended long ago: still wait to fill
    assert not batch_is_due([], batch_size=4)


def test_a_partial_batch_runs_when_it_waited_one_more_video_and_nothing_is_decoded():
    # a clip of the video whose decode ended 1st, and now the 2nd ended: it waited a whole video
    assert batch_is_due([0, None], batch_size=4, ended=1)
    # ... unless a decoded clip is ready to be taken: it may still fill the batch
    assert not batch_is_due([0, None], batch_size=4, ended=1, decoded_waiting=True)


def test_a_partial_batch_keeps_waiting_for_its_own_videos():
    # the video that just ended is the one in the batch (its end is not "another video's")
    assert not batch_is_due([3, 3], batch_size=4, ended=3)
    # clips of videos still decoding: the batch waits for them
    assert not batch_is_due([None, None], batch_size=4, ended=5)
    # a video that ended after the one ending now cannot have waited for it
    assert not batch_is_due([6], batch_size=4, ended=5)


def test_an_empty_batch_is_never_run_by_an_end():
    assert not batch_is_due([], batch_size=4, ended=2)


def test_default_queue_size_is_two_batches_and_two_per_worker():
    assert default_queue_size(4, 0) == 8
    assert default_queue_size(4, 3) == 14
