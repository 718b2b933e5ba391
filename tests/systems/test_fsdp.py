"""FSDP through Lightning (which needs CUDA): the teacher and DMD train a few steps on one GPU, the EMA moves
with the weights, and the checkpoint (full state dict) loads back. Skipped without CUDA."""
from pathlib import Path

import pytest
import torch

from realcam.cli import main as realcam
from tests.systems.test_student import dmd_args, teacher_weights  # noqa: F401  (a fixture)
from tests.systems.test_teacher import tiny_args

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="Lightning's FSDP strategy needs CUDA")

FSDP = ["--trainer.accelerator", "gpu", "--trainer.devices", "1", "--trainer.strategy", "fsdp",
        "--trainer.max_steps", "3", "--trainer.limit_val_batches", "0"]


def _state(root: Path) -> dict[str, torch.Tensor]:
    return torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def test_teacher_under_fsdp(tiny_shards, tmp_path):
    assert realcam(["fit", *tiny_args(tiny_shards, tmp_path), *FSDP]) == 0
    state = _state(tmp_path)
    assert state["denoiser.head.weight"].abs().sum() > 0, "the zero-initialized head trained"
    assert state["ema.module.head.weight"].abs().sum() > 0, "the EMA followed"
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_dmd_under_fsdp(tiny_shards, teacher_weights, tmp_path):
    assert realcam(["fit", *dmd_args(tiny_shards, tmp_path, teacher_weights), *FSDP]) == 0
    state = _state(tmp_path)
    assert not torch.equal(state["generator.head.weight"], state["real_score.head.weight"])
    assert not torch.equal(state["critic.head.weight"], state["real_score.head.weight"])
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
