"""Training batches: samples from a mixture -> frames (or cached tower features) + token ids.

The vision tower is frozen, so its output for a clip never changes during a run: features are
computed once per distinct clip (decoded in worker processes, encoded in batches) and kept on
disk in safetensors, keyed by the clip and the tower's config. Every later step skips decoding
and the tower entirely. Only a bounded set of clips' features is held in RAM (`cache_ram`, least
recently used first out); the rest is read back from its file when a batch needs it, so a run's
memory does not grow with the dataset (at 32,000 clips, holding all of them took 22.9 GiB). The
clips held live in one preallocated block (SlotCache), which also bounds the decoded frames of
--train-vision runs (FrameSource)."""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from safetensors.torch import load_file

from tarsier.common.files import home_dir, save_safetensors
from tarsier.trainers.frames import decode_job as _decode


def clip_key(sample) -> tuple:
    return (str(Path(sample.video).resolve()), sample.start, sample.end,
            tuple(sample.frame_times) if sample.frame_times else None)


def vision_fingerprint(model, frames: int) -> str:
    """Changes whenever the tower's weights or geometry change, so stale features are never used."""
    h = hashlib.sha1()
    h.update(json.dumps(model.config.vision.__dict__, sort_keys=True, default=str).encode())
    h.update(str(frames).encode())
    for name, p in sorted(model.vision.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().flatten()[:1024].float().cpu().numpy().tobytes())
        h.update(str(float(p.detach().float().sum())).encode())
    return h.hexdigest()[:16]


def _file_key(key: tuple) -> str:
    path, *rest = key
    st = os.stat(path)
    return hashlib.sha1(json.dumps([path, st.st_size, st.st_mtime_ns, *rest]).encode()).hexdigest()


def default_decode_workers() -> int:
    """Decode processes only pay off with cores to spare beside the tower's threads: on 2 cores a pool
    of 2 filled the cache at 21.7 clips/s and decoding in-process at 30.1 (bench/train_speed.py)."""
    return min(4, (os.cpu_count() or 1) // 2)


DEFAULT_CACHE_RAM = 4 * 1024**3


def parse_bytes(text: str | int) -> int:
    """'4GB', '512MB', '1.5G', '0' or a plain number of bytes -> bytes (powers of 1024)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not m:
        raise ValueError(f"{text!r} is not a size: give a number with a unit, e.g. 4GB, 512MB")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))


class SlotCache:
    """The most recently used tensors of one shape, up to `ram_bytes`, held in one block allocated at the first
    `put` (least recently used out first). Not a tensor each: evicted tensors' memory stayed with the process
    (RSS kept growing past the budget while training drew clips back), since the allocator rarely returns
    freed blocks to the OS. A tensor of another shape, or larger than the budget, is not held."""

    def __init__(self, ram_bytes: int):
        self.ram_bytes = int(ram_bytes)
        self.slots: OrderedDict[tuple, int] = OrderedDict()   # key -> its slot in `pool`, least recent first
        self.pool: torch.Tensor | None = None                 # (slots, *shape), made at the first put
        self._free: list[int] = []

    def __contains__(self, key) -> bool:
        return key in self.slots

    def __iter__(self):
        return iter(self.slots)

    def __len__(self) -> int:
        return len(self.slots)

    def __getitem__(self, key) -> int:
        return self.slots[key]

    @property
    def nbytes(self) -> int:
        return 0 if self.pool is None else len(self.slots) * self.pool[0].numel() * self.pool.element_size()

    def put(self, key, value: torch.Tensor) -> None:
        if self.pool is None:
            slots = self.ram_bytes // (value.numel() * value.element_size())
            if slots < 1:
                return
            self.pool = torch.empty((slots, *value.shape), dtype=value.dtype)
            self._free = list(range(slots - 1, -1, -1))
        if tuple(value.shape) != tuple(self.pool.shape[1:]):
            return
        slot = self.slots.pop(key, None)
        if slot is None:
            slot = self._free.pop() if self._free else self.slots.popitem(last=False)[1]
        self.pool[slot].copy_(value)
        self.slots[key] = slot

    def batch(self, keys: list, load: Callable[[int, tuple], torch.Tensor]) -> torch.Tensor:
        """(len(keys), *shape): the held rows from the block, the others from `load(i, key)`, then held."""
        out = None
        for i, key in enumerate(keys):
            slot = self.slots.get(key)
            if slot is not None:
                self.slots.move_to_end(key)
                row = self.pool[slot]
            else:
                row = load(i, key)
            if out is None:
                out = torch.empty((len(keys), *row.shape), dtype=row.dtype)
            out[i] = row   # copied before `put` can reuse the slot of a row read earlier in this batch
            if slot is None:
                self.put(key, row)
        return out


class FeatureStore:
    """Tower features per clip: every clip on disk (DIR/<fingerprint>/<xx>/<key>.safetensors), the most
    recently used ones in RAM up to `ram_bytes`."""

    def __init__(self, model, frames: int, folder: Path | None = None, workers: int = 0, dataset: str | None = None,
                 ram_bytes: int = DEFAULT_CACHE_RAM):
        self.model = model
        self.frames = frames
        self.fingerprint = vision_fingerprint(model, frames)
        root = folder if folder is not None else home_dir() / "features"
        self.folder = Path(root) / self.fingerprint
        self.workers = workers or default_decode_workers()
        self.ram_bytes = int(ram_bytes)
        self.memory = SlotCache(ram_bytes)   # clip -> (N, P, Dv) features, the most recently used
        self.on_disk: set[tuple] = set()
        self.computed = 0
        self.loaded = 0          # clips found in the disk cache instead of computed
        self.disk_reads = 0      # feature files read back while training (the RAM budget's cost)
        self.dataset = dataset
        self._recorded = False

    def _record_use(self) -> None:
        """What `tarsier cache` lists: the model and datasets behind this folder and when it was last used."""
        if self._recorded:
            return
        from tarsier.trainers.cache import record_use

        record_use(self.folder, model=str(getattr(self.model.config, "name", "") or "unnamed"), frames=self.frames,
                   dataset=self.dataset)
        self._recorded = True

    def path_for(self, key: tuple) -> Path:
        fk = _file_key(key)
        return self.folder / fk[:2] / f"{fk}.safetensors"

    @property
    def memory_bytes(self) -> int:
        return self.memory.nbytes

    @property
    def pool(self) -> torch.Tensor | None:
        return self.memory.pool

    def get(self, samples) -> torch.Tensor:
        """(B, N, P, Dv) features for a batch of samples."""
        keys = [clip_key(s) for s in samples]
        self.ensure(samples, keys=keys)
        return self.memory.batch(keys, lambda i, key: self._read(samples[i], key))

    def _read(self, sample, key: tuple) -> torch.Tensor:
        try:
            feats = load_file(str(self.path_for(key)))["features"]
        except FileNotFoundError:   # removed under a running job (`tarsier cache --all`): compute again
            self.on_disk.discard(key)
            self.ensure([sample])
            feats = load_file(str(self.path_for(key)))["features"]
        self.disk_reads += 1
        return feats

    # 4 clips (64 frames) per tower call: on 2 CPU cores the tower ran 1.68x faster than at 16 clips,
    # whose activations spill out of cache (bench/train_speed.py)
    def ensure(self, samples, batch: int = 4, progress=None, keys: list[tuple] | None = None) -> None:
        """`keys`: the samples' clip keys where the caller has them already (one path resolution each)."""
        self._record_use()
        missing: dict[tuple, object] = {}
        for s, key in zip(samples, keys if keys is not None else map(clip_key, samples)):
            if key in self.memory or key in self.on_disk or key in missing:
                continue
            if self.path_for(key).is_file():
                self.on_disk.add(key)
                self.loaded += 1
            else:
                missing[key] = s
        if not missing:
            return
        items = list(missing.items())
        size = self.model.frame_size
        jobs = [(str(s.video), self.frames, size, s.start, s.end, s.frame_times) for _, s in items]
        if self.workers > 1 and len(jobs) > 1:
            import multiprocessing as mp

            # spawn: workers import only trainers.frames (no torch); a bounded window of jobs in
            # flight keeps decoded frames from piling up while the tower encodes
            with ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn")) as pool:
                self._encode(items, _bounded_map(pool, jobs, window=4 * self.workers), batch, progress)
        else:
            self._encode(items, map(_decode, jobs), batch, progress)

    @torch.inference_mode()
    def _encode(self, items, decoded, batch, progress) -> None:
        pending = []
        for (key, _), frames in zip(items, decoded):
            pending.append((key, torch.from_numpy(frames)))
            if len(pending) >= batch:
                self._flush(pending, progress)
                pending = []
        self._flush(pending, progress)

    def _flush(self, pending, progress) -> None:
        if not pending:
            return
        frames = torch.stack([f for _, f in pending])
        feats = self.model.encode_frames(frames).float().cpu()
        feats = feats.view(len(pending), self.frames, *feats.shape[1:])
        for (key, _), f in zip(pending, feats):
            f = f.contiguous()
            save_safetensors(self.path_for(key), {"features": f})
            self.on_disk.add(key)
            self.memory.put(key, f)
            self.computed += 1
        if progress:
            progress(len(pending))


def _bounded_map(pool, jobs, window: int):
    """pool.map in order, with at most `window` jobs submitted ahead of the consumer."""
    from collections import deque

    pending: deque = deque()
    it = iter(jobs)
    for job in it:
        pending.append(pool.submit(_decode, job))
        if len(pending) >= window:
            break
    while pending:
        result = pending.popleft().result()
        nxt = next(it, None)
        if nxt is not None:
            pending.append(pool.submit(_decode, nxt))
        yield result


class FrameSource:
    """Raw frames per batch (for --train-vision, where features change every step). The most recently
    used clips' frames, up to `ram_bytes`, stay decoded (a SlotCache); the rest are decoded again when
    drawn, so a run's memory does not grow with the dataset (nano: 16 frames at 64 px, 196 KB a clip)."""

    def __init__(self, model, frames: int, workers: int = 0, ram_bytes: int = 4 << 30):
        self.model = model
        self.frames = frames
        self.cache = SlotCache(ram_bytes)
        self.decoded = 0

    @property
    def held(self) -> int:
        return self.cache.nbytes

    def get(self, samples) -> torch.Tensor:
        return self.cache.batch([clip_key(s) for s in samples], lambda i, key: self._decode_clip(samples[i]))

    def _decode_clip(self, s) -> torch.Tensor:
        self.decoded += 1
        return torch.from_numpy(_decode((str(s.video), self.frames, self.model.frame_size, s.start, s.end,
                                         s.frame_times)))


def collate(model, samples, frames_per_clip: int) -> dict[str, torch.Tensor]:
    """Token ids and labels from the model's processor (its own template); the frames or cached tower
    features come from the FeatureStore / FrameSource."""
    processor = model.processor
    prompts = [processor.prompt(s.prompt) for s in samples]
    return processor.tokenize(prompts, frames_per_clip, answers=[s.answer for s in samples], padding_side="right")
