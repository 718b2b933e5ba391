"""The wan1.3b configs: `--print_config` works for each, and each trains on 2 CPU processes (gloo) through its own
strategy (FSDP2, activation checkpointing, accumulation, bf16-mixed) on the real latent + text path, with only sizes
and paths overridden:

- data: `realcam data encode` output (Wan VAE latents + umT5 text of one prompt, made once per module from 5-frame
  32x32 synthetic clips: 2 latent frames of 4x4) read by the configs' own RealcamDataModule (OdePairDataModule for
  the ODE pairs, which `realcam data make-ode-pairs` makes from the same latent shards); training never runs the VAE
  or the text encoder;
- networks: the configs' own `realcam.pretrained.PretrainedWan`, loaded from a random tiny diffusers-layout Wan
  checkpoint (`realcam.tiny_wan.make_tiny_wan`: transformer, VAE, umT5 + tokenizer, text width 32), with text
  cross-attention on; only `pretrained` and `chunk_frames` (1: two latent frames make two chunks) are overridden;
- the codec: the configs' WanCodec on the same checkpoint (float32 on a CPU).

Every rank's final weights must be identical (the strategy syncs the gradients whichever samples each rank reads),
finite, and moved from where they started.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from realcam.cli import main as realcam
from tests.systems.conftest import make_shards
from tests.systems.test_student import REPO

pytestmark = pytest.mark.slow

CONFIGS = {"teacher": REPO / "configs" / "teacher" / "wan1.3b.yaml",
           "ode": REPO / "configs" / "student" / "wan1.3b_ode.yaml",
           "dmd": REPO / "configs" / "student" / "wan1.3b_dmd.yaml"}
LENGTH, SIZE = 5, 32        # 1 + 4 frames -> 2 latent frames of 4 x 4 (2 x 2 tokens with tiny-wan's patch)
PROMPT = "a camera moves over a city street"


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
def pretrained_args(role: str, wan: Path) -> list[str]:
    """Overrides of the config's PretrainedWan ``role``: the tiny checkpoint, and a chunk per latent frame."""
    at = f"--model.init_args.{role}.init_args"
    return [f"{at}.pretrained", str(wan), f"{at}.chunk_frames", "1"]


def data_args(train: Path, latents: Path) -> list[str]:
    """Overrides of the config's data module: ``train`` shards, evaluation on the encoded latents, no workers."""
    at = "--data.init_args"
    return [f"{at}.train_shards", str(train), f"{at}.val_shards", str(latents), f"{at}.test_shards", str(latents),
            f"{at}.num_workers", "0", f"{at}.image_size", f"[{SIZE}, {SIZE}]"]


def fit_two_processes(config: str, root: Path, wan: Path, *extra: str) -> dict[int, dict]:
    """`realcam fit --config CONFIG` on 2 CPU processes, its strategy and precision as configured, the codec from
    the tiny checkpoint ``wan``; every rank's final weights (tests.systems.ddp_data.SaveRankWeights) by rank."""
    cmd = [sys.executable, "-m", "realcam", "fit", "--config", str(CONFIGS[config]),
           "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.max_steps", "2",
           "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
           "--trainer.default_root_dir", str(root), "--model.init_args.codec.init_args.path", str(wan),
           "--model.init_args.codec.init_args.dtype", "float32",
           "--trainer.callbacks+=tests.systems.ddp_data.SaveRankWeights",
           "--trainer.callbacks.folder", str(root / "weights"), *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    errors = [line for line in done.stderr.splitlines() if "Error" in line]     # every rank's, not only the last
    assert done.returncode == 0, "\n".join(errors[-10:]) + done.stderr[-2000:]
    assert (root / "checkpoints" / "last.ckpt").is_file(), "a checkpoint of whole tensors"
    saved = [torch.load(root / "weights" / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # each rank reads its own samples: identical weights must come from the strategy's gradient sync
    assert saved[0]["keys"] and saved[0]["keys"] != saved[1]["keys"], [s["keys"] for s in saved]
    return {r: s["state"] for r, s in enumerate(saved)}


def assert_ranks_equal_and_trained(states: dict[int, dict], moved: dict[str, torch.Tensor]) -> None:
    for key, value in states[0].items():
        torch.testing.assert_close(value, states[1][key], rtol=0, atol=0, msg=f"ranks differ at {key}")
        if value.is_floating_point():
            assert torch.isfinite(value).all(), key
    for key, start in moved.items():
        assert not torch.equal(states[0][key], start), f"{key} did not train"


@pytest.fixture(scope="module")
def wan_latents(tiny_wan_dir, tmp_path_factory) -> Path:
    """`realcam data encode` output: 8 clips' VAE latents and the prompt's umT5 text, one shard."""
    root = tmp_path_factory.mktemp("wan_data")
    make_shards(root / "frames", "train", 8, length=LENGTH, size=SIZE)
    assert realcam(["data", "encode", str(root / "frames"), "--split", "train", "--out", str(root / "latents"),
                    "--vae", str(tiny_wan_dir), "--text-encoder", str(tiny_wan_dir), "--prompt", PROMPT,
                    "--quiet"]) == 0
    return root / "latents"


@pytest.fixture(scope="module")
def pretrained(tiny_wan_dir) -> dict[str, torch.Tensor]:
    """The tiny checkpoint's transformer weights, as realcam names them: where every run starts."""
    from realcam.pretrained import PretrainedWan

    return PretrainedWan(str(tiny_wan_dir)).state_dict()


@pytest.fixture(scope="module")
def teacher_run(wan_latents, tiny_wan_dir, tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("teacher_wan")
    states = fit_two_processes("teacher", root, tiny_wan_dir, *data_args(wan_latents, wan_latents),
                               f"--data.init_args.length_buckets=[{LENGTH}]",
                               *pretrained_args("denoiser", tiny_wan_dir),
                               "--trainer.accumulate_grad_batches", "2", "--model.init_args.warmup_steps", "1",
                               "--model.init_args.ema_start", "1")
    return root, states


def test_teacher_config_on_two_processes(teacher_run, pretrained):
    _, states = teacher_run
    # the text embedder trains: the prompt's umT5 states reach the loss through every block's cross-attention
    assert_ranks_equal_and_trained(states, {f"{net}.{key}": pretrained[key] for net in ("denoiser", "ema.module")
                                            for key in ("head.weight", "text_embed.0.weight")})


def test_ode_config_on_two_processes(teacher_run, wan_latents, tiny_wan_dir, tmp_path):
    teacher_root, _ = teacher_run
    teacher_ckpt = teacher_root / "checkpoints" / "last.ckpt"
    pairs = tmp_path / "ode"
    # the teacher's config (tiny checkpoint, codec) comes from its checkpoint; the pairs carry the latents' text
    assert realcam(["data", "make-ode-pairs", "--teacher", str(teacher_ckpt), "--shards", str(wan_latents),
                    "--out", str(pairs), "--steps", "2", "--num-samples", "4", "--batch-size", "2",
                    "--precision", "fp32", "--samples-per-shard", "2", "--quiet"]) == 0     # a shard per rank
    states = fit_two_processes("ode", tmp_path / "run", tiny_wan_dir, *data_args(pairs, wan_latents),
                               *pretrained_args("generator", tiny_wan_dir),
                               "--model.init_args.generator_init", str(teacher_ckpt),
                               "--trainer.accumulate_grad_batches", "2", "--model.init_args.ema_start", "1")
    teacher = torch.load(teacher_ckpt, weights_only=True)["state_dict"]
    assert_ranks_equal_and_trained(states, {f"generator.{key}": teacher[f"ema.module.{key}"]
                                            for key in ("head.weight", "text_embed.0.weight")})


def test_dmd_config_on_two_processes(teacher_run, wan_latents, tiny_wan_dir, tmp_path):
    """Generator and real score (and so the critic) from the 2-process teacher's EMA weights."""
    teacher_root, _ = teacher_run
    teacher_ckpt = teacher_root / "checkpoints" / "last.ckpt"
    states = fit_two_processes("dmd", tmp_path / "run", tiny_wan_dir,
                               *data_args(wan_latents, wan_latents), f"--data.init_args.length_buckets=[{LENGTH}]",
                               *pretrained_args("generator", tiny_wan_dir),
                               *pretrained_args("real_score", tiny_wan_dir),
                               "--model.init_args.generator_init", str(teacher_ckpt),
                               "--model.init_args.real_score_init", str(teacher_ckpt),
                               "--model.init_args.accumulate", "2", "--model.init_args.ema_start", "1")
    teacher = torch.load(teacher_ckpt, weights_only=True)["state_dict"]
    assert_ranks_equal_and_trained(states, {f"{net}.{key}": teacher[f"ema.module.{key}"]
                                            for net in ("generator", "critic")
                                            for key in ("head.weight", "text_embed.0.weight")})
