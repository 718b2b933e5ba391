"""Sharded training.

* FSDP2 (``realcam.systems.sharding.FullyShardStrategy``, the wan1.3b configs' strategy) runs on CPU processes over
  gloo: 2 ranks stay identical and equal one process at the same global batch, for the teacher and for DMD, with
  activation checkpointing on and gradients clipped by their global norm (checked after clipping: a rank clipping
  its shard by the shard's own norm would leave the whole gradient at sqrt(2) times the limit).
* Lightning's ``FSDPStrategy`` (FSDP1) needs CUDA: the teacher and DMD train a few steps on one GPU, the EMA moves
  with the weights, and the checkpoint (full state dict) loads back. Skipped without CUDA.
"""
import json
from pathlib import Path

import pytest
import torch

from realcam.cli import main as realcam
from tests.systems.test_data_parallel import assert_data_parallel_equals_one_process, data_args, run
from tests.systems.test_student import NET, REPO, dmd_args, net_args, teacher_weights  # noqa: F401  (a fixture)
from tests.systems.test_teacher import CONFIG as TEACHER_CONFIG, tiny_args

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="Lightning's FSDP strategy needs CUDA")
FSDP2 = json.dumps({"class_path": "realcam.systems.sharding.FullyShardStrategy",
                    "init_args": {"activation_checkpointing": True}})
CLIP = 1e-3         # far below the tiny networks' gradient norms: every step clips


def clipped_norms(root: Path, devices: int) -> list[list[float]]:
    """Per rank, the global gradient norm at every optimizer step, after clipping (tests.systems.ddp_data)."""
    return [torch.load(root / "weights" / f"rank{r}.pt", weights_only=True)["clipped"] for r in range(devices)]


def assert_fsdp2_equals_one_process(args: list[str], tiny_shards: Path, tmp_path: Path, start: dict) -> None:
    """``start``: weights that must have moved, by name (None: they started at zero)."""
    single = run([*args, *data_args(tiny_shards, 4)], tmp_path / "one", 1)
    double = run([*args, *data_args(tiny_shards, 2)], tmp_path / "two", 2, FSDP2)
    start = {k: torch.zeros_like(single[0][0][k]) if v is None else v for k, v in start.items()}
    assert_data_parallel_equals_one_process(single, double, start)
    norms = clipped_norms(tmp_path / "one", 1) + clipped_norms(tmp_path / "two", 2)
    clipped = [n for n in norms[0] if n > 0]      # a zero-initialized head gives a first step without gradient
    assert clipped, "no optimizer step with a gradient was recorded"
    assert clipped == pytest.approx([CLIP] * len(clipped), rel=1e-3), "clipped to the global norm"
    for rank_norms in norms[1:]:
        assert rank_norms == pytest.approx(norms[0], rel=1e-3, abs=1e-9)


@pytest.mark.slow
def test_teacher_under_fsdp2_on_two_processes_equals_one(tiny_shards, tmp_path):
    args = ["--config", str(TEACHER_CONFIG), "--trainer.max_steps", "2",
            *[a for k, v in dict(dim=16, depth=2, heads=2, ffn_dim=32, freq_dim=16).items()
              for a in (f"--model.init_args.denoiser.init_args.{k}", str(v))],
            "--model.init_args.warmup_steps", "1", "--model.init_args.ema_start", "1",
            "--model.init_args.grad_clip", str(CLIP)]
    assert_fsdp2_equals_one_process(args, tiny_shards, tmp_path,     # the head starts at zero
                                    {"denoiser.head.weight": None, "ema.module.head.weight": None})


@pytest.mark.slow
def test_dmd_under_fsdp2_on_two_processes_equals_one(tiny_shards, teacher_weights, tmp_path):
    from safetensors.torch import load_file

    args = ["--config", str(REPO / "configs" / "student" / "tiny_dmd.yaml"), *net_args("generator"),
            *net_args("real_score"), "--model.init_args.generator_init", str(teacher_weights),
            "--model.init_args.real_score_init", str(teacher_weights), "--model.init_args.critic_ratio", "2",
            "--model.init_args.ema_start", "1", "--model.init_args.loop_weight", "0", "--trainer.max_steps", "3",
            "--model.init_args.grad_clip", str(CLIP)]
    head = load_file(str(teacher_weights))["head.weight"]
    assert_fsdp2_equals_one_process(args, tiny_shards, tmp_path,
                                    {f"{net}.head.weight": head for net in ("generator", "critic", "ema.module")})


@pytest.mark.slow
def test_dmd_validates_under_fsdp2(tiny_shards, teacher_weights, tmp_path):
    """Validation streams with the sharded EMA generator (a collective per pass), so every rank needs the same
    number of validation batches: 2 validation shards for 2 ranks (with one, the rank without a batch would leave
    the other waiting forever)."""
    import os
    import subprocess
    import sys

    from tests.systems.conftest import make_shards

    val = make_shards(tmp_path / "val", "val", 16)      # 2 shards of 8
    args = [a.replace(str(tiny_shards / "val-000000.tar"), str(val)) for a in
            dmd_args(tiny_shards, tmp_path / "run", teacher_weights, "--trainer.max_steps", "2",
                     "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1",
                     "--data.init_args.num_workers", "0", "--data.init_args.train_batches_per_epoch", "2")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "realcam", "fit", *args, "--trainer.accelerator", "cpu",
                           "--trainer.devices", "2", "--trainer.strategy", FSDP2], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "videos" / "val_step0000002").is_dir(), "validated after step 2"


# ---- FSDP1 through Lightning's FSDPStrategy: CUDA only ----------------------------------------------------------
FSDP = ["--trainer.accelerator", "gpu", "--trainer.devices", "1", "--trainer.strategy", "fsdp",
        "--trainer.max_steps", "3", "--trainer.limit_val_batches", "0"]


def _state(root: Path) -> dict[str, torch.Tensor]:
    return torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


@needs_cuda
def test_teacher_under_fsdp(tiny_shards, tmp_path):
    assert realcam(["fit", *tiny_args(tiny_shards, tmp_path), *FSDP]) == 0
    state = _state(tmp_path)
    assert state["denoiser.head.weight"].abs().sum() > 0, "the zero-initialized head trained"
    assert state["ema.module.head.weight"].abs().sum() > 0, "the EMA followed"
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@needs_cuda
def test_dmd_under_fsdp(tiny_shards, teacher_weights, tmp_path):
    assert realcam(["fit", *dmd_args(tiny_shards, tmp_path, teacher_weights), *FSDP]) == 0
    state = _state(tmp_path)
    assert not torch.equal(state["generator.head.weight"], state["real_score.head.weight"])
    assert not torch.equal(state["critic.head.weight"], state["real_score.head.weight"])
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
