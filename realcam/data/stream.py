"""The batch stream the DataModules read: LoopSequence shards -> length-bucketed, augmented batches.

:class:`ShardStream` is a webdataset pipeline (local, ``pipe:``, http(s) shards); :class:`RealcamBatch` is its
batch, the per-sample transforms (crop, resize, normalisation) are here too. :mod:`realcam.data.latents` streams
encoded shards by subclassing it, and :mod:`realcam.data.datamodule` builds either.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.context
import random
import warnings
import zlib
from functools import partial
from itertools import islice
from typing import Any, Iterable, Iterator, TypedDict

import torch
import torch.nn.functional as F
import webdataset as wds
from torch import Tensor
from torch.utils.data import IterableDataset, get_worker_info

from realcam.data.loopaug import LoopSequence
from realcam.data.shards import decode_sample


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
    (top_frac, left_frac) of the slack. K follows both steps exactly. Hand-written, not kornia.augmentation:
    source and target must share one draw from the stream's seeded rng (exact resume), and K follows it here.
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
        if k in batch and batch[k].dtype == torch.uint8:     # latent training batches carry no frames
            batch[k] = batch[k].float().div_(127.5).sub_(1.0)
    return batch  # type: ignore[return-value]


def collate(samples: list[dict[str, Any]]) -> RealcamBatch:
    tensors = {k: torch.stack([s[k] for s in samples]) for k in
               ("source", "target", "source_c2w", "target_c2w", "source_K", "target_K", "revisit")}
    return RealcamBatch(**tensors, length=int(tensors["revisit"].shape[1]),
                        **{k: [s[k] for s in samples] for k in ("key", "scene_id", "strategy")})


# -- the stream ---------------------------------------------------------------------------------------------------
class ShardStream(IterableDataset):
    """Batches from shards for one (rank, world), as a webdataset pipeline built in each DataLoader worker.

    Stages: shard URLs (``ResampledShards`` for training, each epoch seeded by the step it starts at; a plain list,
    ``split_by_worker``, for evaluation) -> ``tarfile_to_samples`` -> this slot's own samples (a split by sample
    where there are fewer shards than slots) -> decode (corrupt samples counted and skipped by the error handler)
    -> ``shuffle`` (training) -> crop/resize and length bucketing into batches -> ``with_epoch`` (training).

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
        self.skip_batches = 0    # batches of this epoch a resumed run already trained on (the loader sets it)
        self.worker_shift = 0    # and the worker whose turn came next: DataLoader worker i plays worker i + shift
        self._in_a_row = {"errors": 0, "foreign": 0, "foreign_keys": set()}

    def __len__(self) -> int:
        if not self.train:  # bucketing makes the eval batch count data-dependent; Lightning reads this as "unsized"
            raise TypeError("an evaluation ShardStream has no length")
        return int(self.batches_per_epoch)

    def _split(self, worker: int, workers: int) -> tuple[list[str], int, int]:
        """This slot's shards, and (n, r): keep a sample when crc32(key) % n == r (n = 1 keeps all).

        By shard where there are enough of them (every rank its own shards; in evaluation every worker its own
        too), otherwise by sample: every slot reads the shards it shares and keeps its own samples, which is still
        a partition. The rank is the trainer's, passed in: webdataset's split_by_node would look it up in
        torch.distributed, which spawn-started workers do not have.
        """
        if len(self.urls) < self.world_size:
            return self.urls, self.world_size * workers, self.rank * workers + worker
        urls = self.urls[self.rank::self.world_size]
        return (urls, workers, worker) if len(urls) < workers else (urls, 1, 0)

    def pipeline(self, worker: int, workers: int, rng: random.Random) -> Iterable[dict[str, Any]]:
        urls, n, r = self._split(worker, workers)
        if self.train:
            shards = wds.ResampledShards(urls, seed=self.seed, deterministic=True,
                                         worker_seed=lambda: self.rank * 1000 + worker)
            shards.epoch = self.epoch - 1    # it counts its own epochs up from here; ours is the step key
            stages: list[Any] = [shards]
        else:
            stages = [wds.SimpleShardList(urls), *([wds.split_by_worker] if n == 1 else [])]
        stages.append(wds.tarfile_to_samples(handler=self._skip))
        if n > 1:
            stages.append(partial(self._own_samples, n=n, r=r))
        stages.append(wds.map(self._decode, handler=self._skip))
        if self.train and self.shuffle_buffer > 1:
            stages.append(wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng))
        stages.append(partial(self._batches, rng=rng))
        return wds.DataPipeline(*stages)

    def _own_samples(self, samples: Iterable[dict[str, Any]], n: int, r: int) -> Iterator[dict[str, Any]]:
        state = self._in_a_row
        for sample in samples:
            if zlib.crc32(sample["__key__"].encode()) % n == r:
                state["foreign"], state["foreign_keys"] = 0, set()
                yield sample
                continue
            state["foreign"] += 1
            state["foreign_keys"].add(sample["__key__"])
            # Every key seen many times over and none of them ours: an endless stream that never yields would hang.
            if self.train and state["foreign"] > 8 * len(state["foreign_keys"]) + 64:
                raise RuntimeError(f"rank {self.rank}: its training shards {self.urls} hold no sample for this "
                                   f"worker: they hold fewer samples than ranks x workers ({n} slots)")

    def _decode(self, sample: dict[str, Any]) -> tuple[str, Any]:
        key, url = sample["__key__"], sample.get("__url__", "?")
        try:
            return key, self.decode(sample, key)
        except (ValueError, TypeError) as err:
            raise ValueError(f"corrupt sample {key!r} in {url}: {err}") from None

    def _skip(self, err: Exception) -> bool:
        """webdataset's error handler: count the corrupt sample or shard tail, warn, go on."""
        self.counter.add()
        warnings.warn(f"skipping {err}", RuntimeWarning, stacklevel=2)
        self._in_a_row["errors"] += 1
        if self.train and self._in_a_row["errors"] > 4 * len(self.urls) + 8:
            raise RuntimeError(f"rank {self.rank}: its training shards {self.urls} yielded no readable samples: "
                               f"they are corrupt (`realcam data check`)") from err
        return True

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

    def _batches(self, samples: Iterable[tuple[str, Any]], rng: random.Random) -> Iterator[RealcamBatch]:
        """Length bucketing: a batch is ``batch_size`` samples of one shape. Evaluation sees every sample (it never
        shuffles), so at the end it flushes partial buckets, shortest first."""
        buckets: dict[tuple, list[dict[str, Any]]] = {}
        for item in samples:
            self._in_a_row["errors"] = 0
            sample = self._prepare(*item, rng)
            if sample is None:
                continue
            bucket = buckets.setdefault(self.shape_key(sample), [])
            bucket.append(sample)
            if len(bucket) == self.batch_size:
                yield self.collate(bucket)
                bucket.clear()
        if not self.train:
            yield from (self.collate(buckets[shape]) for shape in sorted(buckets) if buckets[shape])

    def __iter__(self) -> Iterator[RealcamBatch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # A new DataLoader iterator asks worker 0 first; in a resumed epoch the next batch is another worker's.
        shift, self.worker_shift = self.worker_shift, 0
        worker = (worker + shift) % workers
        rng = random.Random(f"{self.seed}-{self.epoch}-{self.rank}-{worker}")
        if self.auto_epoch:
            self.epoch += 1  # persistent workers keep this copy: the next epoch draws differently
        pipeline = self.pipeline(worker, workers, rng)
        skip, self.skip_batches = self.skip_batches, 0
        if not self.train:
            return iter(pipeline)
        # DataLoader takes batches from its workers in turn, so a resumed run's first `skip` batches were these:
        quota = self.batches_per_epoch // workers + (worker < self.batches_per_epoch % workers)
        return islice(pipeline.with_epoch(quota), skip // workers + (worker < skip % workers), None)
