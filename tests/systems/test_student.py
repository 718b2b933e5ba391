"""The student through ``realcam fit/test``: ODE init and Self-Forcing DMD smoke runs, exact kill-and-resume."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from realcam.cli import main as realcam
from tests.systems.conftest import RESUME_ARGS
from realcam.modules.backbone import CrossFrameDiT
from realcam.modules.codecs import PixelCodec
from realcam.systems.student import SelfForcingDMDModule, loop_consistency_loss
from tests.modules.test_backbone import randomize

REPO = Path(__file__).resolve().parents[2]
NET = dict(dim=16, depth=1, heads=2, ffn_dim=32, freq_dim=16, reproject_depths=[2.0, 6.0],   # as the configs:
           reproject_space_to_depth=2, reproject_blend=True)                                   # reprojection + blend


def net_args(prefix: str) -> list[str]:
    return [a for k, v in NET.items() for a in (f"--model.init_args.{prefix}.init_args.{k}", str(v))]


def common(root: Path, shards: Path) -> list[str]:
    return ["--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
            "--trainer.precision", "32-true",
            "--data.init_args.val_shards", str(shards / "val-000000.tar"),
            "--data.init_args.test_shards", str(shards / "val-000000.tar"),
            "--data.init_args.image_size", "[16, 16]", "--data.init_args.batch_size", "2",
            "--data.init_args.num_workers", "0", "--model.init_args.ema_start", "1"]


@pytest.fixture(scope="module")
def teacher_weights(tmp_path_factory) -> Path:
    """A random bidirectional tiny network saved as bare safetensors (stands in for a trained teacher)."""
    net = randomize(CrossFrameDiT(in_channels=12, prediction="x0", **NET), seed=5)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.1)
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def dmd_args(shards: Path, root: Path, teacher: Path, *extra: str) -> list[str]:
    return ["--config", str(REPO / "configs" / "student" / "tiny_dmd.yaml"), *common(root, shards),
            *net_args("generator"), *net_args("real_score"),
            "--model.init_args.generator_init", str(teacher), "--model.init_args.real_score_init", str(teacher),
            "--model.init_args.critic_ratio", "2",
            "--data.init_args.train_shards", str(shards / "train-000000.tar"),
            "--data.init_args.length_buckets", "[4]", *extra]


@pytest.fixture(scope="module")
def ode_pairs(tiny_shards, teacher_weights, tmp_path_factory) -> Path:
    """ODE pairs of the stand-in teacher on the 8 training sequences, 4 per shard."""
    from realcam.modules.flow import FlowSchedule
    from realcam.systems.ode_data import write_ode_pairs
    from realcam.data.datamodule import RealcamDataModule
    from realcam.modules.codecs import PixelCodec
    from realcam.networks import load_network_weights

    teacher = load_network_weights(CrossFrameDiT(in_channels=12, prediction="x0", **NET), teacher_weights)
    dm = RealcamDataModule(test_shards=str(tiny_shards / "train-000000.tar"), batch_size=2, num_workers=0,
                           image_size=(16, 16), length_buckets=[4], log_corrupt=False)
    out = tmp_path_factory.mktemp("ode")
    write_ode_pairs(teacher, PixelCodec(2), dm.test_dataloader(), out, schedule=FlowSchedule(shift=3.0),
                    steps=4, pose_reference="current_source", samples_per_shard=4, progress=False)
    return out


def ode_args(shards: Path, root: Path, teacher: Path, pairs: Path, *extra: str) -> list[str]:
    return ["--config", str(REPO / "configs" / "student" / "tiny_ode.yaml"), *common(root, shards),
            *net_args("generator"), "--model.init_args.generator_init", str(teacher),
            "--data.init_args.train_shards", str(pairs), *extra]


def test_ode_init_then_dmd_then_test(tiny_shards, teacher_weights, ode_pairs, tmp_path):
    ode_root = tmp_path / "ode_run"
    realcam(["fit", *ode_args(tiny_shards, ode_root, teacher_weights, ode_pairs, "--trainer.max_steps", "2",
                              "--trainer.val_check_interval", "2")])
    ode_ckpt = next(ode_root.rglob("last.ckpt"))
    dmd_root = tmp_path / "dmd_run"
    realcam(["fit", *dmd_args(tiny_shards, dmd_root, teacher_weights, "--trainer.max_steps", "3",
                              "--trainer.val_check_interval", "3", "--model.init_args.loop_weight", "0.5"),
             "--model.init_args.generator_init", str(ode_ckpt)])
    ckpt = next(dmd_root.rglob("last.ckpt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["global_step"] == 3, "global_step counts DMD iterations (critic steps), not optimizer calls"
    assert int(state["state_dict"]["iteration"]) == 3
    from realcam.systems import OdeInitModule
    for system, path in ((OdeInitModule, ode_ckpt), (SelfForcingDMDModule, ckpt)):   # the checkpoint alone suffices
        loaded = system.load_from_checkpoint(path, map_location="cpu")
        saved = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        assert loaded.generator.dim == NET["dim"]
        for key, value in loaded.state_dict().items():
            torch.testing.assert_close(value, saved[key], rtol=0, atol=0, msg=f"{system.__name__} {key}")
    realcam(["test", *dmd_args(tiny_shards, dmd_root, teacher_weights), "--ckpt_path", str(ckpt)])
    report = next(dmd_root.rglob("test_report.json")).read_text()
    assert '"sampler": "causal_rollout"' in report and "baseline/source_copy/psnr" in report
    realcam(["predict", *dmd_args(tiny_shards, tmp_path / "predict", teacher_weights), "--ckpt_path", str(ckpt)])
    index = json.loads((dmd_root / "predict" / "last" / "predictions" / "index.json").read_text())   # under the run
    assert index["extra"]["sampler"] == "causal_rollout" and index["metrics"]["videos"] == 4
    assert all(r["frames"] == 4 and r["psnr"] > 5 for r in index["extra"]["videos"])


def test_ode_init_killed_mid_epoch_resumes_exactly(tiny_shards, teacher_weights, ode_pairs, tmp_path):
    """3 batches per epoch, killed at step 2: the resumable loader skips the batches the killed run trained on."""
    ckpts = [*RESUME_ARGS, "--data.init_args.train_batches_per_epoch", "3"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    realcam(["fit", *ode_args(tiny_shards, straight, teacher_weights, ode_pairs, "--trainer.max_steps", "4", *ckpts)])
    realcam(["fit", *ode_args(tiny_shards, killed, teacher_weights, ode_pairs, "--trainer.max_steps", "2", *ckpts)])
    resume = next(p for p in killed.rglob("*.ckpt") if "step=2" in p.name)
    realcam(["fit", *ode_args(tiny_shards, killed, teacher_weights, ode_pairs, "--trainer.max_steps", "4", *ckpts),
             "--ckpt_path", str(resume)])
    a = torch.load(next(p for p in straight.rglob("*.ckpt") if "step=4" in p.name), weights_only=True)
    b = torch.load(next(p for p in sorted(killed.rglob("*.ckpt")) if "step=4" in p.name), weights_only=True)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0, msg=key)


def test_dmd_killed_run_resumes_exactly(tiny_shards, teacher_weights, tmp_path):
    ckpts = [*RESUME_ARGS, "--data.init_args.train_batches_per_epoch", "3"]   # step 2 is mid-epoch
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    realcam(["fit", *dmd_args(tiny_shards, straight, teacher_weights, "--trainer.max_steps", "5", *ckpts)])
    realcam(["fit", *dmd_args(tiny_shards, killed, teacher_weights, "--trainer.max_steps", "3", *ckpts)])
    resume = next(p for p in killed.rglob("*.ckpt") if "step=2" in p.name)
    realcam(["fit", *dmd_args(tiny_shards, killed, teacher_weights, "--trainer.max_steps", "5", *ckpts),
             "--ckpt_path", str(resume)])
    # step 4 is reached after a generator update (iteration 4 with critic_ratio 2): every part moved
    a = torch.load(next(p for p in straight.rglob("*.ckpt") if "step=4" in p.name), weights_only=True)
    b = torch.load(next(p for p in sorted(killed.rglob("*.ckpt")) if "step=4" in p.name), weights_only=True)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for prefix in ("generator.", "critic.", "ema.module.", "real_score."):
        assert any(k.startswith(prefix) for k in a["state_dict"]), prefix
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0, msg=key)
    assert len(a["optimizer_states"]) == 2
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"]):
        for pid, st in opt_a["state"].items():
            for name, value in st.items():
                torch.testing.assert_close(value, opt_b["state"][pid][name], rtol=0, atol=0)
    first = torch.load(resume, weights_only=True)["state_dict"]
    assert not torch.equal(first["generator.head.weight"], a["state_dict"]["generator.head.weight"])
    assert not torch.equal(first["critic.head.weight"], a["state_dict"]["critic.head.weight"])


def test_loop_term_pulls_revisits_onto_their_earlier_frame():
    x = torch.randn(2, 4, 3, 2, 2, requires_grad=True)
    revisit = torch.tensor([[-1, -1, -1, 1], [-1, -1, -1, -1]])
    loss = loop_consistency_loss(x, revisit)
    torch.testing.assert_close(loss, (x[0, 3] - x[0, 1]).square().mean())
    loss.backward()
    assert x.grad[0, 3].abs().sum() > 0 and x.grad[0, 1].abs().sum() == 0, "the earlier frame is the anchor"
    assert loop_consistency_loss(x, torch.full((2, 4), -1)).item() == 0.0
    with pytest.raises(ValueError, match="revisit"):
        loop_consistency_loss(x, torch.full((2, 8), -1))


def test_networks_must_have_the_right_attention(teacher_weights):
    bidirectional = dict(in_channels=12, prediction="x0", **NET)
    causal = dict(bidirectional, attention_mode="causal")
    with pytest.raises(ValueError, match="generator must be causal"):
        SelfForcingDMDModule(generator=CrossFrameDiT(**bidirectional), real_score=CrossFrameDiT(**bidirectional))
    with pytest.raises(ValueError, match="real_score must be bidirectional"):
        SelfForcingDMDModule(generator=CrossFrameDiT(**causal), real_score=CrossFrameDiT(**causal), codec=PixelCodec(2))
    with pytest.raises(ValueError, match="real_score_init"):
        SelfForcingDMDModule(generator=CrossFrameDiT(**causal), real_score=CrossFrameDiT(in_channels=12, dim=32),
                             real_score_init=str(teacher_weights), codec=PixelCodec(2))
    with pytest.raises(ValueError, match="codec pixel gives 48 latent channels but generator in_channels=12: set "
                                         "generator.init_args.in_channels: 48"):
        SelfForcingDMDModule(generator=CrossFrameDiT(**causal), real_score=CrossFrameDiT(**bidirectional))
    with pytest.raises(ValueError, match="real_score has text_dim=8 but the generator has text_dim=None"):
        SelfForcingDMDModule(generator=CrossFrameDiT(**causal), real_score=CrossFrameDiT(**bidirectional, text_dim=8),
                             codec=PixelCodec(2))
    with pytest.raises(ValueError, match="registered backbone"):
        SelfForcingDMDModule(generator="tinyy")
