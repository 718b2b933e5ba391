"""Data parallelism through Lightning's DDP strategy, 2 CPU processes over gloo: the ranks stay identical and equal
one process at the same global batch (per-sample noise generators and mean losses make the two the same sums)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from realcam.cli import main as realcam
from tests.systems.test_student import NET, REPO, net_args
from tests.systems.test_teacher import CONFIG as TEACHER_CONFIG

pytestmark = pytest.mark.slow


def data_args(shards: Path, batch_size: int) -> list[str]:
    data = {"class_path": "tests.systems.ddp_data.FixedSamples",
            "init_args": {"shards": str(shards / "train-000000.tar"), "samples": 8, "batch_size": batch_size}}
    return ["--data", json.dumps(data)]


def run(args: list[str], root: Path, devices: int, strategy: str = "ddp"
        ) -> tuple[dict[int, dict[str, torch.Tensor]], list[list[str]]]:
    """`realcam fit` on ``devices`` CPU processes under ``strategy``: every rank's final weights by rank, and the
    sample keys of each global batch."""
    common = ["--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
              "--trainer.precision", "32-true", "--trainer.limit_val_batches", "0",
              "--trainer.callbacks+=tests.systems.ddp_data.SaveRankWeights",
              "--trainer.callbacks.folder", str(root / "weights")]
    if devices == 1:
        assert realcam(["fit", *args, *common]) == 0
    else:
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "realcam", "fit", *args, *common, "--trainer.accelerator", "cpu",
               "--trainer.devices", str(devices), "--trainer.strategy", strategy]
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    saved = {r: torch.load(root / "weights" / f"rank{r}.pt", weights_only=True) for r in range(devices)}
    steps = [sorted(k for s in saved.values() for k in s["keys"][i]) for i in range(len(saved[0]["keys"]))]
    return {r: s["state"] for r, s in saved.items()}, steps


def assert_data_parallel_equals_one_process(one, two, start: dict[str, torch.Tensor]):
    (single, single_steps), (double, double_steps) = one, two
    assert single_steps == double_steps, "the two runs must see the same global batches"
    assert double[0].keys() == double[1].keys() == single[0].keys()
    for key in double[0]:
        torch.testing.assert_close(double[0][key], double[1][key], rtol=0, atol=0, msg=f"ranks differ at {key}")
        torch.testing.assert_close(double[0][key], single[0][key], rtol=1e-4, atol=1e-6, msg=key)
    for key, value in start.items():      # the comparison means something only if these weights moved
        assert not torch.equal(single[0][key], value), f"{key} did not train"


def test_teacher_on_two_processes_equals_one(tiny_shards, tmp_path):
    args = ["--config", str(TEACHER_CONFIG), *data_args(tiny_shards, 0), "--trainer.max_steps", "2",
            *[a for k, v in dict(dim=16, depth=1, heads=2, ffn_dim=32, freq_dim=16).items()
              for a in (f"--model.init_args.denoiser.init_args.{k}", str(v))],
            "--model.init_args.warmup_steps", "1", "--model.init_args.ema_start", "1"]
    single = run([*args, *data_args(tiny_shards, 4)], tmp_path / "one", 1)
    double = run([*args, *data_args(tiny_shards, 2)], tmp_path / "two", 2)
    zero = torch.zeros_like(single[0][0]["denoiser.head.weight"])     # the head starts at zero
    assert_data_parallel_equals_one_process(single, double, {"denoiser.head.weight": zero, "ema.module.head.weight": zero})


def test_dmd_on_two_processes_equals_one(tiny_shards, tmp_path):
    """DMD under DDP used to crash on unused parameters (one reducer over generator and critic, a backward
    reaching one of them); each network now synchronizes its own gradients."""
    from safetensors.torch import save_file
    from realcam.modules.backbone import CrossFrameDiT
    from tests.modules.test_backbone import randomize

    teacher = tmp_path / "teacher.safetensors"
    net = randomize(CrossFrameDiT(in_channels=12, prediction="x0", **NET), seed=5)
    start = {k: v.detach().mul(0.1).contiguous() for k, v in net.state_dict().items()}
    save_file(start, str(teacher))
    args = ["--config", str(REPO / "configs" / "student" / "tiny_dmd.yaml"), *net_args("generator"),
            *net_args("real_score"), "--model.init_args.generator_init", str(teacher),
            "--model.init_args.real_score_init", str(teacher), "--model.init_args.critic_ratio", "2",
            "--model.init_args.ema_start", "1", "--model.init_args.loop_weight", "0", "--trainer.max_steps", "3"]
    single = run([*args, *data_args(tiny_shards, 4)], tmp_path / "one", 1)
    double = run([*args, *data_args(tiny_shards, 2)], tmp_path / "two", 2)
    assert_data_parallel_equals_one_process(single, double, {f"{net}.head.weight": start["head.weight"]
                                                            for net in ("generator", "critic", "ema.module")})
