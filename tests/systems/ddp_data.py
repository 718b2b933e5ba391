"""Helpers the data-parallel tests load by class_path in their `realcam fit` processes.

:class:`FixedSamples` serves a fixed list of samples as a map-style dataset, so a DistributedSampler
(in order) splits each global batch over the ranks: N ranks at batch B see, step for step, the samples one process sees at
batch N x B. :class:`SaveRankWeights` writes every rank's final weights (Lightning checkpoints only rank 0's), the
sample keys of each step and the norm of every optimizer step's gradients after clipping.
"""
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, DistributedSampler

from realcam.data.datamodule import RealcamDataModule

TENSORS = ("source", "target", "source_c2w", "target_c2w", "source_K", "target_K", "revisit")


class FixedSamples(L.LightningDataModule):
    def __init__(self, shards: str, samples: int = 8, batch_size: int = 2, image_size: tuple[int, int] = (16, 16),
                 length: int = 4):
        super().__init__()
        source = RealcamDataModule(test_shards=shards, batch_size=1, num_workers=0, image_size=image_size,
                                   length_buckets=[length], log_corrupt=False)
        self.samples = []
        for batch in source.test_dataloader():
            self.samples.append({k: batch[k][0].float() if k in ("source", "target") else batch[k][0]
                                 for k in (*TENSORS, "key")})
            if len(self.samples) == samples:
                break
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        sampler = None      # in order: Lightning's own DistributedSampler would shuffle the training set
        if self.trainer is not None and self.trainer.world_size > 1:
            sampler = DistributedSampler(self.samples, self.trainer.world_size, self.trainer.global_rank, shuffle=False)
        return DataLoader(self.samples, batch_size=self.batch_size, sampler=sampler, collate_fn=_collate)


def _collate(samples: list[dict]) -> dict:
    return {**{k: torch.stack([s[k] for s in samples]) for k in TENSORS}, "key": [s["key"] for s in samples]}


class SaveRankWeights(L.Callback):
    def __init__(self, folder: str):
        self.folder = folder

        self.keys: list[list[str]] = []

    def on_train_start(self, trainer, pl_module) -> None:
        """Record the global norm of each optimizer's gradients right before it steps (after clipping)."""
        self.clipped: list[float] = []
        for opt in trainer.optimizers:
            opt.register_step_pre_hook(self._record_norm)

    def _record_norm(self, optimizer, args, kwargs) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads)
        self.clipped.append(float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.keys.append(list(batch["key"]))

    def on_train_end(self, trainer, pl_module) -> None:
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        # under FSDP2 a rank holds DTensor shards: gather every whole tensor (a collective, on every rank)
        state = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().cpu().clone()
                 for k, v in pl_module.state_dict().items()}
        torch.save({"state": state, "keys": self.keys, "clipped": self.clipped}, Path(self.folder) / f"rank{trainer.global_rank}.pt")
