"""The wan1.3b configs: `--print_config` works for each, and each trains on 2 CPU processes (gloo) through its own
strategy (FSDP2, activation checkpointing, accumulation, bf16-mixed) with only sizes and paths overridden: the
tiny-wan backbone sizes, the tiny random Wan VAE (tests/conftest.py), 5-frame 32x32 clips (2 latent frames).

LATENT DATA PATH (issue #17 part B): these runs read frame shards and the teacher/students encode them with the
Wan VAE in training, since the DataModule on this branch does not yet read `realcam data encode` output, and the
networks have no text cross-attention (`prepare_batch` here passes no text). Once part B lands, point the data at
encoded shards (`realcam data encode`, tiny VAE and umT5) and load the networks through the configs' own
`realcam.pretrained.PretrainedWan` from a tiny random Wan checkpoint (`realcam.save_pretrained`).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from realcam.cli import main as realcam
from realcam.modules.backbone import PRESETS, CrossFrameDiT
from tests.modules.test_backbone import randomize
from tests.systems.conftest import make_shards
from tests.systems.test_student import REPO

pytestmark = pytest.mark.slow

CONFIGS = {"teacher": REPO / "configs" / "teacher" / "wan1.3b.yaml",
           "ode": REPO / "configs" / "student" / "wan1.3b_ode.yaml",
           "dmd": REPO / "configs" / "student" / "wan1.3b_dmd.yaml"}
# tiny-wan's sizes without text (see LATENT DATA PATH above); the rest of each network comes from its config
TINY = {k: v for k, v in PRESETS["tiny-wan"].items() if k not in ("text_dim", "chunk_frames")}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_print_config(name, capsys):
    with pytest.raises(SystemExit) as done:
        realcam(["fit", "--config", str(CONFIGS[name]), "--print_config"])
    assert done.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "realcam.systems.sharding.FullyShardStrategy" in printed and "bf16-mixed" in printed
    assert "shift: 5.0" in printed and "realcam.pretrained.PretrainedWan" in printed


def test_recipe_values():
    """The published recipe (Self Forcing on Wan2.1-1.3B) in the student configs."""
    import yaml

    for name in ("ode", "dmd"):
        model = yaml.safe_load(CONFIGS[name].read_text())["model"]["init_args"]
        assert model["denoising_steps"] == [1000, 750, 500, 250] and model["shift"] == 5.0
        assert model["betas"] == [0.0, 0.999] and model["weight_decay"] == 0.01 and model["grad_clip"] == 10.0
        assert model["ema_decay"] == 0.99 and model["generator"]["init_args"]["chunk_frames"] == 3
    dmd = yaml.safe_load(CONFIGS["dmd"].read_text())["model"]["init_args"]
    assert (dmd["generator_lr"], dmd["critic_lr"], dmd["critic_ratio"]) == (2e-6, 4e-7, 5)


# ---- 2 CPU processes through each config's strategy -------------------------------------------------------------
def network(attention_mode: str) -> str:
    init = {**TINY, "attention_mode": attention_mode, "chunk_frames": 1, "prediction": "flow"}
    if attention_mode == "causal":
        init.update(sink_chunks=1, window_chunks=2)
    return json.dumps({"class_path": "realcam.modules.backbone.CrossFrameDiT", "init_args": init})


def fit_two_processes(config: str, root: Path, shards: Path, vae: Path, *extra: str) -> dict[int, dict]:
    """`realcam fit --config CONFIG` on 2 CPU processes, its strategy and precision as configured; every rank's
    final weights (tests.systems.ddp_data.SaveRankWeights) by rank."""
    data = {"class_path": "tests.systems.ddp_data.FixedSamples",
            "init_args": {"shards": str(shards / "train-000000.tar"), "samples": 8, "batch_size": 1,
                          "image_size": [32, 32], "length": 5}}
    cmd = [sys.executable, "-m", "realcam", "fit", "--config", str(CONFIGS[config]), "--data", json.dumps(data),
           "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.max_steps", "2",
           "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
           "--trainer.default_root_dir", str(root), "--model.init_args.codec.init_args.path", str(vae),
           "--model.init_args.codec.init_args.dtype", "float32",
           "--trainer.callbacks+=tests.systems.ddp_data.SaveRankWeights",
           "--trainer.callbacks.folder", str(root / "weights"), *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    errors = [line for line in done.stderr.splitlines() if "Error" in line]     # every rank's, not only the last
    assert done.returncode == 0, "\n".join(errors[-10:]) + done.stderr[-2000:]
    assert (root / "checkpoints" / "last.ckpt").is_file(), "a checkpoint of whole tensors"
    return {r: torch.load(root / "weights" / f"rank{r}.pt", weights_only=True)["state"] for r in range(2)}


def assert_ranks_equal_and_trained(states: dict[int, dict], moved: dict[str, torch.Tensor | None]) -> None:
    for key, value in states[0].items():
        torch.testing.assert_close(value, states[1][key], rtol=0, atol=0, msg=f"ranks differ at {key}")
        if value.is_floating_point():
            assert torch.isfinite(value).all(), key
    for key, start in moved.items():
        before = torch.zeros_like(states[0][key]) if start is None else start
        assert not torch.equal(states[0][key], before), f"{key} did not train"


@pytest.fixture(scope="module")
def wan_shards(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("wan_shards"), "train", 8, length=5, size=32)


@pytest.fixture(scope="module")
def teacher_run(wan_shards, tiny_wan_vae_dir, tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("teacher_wan")
    states = fit_two_processes("teacher", root, wan_shards, tiny_wan_vae_dir,
                               "--model.init_args.denoiser", network("bidirectional"),
                               "--trainer.accumulate_grad_batches", "2", "--model.init_args.warmup_steps", "1",
                               "--model.init_args.ema_start", "1")
    return root, states


def test_teacher_config_on_two_processes(teacher_run):
    _, states = teacher_run
    assert_ranks_equal_and_trained(states, {"denoiser.head.weight": None, "ema.module.head.weight": None})


def test_ode_config_on_two_processes(teacher_run, wan_shards, tiny_wan_vae_dir, tmp_path):
    import yaml

    teacher_root, _ = teacher_run
    pairs, config = tmp_path / "ode", tmp_path / "teacher.yaml"
    resolved = yaml.safe_load((teacher_root / "config.yaml").read_text())     # the run's config, overrides included
    config.write_text(yaml.safe_dump({"model": resolved["model"]}))
    assert realcam(["data", "make-ode-pairs", "--teacher", str(teacher_root / "checkpoints" / "last.ckpt"),
                    "--config", str(config), "--image-size", "32,32", "--shards", str(wan_shards / "train-000000.tar"),
                    "--out", str(pairs), "--steps", "2", "--num-samples", "4", "--batch-size", "2",
                    "--precision", "fp32", "--samples-per-shard", "2", "--quiet"]) == 0     # a shard per rank
    # the ODE pairs carry their own conditions: OdePairDataModule instead of FixedSamples
    data = {"class_path": "realcam.systems.ode_datamodule.OdePairDataModule",
            "init_args": {"train_shards": str(pairs), "batch_size": 1, "num_workers": 0}}
    states = fit_two_processes("ode", tmp_path / "run", wan_shards, tiny_wan_vae_dir,
                               "--data", json.dumps(data), "--model.init_args.generator", network("causal"),
                               "--model.init_args.generator_init", str(teacher_root / "checkpoints" / "last.ckpt"),
                               "--trainer.accumulate_grad_batches", "2", "--model.init_args.ema_start", "1")
    teacher = torch.load(teacher_root / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert_ranks_equal_and_trained(states, {"generator.head.weight": teacher["ema.module.head.weight"]})


def test_dmd_config_on_two_processes(wan_shards, tiny_wan_vae_dir, tmp_path):
    from safetensors.torch import save_file

    net = randomize(CrossFrameDiT(**json.loads(network("bidirectional"))["init_args"]), seed=5)
    start = {k: v.detach().mul(0.1).contiguous() for k, v in net.state_dict().items()}
    save_file(start, str(tmp_path / "teacher.safetensors"))
    states = fit_two_processes("dmd", tmp_path / "run", wan_shards, tiny_wan_vae_dir,
                               "--model.init_args.generator", network("causal"),
                               "--model.init_args.real_score", network("bidirectional"),
                               "--model.init_args.generator_init", str(tmp_path / "teacher.safetensors"),
                               "--model.init_args.real_score_init", str(tmp_path / "teacher.safetensors"),
                               "--model.init_args.accumulate", "2", "--model.init_args.ema_start", "1")
    assert_ranks_equal_and_trained(states, {f"{n}.head.weight": start["head.weight"] for n in ("generator", "critic")})
