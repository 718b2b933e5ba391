"""``RealcamDataModule``: LoopSequence shards -> length-bucketed, augmented batches (format and batch: docs/data.md).

Each DataLoader worker of each rank owns a disjoint slice of the shards ("slot" = (rank, worker)). Training
resamples shards inside its own slice forever and stops after a fixed number of batches, so every rank runs
the same number of steps (DDP needs that); validation and test read every sample exactly once over all slots.
Batches are formed inside the workers, so one batch always shares one length T.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.context
import random
import warnings
from typing import Any, Callable, Iterator, TypedDict

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from realcam.data.loopaug import LoopSequence
from realcam.data.shards import ShardError, decode_sample, expand_urls, iter_shard


class RealcamBatch(TypedDict):
    """One batch; every field shares B and T."""

    source: Tensor       # [B, T, 3, H, W] float32 in [-1, 1]
    target: Tensor       # [B, T, 3, H, W] float32 in [-1, 1]
    source_c2w: Tensor   # [B, T, 4, 4] float32, OpenCV camera-to-world
    target_c2w: Tensor   # [B, T, 4, 4]
    source_K: Tensor     # [B, T, 3, 3] float32, pixels of the returned frames
    target_K: Tensor     # [B, T, 3, 3]
    revisit: Tensor      # [B, T] int64: m for a revisit n -> m, -1 otherwise
    length: int          # T
    key: list[str]       # sample keys, for tracing a batch back to its shard
    scene_id: list[str]
    strategy: list[str]


class CorruptCounter:
    """A count shared by the main process and its DataLoader workers (an int64 in shared memory).

    Workers are separate processes, so a plain attribute would stay in the worker. The shared value crosses
    both fork (inherited) and spawn (handed over while the worker starts). Pickled at any other time (a copy
    of the DataModule) it becomes an independent counter that starts from the current count.
    """

    def __init__(self, start: int = 0):
        self._value = multiprocessing.Value("q", start)

    def add(self, n: int = 1) -> None:
        with self._value.get_lock():
            self._value.value += n

    @property
    def value(self) -> int:
        return int(self._value.value)

    def __getstate__(self) -> dict[str, Any]:
        if multiprocessing.context.get_spawning_popen() is not None:
            return {"shared": self._value}
        return {"start": self.value}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._value = state["shared"] if "shared" in state else multiprocessing.Value("q", state["start"])


# -- per-sample transforms --------------------------------------------------------------------------------------
def crop_sequence(seq: LoopSequence, start: int, length: int) -> LoopSequence:
    """Steps [start, start + length); revisits whose earlier step falls outside the window are dropped."""
    end = start + length
    revisit = {n - start: m - start for n, m in seq.revisit.items() if start <= m and n < end}
    return LoopSequence(seq.source_frames[start:end], seq.target_frames[start:end], seq.source_c2w[start:end],
                        seq.target_c2w[start:end], seq.source_K[start:end], seq.target_K[start:end],
                        revisit=revisit, strategy=seq.strategy, scene_id=seq.scene_id, metadata=seq.metadata)


def resize_crop(frames: Tensor, K: Tensor, out_hw: tuple[int, int], zoom: float, top_frac: float,
                left_frac: float) -> tuple[Tensor, Tensor]:
    """uint8 [T, H, W, 3] + K [T, 3, 3] -> uint8 [T, 3, h, w] + K of the new pixels.

    Resize so the frame covers ``out_hw`` times ``zoom`` (aspect kept), then crop ``out_hw`` at
    (top_frac, left_frac) of the slack. K follows both steps exactly.
    """
    new_hw, (top, left), K = resize_crop_geometry(tuple(frames.shape[1:3]), K, out_hw, zoom, top_frac, left_frac)
    x = frames.permute(0, 3, 1, 2).float()
    if new_hw != tuple(frames.shape[1:3]):
        x = F.interpolate(x, size=new_hw, mode="bilinear", align_corners=False, antialias=True)
    if (top, left) != (0, 0) or new_hw != tuple(out_hw):
        x = x[:, :, top:top + out_hw[0], left:left + out_hw[1]]
    return x.round_().clamp_(0, 255).to(torch.uint8), K


def resize_crop_geometry(in_hw: tuple[int, int], K: Tensor, out_hw: tuple[int, int], zoom: float, top_frac: float,
                         left_frac: float) -> tuple[tuple[int, int], tuple[int, int], Tensor]:
    """What :func:`resize_crop` does to a frame of size ``in_hw``, without the pixels: (resized size, crop
    offset (top, left), K of the output pixels)."""
    from realcam.geometry import crop_intrinsics, resize_intrinsics

    (H, W), (h, w) = in_hw, out_hw
    scale = max(h / H, w / W) * zoom
    new_hw = (max(h, round(H * scale)), max(w, round(W * scale)))
    if new_hw != (H, W):
        K = resize_intrinsics(K, (H, W), new_hw)
    top, left = round((new_hw[0] - h) * top_frac), round((new_hw[1] - w) * left_frac)
    if (top, left) != (0, 0) or new_hw != (h, w):
        K = crop_intrinsics(K, top, left)
    return new_hw, (top, left), K


def normalize_frames(batch: dict[str, Any]) -> RealcamBatch:
    """uint8 ``source`` / ``target`` [B, T, 3, H, W] -> float32 in [-1, 1], in place of the dict.

    Workers hand over uint8 batches: a quarter of the bytes through shared memory, which is what limits a
    loader of small frames; the conversion here is one vectorized op in the receiving process.
    """
    for k in ("source", "target"):
        if batch[k].dtype == torch.uint8:
            batch[k] = batch[k].float().div_(127.5).sub_(1.0)
    return batch  # type: ignore[return-value]


def collate(samples: list[dict[str, Any]]) -> RealcamBatch:
    tensors = {k: torch.stack([s[k] for s in samples]) for k in
               ("source", "target", "source_c2w", "target_c2w", "source_K", "target_K", "revisit")}
    return RealcamBatch(**tensors, length=int(tensors["revisit"].shape[1]),
                        **{k: [s[k] for s in samples] for k in ("key", "scene_id", "strategy")})


# -- the stream ---------------------------------------------------------------------------------------------------
class ShardStream(IterableDataset):
    """Batches from shards for one (rank, world) — see the module docstring for the split.

    Yields batches with uint8 ``source`` / ``target``; the DataModule's loaders turn them into float
    :class:`RealcamBatch` es (:func:`normalize_frames`) after they leave the workers.

    ``batches_per_epoch`` (training only) is per rank; workers share it out exactly.
    """

    decode = staticmethod(decode_sample)     # tar members of one sample -> the sample (ValueError if corrupt)

    def __init__(self, urls: list[str], *, train: bool, batch_size: int, counter: CorruptCounter,
                 image_size: tuple[int, int] | None = None, max_zoom: float = 1.0,
                 length_buckets: list[int] | None = None, batches_per_epoch: int | None = None,
                 shuffle_buffer: int = 0, seed: int = 0, rank: int = 0, world_size: int = 1):
        if train and not batches_per_epoch:
            raise ValueError("batches_per_epoch is required for a training stream (it is resampled forever)")
        self.urls, self.train, self.batch_size, self.counter = list(urls), train, batch_size, counter
        self.image_size, self.max_zoom, self.seed = image_size, max_zoom, seed
        self.length_buckets = sorted(set(length_buckets)) if length_buckets else None
        self.batches_per_epoch, self.shuffle_buffer = batches_per_epoch, shuffle_buffer
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        self.auto_epoch = True   # False while a loader sets the epoch from the trainer

    def __len__(self) -> int:
        if not self.train:  # bucketing makes the eval batch count data-dependent; Lightning reads this as "unsized"
            raise TypeError("an evaluation ShardStream has no length")
        return int(self.batches_per_epoch)

    # slot = (rank, worker): which shards it opens, and which samples in them are its own
    def _slot(self) -> tuple[list[tuple[int, str]], int, int, int, int]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        shards = list(enumerate(self.urls))
        # Split by shard where there are enough of them; otherwise every slot reads the shards it shares and keeps
        # sample j of shard i only when (i + j) % n == r, which is still a partition of the samples.
        if len(shards) >= self.world_size:
            shards = shards[self.rank::self.world_size]
            if len(shards) >= workers:
                return shards[worker::workers], 1, 0, worker, workers
            return shards, workers, worker, worker, workers
        slots = self.world_size * workers
        return shards, slots, self.rank * workers + worker, worker, workers

    def _samples(self, rng: random.Random) -> Iterator[tuple[str, LoopSequence]]:
        shards, n, r, _, n_workers = self._slot()
        empty_in_a_row = 0
        while True:
            order = [rng.choice(shards) for _ in range(len(shards))] if self.train else shards
            for i, url in order:
                got = 0
                try:
                    for j, (key, entries) in enumerate(iter_shard(url)):
                        if (i + j) % n != r:
                            continue
                        try:
                            seq = self.decode(entries, key)
                        except (ValueError, TypeError) as err:
                            self._skip(f"corrupt sample {key!r} in {url}: {err}")
                            continue
                        got += 1
                        yield key, seq
                except ShardError as err:
                    self._skip(f"corrupt shard, rest skipped: {err}")
                empty_in_a_row = 0 if got else empty_in_a_row + 1
            if not self.train:
                return
            if empty_in_a_row > 4 * len(shards) + 8:  # an endless stream that never yields would hang the trainer
                raise RuntimeError(f"rank {self.rank}: its training shards {[u for _, u in shards]} yielded no "
                                   f"readable samples for this worker: they are corrupt (`realcam data check`) or "
                                   f"hold fewer samples than ranks x workers ({self.world_size} x {n_workers})")

    def _skip(self, message: str) -> None:
        self.counter.add()
        warnings.warn(f"skipping {message}", RuntimeWarning, stacklevel=2)

    def _prepare(self, key: str, seq: LoopSequence, rng: random.Random) -> dict[str, Any] | None:
        T = seq.num_steps
        if self.length_buckets is not None:
            fits = [b for b in self.length_buckets if b <= T]
            if not fits:
                warnings.warn(f"sample {key!r} has {T} steps, shorter than every length bucket "
                              f"{self.length_buckets}; skipped", RuntimeWarning, stacklevel=2)
                return None
            L_ = fits[-1]
            seq = crop_sequence(seq, rng.randint(0, T - L_) if self.train else 0, L_) if L_ < T else seq
        src, tgt, src_K, tgt_K = seq.source_frames, seq.target_frames, seq.source_K, seq.target_K
        if self.image_size is not None:
            zoom = rng.uniform(1.0, self.max_zoom) if self.train else 1.0
            top, left = (rng.random(), rng.random()) if self.train else (0.5, 0.5)
            # One crop for both streams keeps them pixel-aligned with each other.
            src, src_K = resize_crop(src, src_K, self.image_size, zoom, top, left)
            tgt, tgt_K = resize_crop(tgt, tgt_K, self.image_size, zoom, top, left)
        else:
            src, tgt = (x.permute(0, 3, 1, 2).contiguous() for x in (src, tgt))
        revisit = torch.full((seq.num_steps,), -1, dtype=torch.long)
        for n, m in seq.revisit.items():
            revisit[n] = m
        return dict(source=src, target=tgt, source_c2w=seq.source_c2w, target_c2w=seq.target_c2w,
                    source_K=src_K.float(), target_K=tgt_K.float(), revisit=revisit, key=key,
                    scene_id=seq.scene_id, strategy=seq.strategy)

    @staticmethod
    def shape_key(sample: dict[str, Any]) -> tuple:
        """Samples batch together when their keys are equal."""
        return tuple(sample["source"].shape)

    collate = staticmethod(collate)

    def __iter__(self) -> Iterator[RealcamBatch]:
        _, _, _, worker, workers = self._slot()
        rng = random.Random(f"{self.seed}-{self.epoch}-{self.rank}-{worker}")
        if self.auto_epoch:
            self.epoch += 1  # persistent workers keep this copy: the next epoch draws differently
        quota = None
        if self.train:
            quota = self.batches_per_epoch // workers + (worker < self.batches_per_epoch % workers)
            if quota == 0:
                return
        buckets: dict[tuple, list[dict[str, Any]]] = {}
        pool: list[tuple[str, LoopSequence]] = []
        done = 0
        for item in self._samples(rng):
            if self.train and self.shuffle_buffer > 1:
                pool.append(item)
                if len(pool) < self.shuffle_buffer:
                    continue
                item = pool.pop(rng.randrange(len(pool)))
            sample = self._prepare(*item, rng)
            if sample is None:
                continue
            shape = self.shape_key(sample)
            bucket = buckets.setdefault(shape, [])
            bucket.append(sample)
            if len(bucket) == self.batch_size:
                yield self.collate(bucket)
                buckets[shape] = []
                done += 1
                if quota is not None and done >= quota:
                    return
        if not self.train:  # evaluation sees every sample (it never shuffles): flush partial buckets, shortest first
            for shape in sorted(buckets):
                if buckets[shape]:
                    yield self.collate(buckets[shape])


class _EpochLoader(DataLoader):
    """Yields float batches (:func:`normalize_frames`) and keeps the stream's epoch in step.

    With ``epoch_fn`` (the trainer's global step) an epoch's draw is a function of the step it starts at, so a
    run resumed from a checkpoint sees the same batches as one that never stopped. Without it (or with persistent
    workers, which keep their own copy) the epoch is bumped here, so non-persistent workers still get a fresh
    shard draw each epoch."""

    def __init__(self, *args: Any, epoch_fn: Callable[[], int] | None = None,
                 transform: Callable[[Any], Any] = normalize_frames, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.epoch_fn, self.transform = epoch_fn, transform

    def __iter__(self):
        managed = self.epoch_fn is not None and not (self.num_workers > 0 and self.persistent_workers)
        if managed:
            self.dataset.epoch, self.dataset.auto_epoch = self.epoch_fn(), False
        it = super().__iter__()
        if not managed and self.num_workers > 0 and not self.persistent_workers:
            self.dataset.epoch += 1
        return map(self.transform, it)


# -- the DataModule ---------------------------------------------------------------------------------------------
class RealcamDataModule(L.LightningDataModule):
    """LoopSequence shards for fit / validate / test / predict.

    Args:
        train_shards / val_shards / test_shards: shard paths, brace patterns (``DIR/train-{000000..000009}.tar``)
            or globs, or lists of them; every path must exist.
        predict_shards: what ``realcam predict`` generates for, read like test (every sample once, centre
            crops, the first steps); None uses ``test_shards``.
        batch_size: samples per batch (per rank).
        num_workers: DataLoader worker processes per rank.
        image_size: (H, W) of returned frames; None keeps the stored size (then all shards must share it).
        max_zoom: training resizes to cover ``image_size`` times U(1, max_zoom) and crops at a random place;
            evaluation resizes to cover and crops the centre. Intrinsics follow exactly.
        length_buckets: allowed T values; a sample is cropped to the longest bucket that fits (a random window
            in training, the first steps in evaluation). None groups samples by their stored T.
        train_batches_per_epoch: batches per rank per epoch; None = train samples // (batch_size * world_size).
        shuffle_buffer: training sample shuffle buffer (on top of random shard resampling); 0 disables it.
        seed: drives shard resampling, crops and shuffling (rank and worker are mixed in).
        log_corrupt: attach :class:`CorruptSampleLogger` so ``data/corrupt_samples`` gets logged.
    """

    def __init__(self, train_shards: str | list[str] | None = None, val_shards: str | list[str] | None = None,
                 test_shards: str | list[str] | None = None, predict_shards: str | list[str] | None = None,
                 batch_size: int = 4, num_workers: int = 2,
                 image_size: tuple[int, int] | None = None, max_zoom: float = 1.0,
                 length_buckets: list[int] | None = None, train_batches_per_epoch: int | None = None,
                 shuffle_buffer: int = 16, seed: int = 0,
                 persistent_workers: bool = False, loader_timeout: float = 0.0, log_corrupt: bool = True):
        super().__init__()
        self.save_hyperparameters()  # the data config travels with checkpoints
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: expected >= 1")
        if max_zoom < 1.0:
            raise ValueError(f"max_zoom={max_zoom}: expected >= 1.0 (1.0 means crop only, no random resize)")
        if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
            raise ValueError(f"image_size={image_size}: expected (height, width) in pixels")
        if length_buckets is not None and (not length_buckets or min(length_buckets) < 1):
            raise ValueError(f"length_buckets={length_buckets}: expected a non-empty list of positive lengths")
        self.urls = {split: expand_urls(arg, f"{split}_shards") if arg is not None else None
                     for split, arg in (("train", train_shards), ("val", val_shards), ("test", test_shards),
                                        ("predict", predict_shards))}
        if self.urls["predict"] is None:
            self.urls["predict"] = self.urls["test"]
        self.batch_size, self.num_workers = batch_size, num_workers
        self.image_size = tuple(image_size) if image_size is not None else None
        self.max_zoom, self.length_buckets = max_zoom, length_buckets
        self.train_batches_per_epoch, self.shuffle_buffer, self.seed = train_batches_per_epoch, shuffle_buffer, seed
        self.persistent_workers, self.loader_timeout = persistent_workers, loader_timeout
        self.log_corrupt = log_corrupt
        self.corrupt = {split: CorruptCounter() for split in self.urls}
        self._streams: dict[str, ShardStream] = {}

    @property
    def corrupt_count(self) -> int:
        """Samples / shard tails skipped as corrupt so far, over all splits, workers included (this rank)."""
        return sum(c.value for c in self.corrupt.values())

    def _rank_world(self) -> tuple[int, int]:
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def setup(self, stage: str | None = None) -> None:
        if self.log_corrupt and self.trainer is not None and not any(
                isinstance(cb, CorruptSampleLogger) for cb in self.trainer.callbacks):
            # Callbacks are looked up at each hook call, so one appended here still sees the epoch ends.
            self.trainer.callbacks.append(CorruptSampleLogger())

    def stream(self, split: str) -> "ShardStream":
        """The split's batch stream, made once per (rank, world) so its epoch counter survives loader reloads."""
        urls = self.urls[split]
        if urls is None:
            also = " (or test_shards)" if split == "predict" else ""
            raise ValueError(f"{split}_shards{also} is not set: pass RealcamDataModule({split}_shards="
                             f"'DIR/{split}-*.tar') (on the command line --data.init_args.{split}_shards)")
        rank, world = self._rank_world()
        stream = self._streams.get(split)
        if stream is None or (stream.rank, stream.world_size) != (rank, world):
            batches = None
            if split == "train":
                batches = self.train_batches_per_epoch or max(1, count_samples(urls) // (self.batch_size * world))
            stream = ShardStream(urls, train=split == "train", batch_size=self.batch_size,
                                 counter=self.corrupt[split], image_size=self.image_size, max_zoom=self.max_zoom,
                                 length_buckets=self.length_buckets, batches_per_epoch=batches,
                                 shuffle_buffer=self.shuffle_buffer,
                                 seed=self.seed + (0 if split == "train" else 7919), rank=rank, world_size=world)
            self._streams[split] = stream
        return stream

    def _loader(self, split: str) -> DataLoader:
        epoch_fn = None
        if split == "train" and self.trainer is not None:
            # Keyed by the global step at which the epoch starts: a run resumed from a checkpoint starts its
            # next epoch at the same step as an uninterrupted run, so it draws the same batches.
            epoch_fn = lambda: self.trainer.global_step  # noqa: E731
        return _EpochLoader(self.stream(split), batch_size=None, num_workers=self.num_workers,
                            persistent_workers=self.persistent_workers and self.num_workers > 0,
                            timeout=self.loader_timeout if self.num_workers > 0 else 0, epoch_fn=epoch_fn)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")


def count_samples(urls: list[str]) -> int:
    """Samples in the shards, counted from tar headers (member data is skipped, not read)."""
    import tarfile

    total = 0
    for url in urls:
        keys = set()
        try:
            with tarfile.open(url, "r:") as tar:
                keys.update(m.name.partition(".")[0] for m in tar if m.isfile())
        except tarfile.TarError as err:
            warnings.warn(f"cannot count samples in {url} ({err}); it is counted as empty", RuntimeWarning)
        total += len(keys)
    return total


class CorruptSampleLogger(L.Callback):
    """Logs ``data/corrupt_samples`` (summed over ranks) at each train / validation epoch end."""

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        if isinstance(dm, RealcamDataModule):
            pl_module.log("data/corrupt_samples", float(dm.corrupt_count), reduce_fx="sum", sync_dist=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module)
