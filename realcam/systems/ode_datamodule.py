"""Training batches of ODE pairs for :class:`~realcam.systems.student.OdeInitModule`.

Training reads ODE-pair shards (``realcam data make-ode-pairs``) with the same machinery as the LoopSequence
stream: random shard resampling, rank/worker partitioning, corrupt samples skipped and counted, and an epoch
draw keyed by the global step (exact resume). Validation and test read ordinary LoopSequence shards, because the
student is scored by rolling out on held-out scenes, like the teacher.
"""
from __future__ import annotations

from typing import Any

from torch.utils.data import DataLoader

from realcam.data.datamodule import RealcamDataModule, ShardStream, _EpochLoader, count_samples
from realcam.systems.ode_data import collate_ode_pairs, decode_ode_pair


class OdePairStream(ShardStream):
    """Batches of ODE pairs: dicts from :func:`~realcam.systems.ode_data.collate_ode_pairs`."""

    decode = staticmethod(decode_ode_pair)
    collate = staticmethod(collate_ode_pairs)

    @staticmethod
    def shape_key(sample: dict[str, Any]) -> tuple:
        return tuple(sample["states"].shape), tuple(sample["image_size"])

    def _prepare(self, key: str, sample: dict[str, Any], rng) -> dict[str, Any]:
        return sample            # latents are stored ready to use: no crops, no resizing


class OdePairDataModule(RealcamDataModule):
    """ODE pairs for ``fit``; LoopSequence shards for ``validate`` / ``test``.

    Args:
        train_shards: ODE-pair shards (a folder, glob or brace pattern) written by ``realcam data make-ode-pairs``.
        val_shards / test_shards, image_size, length_buckets: as :class:`RealcamDataModule` (evaluation only).
        The other arguments are :class:`RealcamDataModule`'s; image_size / max_zoom / length_buckets do not touch
        the ODE pairs, whose latents were made at the teacher's resolution.
    """

    def stream(self, split: str) -> ShardStream:
        if split != "train":
            return super().stream(split)
        urls = self.urls["train"]
        if urls is None:
            raise ValueError("train_shards is not set: pass the folder written by `realcam data make-ode-pairs`")
        rank, world = self._rank_world()
        stream = self._streams.get("train")
        if stream is None or (stream.rank, stream.world_size) != (rank, world):
            batches = self.train_batches_per_epoch or max(1, count_samples(urls) // (self.batch_size * world))
            stream = OdePairStream(urls, train=True, batch_size=self.batch_size, counter=self.corrupt["train"],
                                   batches_per_epoch=batches, shuffle_buffer=self.shuffle_buffer, seed=self.seed,
                                   rank=rank, world_size=world)
            self._streams["train"] = stream
        return stream

    def train_dataloader(self) -> DataLoader:
        epoch_fn = (lambda: self.trainer.global_step) if self.trainer is not None else None
        return _EpochLoader(self.stream("train"), batch_size=None, num_workers=self.num_workers,
                            persistent_workers=self.persistent_workers and self.num_workers > 0,
                            timeout=self.loader_timeout if self.num_workers > 0 else 0, epoch_fn=epoch_fn,
                            transform=lambda batch: batch)
