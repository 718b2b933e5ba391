"""Training batches of ODE pairs for :class:`~realcam.systems.student.OdeInitModule`.

Training reads ODE-pair shards (``realcam data make-ode-pairs``) with the same webdataset pipeline as the
LoopSequence stream: random shard resampling, rank/worker partitioning, corrupt samples skipped and counted, and
a resumable epoch draw keyed by the global step (exact resume, mid-epoch too). Validation and test read ordinary
LoopSequence shards, because the student is scored by rolling out on held-out scenes, like the teacher.
"""
from __future__ import annotations

from typing import Any

from torch.utils.data import DataLoader

from realcam.data.datamodule import RealcamDataModule
from realcam.data.stream import ShardStream
from realcam.systems.ode_data import collate_ode_pairs, decode_ode_pair


class OdePairStream(ShardStream):
    """Batches of ODE pairs: dicts from :func:`~realcam.systems.ode_data.collate_ode_pairs`."""

    decode = staticmethod(decode_ode_pair)
    collate = staticmethod(collate_ode_pairs)

    @staticmethod
    def shape_key(sample: dict[str, Any]) -> tuple:
        text = sample.get("text")
        return tuple(sample["states"].shape), tuple(sample["image_size"]), None if text is None else text.shape[-1]

    def _prepare(self, key: str, sample: dict[str, Any], rng) -> dict[str, Any]:
        return sample            # latents are stored ready to use: no crops, no resizing


class OdePairDataModule(RealcamDataModule):
    """ODE pairs for ``fit``; LoopSequence shards for ``validate`` / ``test``.

    Args:
        train_shards: ODE-pair shards (a folder, glob, brace pattern or any webdataset URL) written by
            ``realcam data make-ode-pairs``.
        val_shards / test_shards, image_size, length_buckets: as :class:`RealcamDataModule` (evaluation only).
        The other arguments are :class:`RealcamDataModule`'s; image_size / max_zoom / length_buckets do not touch
        the ODE pairs, whose latents were made at the teacher's resolution.
    """

    def make_stream(self, split: str, urls: list[str], batches: int | None, rank: int, world: int) -> ShardStream:
        if split != "train":
            return super().make_stream(split, urls, batches, rank, world)
        return OdePairStream(urls, train=True, batch_size=self.batch_size, counter=self.corrupt["train"],
                             batches_per_epoch=batches, shuffle_buffer=self.shuffle_buffer, seed=self.seed,
                             rank=rank, world_size=world)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", transform=lambda batch: batch)
