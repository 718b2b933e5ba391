"""``RealcamDataModule``: LoopSequence shards -> length-bucketed, augmented batches (format and batch: docs/data.md).

The reading is a webdataset pipeline (:class:`ShardStream`), so shards can live anywhere webdataset reads from
(local, ``pipe:``, http(s)). Every rank reads its own shards; training resamples them forever and stops after a
fixed number of batches, so every rank runs the same number of steps (DDP needs that); validation and test read
every sample exactly once over all (rank, worker) slots. Batches are formed inside the workers, so one batch
always shares one length T. The training loader is resumable mid-epoch (:class:`_EpochLoader`).
"""
from __future__ import annotations

import tarfile
import warnings
import zlib
from typing import Any, Callable

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from realcam.data.shards import expand_urls, open_shard, shard_index
from realcam.data.stream import CorruptCounter, ShardStream, normalize_frames


class _EpochLoader(DataLoader):
    """Yields float batches (:func:`normalize_frames`), keeps the stream's epoch in step, and is resumable.

    With ``epoch_fn`` (the trainer's global step) an epoch's draw is a function of the step it starts at. Without
    it (or with persistent workers, which keep their own copy) the epoch is bumped here, so non-persistent workers
    still get a fresh shard draw each epoch. ``state_dict`` (saved by Lightning in every checkpoint) holds the
    epoch's draw and how many of its batches the training loop took (``consumed``, counted by the DataModule:
    Lightning fetches a batch ahead, so the loader's own count would be one too many); a run resumed from it
    draws the same epoch and skips those batches, so it trains on what an uninterrupted run would have."""

    def __init__(self, *args: Any, epoch_fn: Callable[[], int] | None = None,
                 transform: Callable[[Any], Any] = normalize_frames, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.epoch_fn, self.transform = epoch_fn, transform
        self.consumed, self._epoch, self._resume = 0, 0, None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = dict(state)

    def __iter__(self):
        resume, self._resume = self._resume, None
        managed = self.epoch_fn is not None and not (self.num_workers > 0 and self.persistent_workers)
        self.consumed = 0
        if resume is not None and 0 < resume["consumed"] < len(self.dataset):   # else it ended on an epoch end
            self.dataset.epoch, self.dataset.auto_epoch = resume["epoch"], not managed
            self.dataset.skip_batches = self.consumed = resume["consumed"]
            self.dataset.worker_shift = resume["consumed"] % max(1, self.num_workers)
        elif managed:
            self.dataset.epoch, self.dataset.auto_epoch = self.epoch_fn(), False
        self._epoch = self.dataset.epoch
        it = super().__iter__()                # workers got their copies (or the stream its iterator) here:
        self.dataset.skip_batches = self.dataset.worker_shift = 0    # they are for the resumed epoch only
        if not managed and self.num_workers > 0 and not self.persistent_workers:
            self.dataset.epoch += 1
        return map(self.transform, it)


# -- the DataModule ---------------------------------------------------------------------------------------------
class RealcamDataModule(L.LightningDataModule):
    """LoopSequence shards for fit / validate / test / predict.

    Args:
        train_shards / val_shards / test_shards: shard URLs in any form webdataset reads: local paths, brace
            patterns (``DIR/train-{000000..000009}.tar``), ``pipe:CMD`` (e.g. ``pipe:aws s3 cp s3://b/x.tar -``),
            ``http(s)://``; for local paths also globs and directories; or lists of them. Local paths must exist.
        predict_shards: what ``realcam predict`` generates for, read like test (every sample once, centre
            crops, the first steps); None uses ``test_shards``.
        batch_size: samples per batch (per rank).
        num_workers: DataLoader worker processes per rank.
        image_size: (H, W) of returned frames; None keeps the stored size (then all shards must share it).
        max_zoom: training resizes to cover ``image_size`` times U(1, max_zoom) and crops at a random place;
            evaluation resizes to cover and crops the centre. Intrinsics follow exactly.
        length_buckets: allowed T values; a sample is cropped to the longest bucket that fits (a random window
            in training, the first steps in evaluation). None groups samples by their stored T.
        train_batches_per_epoch: batches per rank per epoch; None = train samples // (batch_size * world_size),
            the samples counted from index.json beside the shards where it lists them.
        shuffle_buffer: training sample shuffle buffer (on top of random shard resampling); 0 disables it.
        seed: drives shard resampling, crops and shuffling (rank and worker are mixed in).
        log_corrupt: attach :class:`CorruptSampleLogger` so ``data/corrupt_samples`` gets logged.
        latents: read the precomputed latents (and text) of ``realcam data encode`` output instead of the frames
            (:mod:`realcam.data.latents`; evaluation splits still decode the frames, for the metrics). None (the
            default): wherever index.json beside the shards says they were encoded. Latent samples are used whole:
            image_size, when set, must equal the encoded size (a check: the latents are not resized) and max_zoom stay 1.0; length_buckets crop to the first T' frames.
        text_length: pad each latent batch's ``text`` to this many tokens with zeros; 512 is what Wan's model saw
            in its own training (its text cross-attention has no mask, so the padding is part of the condition).
            None: to the batch's longest prompt.
    """

    def __init__(self, train_shards: str | list[str] | None = None, val_shards: str | list[str] | None = None,
                 test_shards: str | list[str] | None = None, predict_shards: str | list[str] | None = None,
                 batch_size: int = 4, num_workers: int = 2,
                 image_size: tuple[int, int] | None = None, max_zoom: float = 1.0,
                 length_buckets: list[int] | None = None, train_batches_per_epoch: int | None = None,
                 shuffle_buffer: int = 16, seed: int = 0,
                 persistent_workers: bool = False, loader_timeout: float = 0.0, log_corrupt: bool = True,
                 latents: bool | None = None, text_length: int | None = None):
        super().__init__()
        self.save_hyperparameters()  # the data config travels with checkpoints
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: expected >= 1")
        if max_zoom < 1.0:
            raise ValueError(f"max_zoom={max_zoom}: expected >= 1.0 (1.0 means crop only, no random resize)")
        if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
            raise ValueError(f"image_size={image_size}: expected (height, width) in pixels")
        if text_length is not None and text_length < 1:
            raise ValueError(f"text_length={text_length}: expected >= 1 tokens (Wan: 512), or None for the batch's "
                             f"longest prompt")
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
        self.log_corrupt, self.text_length = log_corrupt, text_length
        self.latents = {split: self._latent_split(split, urls, latents) for split, urls in self.urls.items()}
        self._text_empty: Tensor | None = None
        self.corrupt = {split: CorruptCounter() for split in self.urls}
        self._streams: dict[str, ShardStream] = {}
        self._train_loader: _EpochLoader | None = None

    def _latent_split(self, split: str, urls: list[str] | None, latents: bool | None) -> bool:
        from realcam.data.latents import check_encoded_size, check_latent_shards, encoded_entry

        if urls is None or latents is False:
            return False
        if latents:
            check_latent_shards(urls, f"{split}_shards")
        elif encoded_entry(urls) is None:
            return False
        if self.max_zoom != 1.0:
            raise ValueError(f"max_zoom={self.max_zoom} cannot apply to the latent shards of {split}_shards (latents "
                             f"are used whole, at the resolution they were encoded at): set max_zoom: 1.0, or "
                             f"latents: false to train from the frames")
        check_encoded_size(urls, self.image_size, f"{split}_shards")
        return True

    @property
    def text_empty(self) -> Tensor:
        """The empty-prompt embedding [L, D] stored beside the encoded training shards (``realcam data encode
        --text-encoder``), for guidance and prompt dropout."""
        from realcam.data.encode import load_text_empty

        if self._text_empty is None:
            urls = self.urls["train"] or self.urls["test"] or self.urls["val"]
            if urls is None:
                raise ValueError("text_empty: no shards are set (train_shards, val_shards or test_shards)")
            self._text_empty = load_text_empty(str(urls[0]).rsplit("/", 1)[0] if "/" in str(urls[0]) else ".")
        return self._text_empty

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
            elif world > 1 and self._sharded():
                self._check_ranks(split, urls, world)
            stream = self._streams[split] = self.make_stream(split, urls, batches, rank, world)
        return stream

    def _sharded(self) -> bool:
        """Under FSDP (Lightning's FSDPStrategy, or ModelParallelStrategy: FSDP2) every forward is a collective."""
        from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

        return self.trainer is not None and isinstance(self.trainer.strategy, (FSDPStrategy, ModelParallelStrategy))

    def _check_ranks(self, split: str, urls: list[str], world: int) -> None:
        """Under FSDP every rank must get evaluation samples: each forward is a collective, so a rank without a
        batch (or with fewer batches than the others) would leave the others waiting forever instead of failing."""
        counts = rank_sample_counts(urls, world, max(1, self.num_workers))
        if counts is None:
            return
        fix = (f"write {split}_shards as at least {world} shards of equal size (`realcam data make-shards "
               f"--samples-per-shard N`), or set trainer.limit_{'val' if split == 'val' else split}_batches")
        if min(counts) == 0:
            raise ValueError(f"{split}_shards: rank {counts.index(0)} of {world} would read no sample (samples per "
                             f"rank {counts}), and the other ranks would wait for it forever: {fix}")
        if len(set(counts)) > 1:
            warnings.warn(f"{split}_shards: the {world} ranks read {counts} samples: under FSDP (every forward is a "
                          f"collective) unequal evaluation batch counts hang; {fix} to at most the smallest rank's "
                          f"batch count", RuntimeWarning, stacklevel=2)

    def make_stream(self, split: str, urls: list[str], batches: int | None, rank: int, world: int) -> ShardStream:
        args = dict(train=split == "train", batch_size=self.batch_size, counter=self.corrupt[split],
                    length_buckets=self.length_buckets, batches_per_epoch=batches, shuffle_buffer=self.shuffle_buffer,
                    seed=self.seed + (0 if split == "train" else 7919), rank=rank, world_size=world)
        if self.latents[split]:
            from realcam.data.latents import LatentShardStream

            return LatentShardStream(urls, frames=split != "train", text_length=self.text_length, **args)
        return ShardStream(urls, image_size=self.image_size, max_zoom=self.max_zoom, **args)

    def _loader(self, split: str, transform: Callable[[Any], Any] = normalize_frames) -> DataLoader:
        epoch_fn = None
        if split == "train" and self.trainer is not None:
            # Keyed by the global step at which the epoch starts: a run resumed from a checkpoint starts its
            # next epoch at the same step as an uninterrupted run, so it draws the same batches.
            epoch_fn = lambda: self.trainer.global_step  # noqa: E731
        loader = _EpochLoader(self.stream(split), batch_size=None, num_workers=self.num_workers,
                              persistent_workers=self.persistent_workers and self.num_workers > 0,
                              timeout=self.loader_timeout if self.num_workers > 0 else 0, epoch_fn=epoch_fn,
                              transform=transform)
        if split == "train":
            self._train_loader = loader
        return loader

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # The batches the training loop has taken, for the loader's resumable state (see _EpochLoader).
        if self.trainer is not None and self.trainer.training and self._train_loader is not None:
            self._train_loader.consumed += 1
        return batch

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")


def shard_keys(urls: list[str]) -> list[list[str] | None]:
    """Each shard's sample keys: from index.json where it lists the shard, else from the tar headers (member data
    is skipped on a local file; a remote URL is read once); None, with a warning, for a shard that cannot be read."""
    listed, folder = shard_index(urls), str(urls[0]).rsplit("/", 1)[0]
    out: list[list[str] | None] = []
    for url in urls:
        entry = listed.get(url.rsplit("/", 1)[-1]) if url.rsplit("/", 1)[0] == folder else None
        if entry is not None and "keys" in entry:
            out.append(list(entry["keys"]))
            continue
        try:
            with open_shard(url) as f, tarfile.open(fileobj=f, mode="r:") as tar:
                out.append(sorted({m.name.partition(".")[0] for m in tar if m.isfile()}))
        except (tarfile.TarError, OSError) as err:
            warnings.warn(f"cannot read the sample keys of {url} ({err}); it is counted as empty", RuntimeWarning)
            out.append(None)
    return out


def count_samples(urls: list[str]) -> int:
    """Samples in the shards (:func:`shard_keys`)."""
    return sum(len(keys) for keys in shard_keys(urls) if keys is not None)


def rank_sample_counts(urls: list[str], world: int, workers: int) -> list[int] | None:
    """Samples each rank reads from evaluation shards (:meth:`ShardStream._split`'s partition); None where a shard
    cannot be read."""
    keys = shard_keys(urls)
    if any(k is None for k in keys):
        return None
    if len(urls) >= world:
        return [sum(len(k) for k in keys[r::world]) for r in range(world)]
    slots = [zlib.crc32(k.encode()) % (world * workers) // workers for shard in keys for k in shard]
    return [slots.count(r) for r in range(world)]


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
