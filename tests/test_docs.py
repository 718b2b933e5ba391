"""The Python examples in README.md and docs/ run as written (so the docs cannot drift from the code)."""
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from jsonargparse import ArgumentParser

from realcam.modules.backbone import CrossFrameDiT
from realcam.modules.cond import Cond

REPO = Path(__file__).resolve().parents[1]


def blocks(doc: str, lang: str = "python") -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", (REPO / doc).read_text(), re.S)


def test_readme_python_quick_start_streams_with_the_bundled_student(monkeypatch):
    monkeypatch.chdir(REPO)                          # the example loads realcam/assets/tiny_student
    scope: dict = {}
    exec(blocks("README.md")[0], scope)
    gen = scope["gen"]
    assert scope["out"].shape == (3, 32, 32) and gen.stats.frames == 32 and gen.stats.as_dict()["fps"] > 0


def test_extending_pose_encoder_from_the_docs_builds_from_its_yaml_and_trains(tmp_path, monkeypatch):
    """docs/extending.md's MyPoseEncoder, saved as my_package/encoders.py and selected by the YAML of the same
    page (class_path, no registration): the backbone builds, runs, and gradients reach the encoder."""
    encoder = next(b for b in blocks("docs/extending.md") if "def forward" in b)
    (tmp_path / "my_package").mkdir()
    (tmp_path / "my_package" / "__init__.py").write_text("")
    (tmp_path / "my_package" / "encoders.py").write_text(encoder)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        teacher_yaml = yaml.safe_load(blocks("docs/extending.md", "yaml")[0])
        denoiser = teacher_yaml["model"]["init_args"]["denoiser"]
        assert denoiser["class_path"] == "realcam.modules.backbone.CrossFrameDiT"
        parser = ArgumentParser()
        parser.add_class_arguments(CrossFrameDiT, "model")
        cfg = parser.parse_object({"model": {**denoiser["init_args"], "depth": 1, "in_channels": 12}})
        model = parser.instantiate(cfg).model
        assert type(model.camera_encoder).__module__ == "my_package.encoders"
        with torch.no_grad():           # as after some training: zero-initialized gates and head no longer zero
            for name, p in model.named_parameters():
                if not name.startswith("camera_encoder."):
                    p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.3)
        x = torch.randn(1, 2, 12, 4, 4)
        c2w = torch.eye(4).repeat(1, 2, 1, 1)
        c2w[0, 1, :3, 3] = torch.tensor([0.2, 0.0, 0.1])
        cond = Cond(torch.randn_like(x), c2w, torch.eye(3).repeat(1, 2, 1, 1), (16, 16))
        model(x, torch.rand(1, 2), cond).square().mean().backward()
        grads = [p.grad for p in model.camera_encoder.parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    finally:
        for name in ("my_package", "my_package.encoders"):
            sys.modules.pop(name, None)


def test_loopaug_example_revisits_as_its_comment_says():
    scope: dict = {}
    exec(blocks("docs/loopaug.md")[0], scope)
    revisit = scope["seq"].revisit
    assert list(revisit.items())[:2] == [(12, 10), (13, 9)] and list(revisit.items())[-2:] == [(22, 0), (23, 1)]


@pytest.mark.parametrize("frame_format", ["npy", "png", "mp4"])
def test_data_format_reader_reads_our_shards_with_plain_tar_and_numpy(tmp_path, frame_format):
    """docs/data.md's stand-alone reader (tar + numpy, no realcam) gives the loader's arrays."""
    from realcam.data.shards import read_shard
    from tests.systems.conftest import make_shards

    make_shards(tmp_path, "train", 3, frame_format=frame_format)
    shard = sorted(tmp_path.glob("*.tar"))[0]
    code = blocks("docs/data.md")[0]
    scope: dict = {}
    exec(code[:code.index("for key, s in read_shard(")], scope)
    plain = scope["read_shard"](shard)
    ours = dict(read_shard(shard))
    assert sorted(plain) == sorted(ours)
    for key, sample in plain.items():
        assert sample["source"].shape == (4, 16, 16, 3) and sample["source"].dtype == np.uint8
        np.testing.assert_array_equal(sample["target_c2w"], ours[key].target_c2w.numpy())
        np.testing.assert_array_equal(sample["source"], ours[key].source_frames.numpy())
        np.testing.assert_array_equal(sample["target"], ours[key].target_frames.numpy())
        assert {n: int(m) for n, m in enumerate(sample["revisit"]) if m >= 0} == ours[key].revisit


def test_extending_backbone_from_the_docs_passes_the_backbone_contract(monkeypatch):
    """docs/extending.md's SwiGLU backbone, registered as written, runs the contract tests every registered
    backbone runs (tests/modules/test_backbone_contract.py)."""
    from realcam.registry import BACKBONES
    from tests.modules import test_backbone_contract as contract

    source = next(b for b in blocks("docs/extending.md") if "dit_swiglu" in b)
    monkeypatch.setattr(BACKBONES, "_entries", dict(BACKBONES._entries))    # the registration stays local
    exec(source, {"__name__": "docs_swiglu"})
    model = BACKBONES.build("dit_swiglu", attention_mode="causal")
    assert type(model.blocks[0].ffn).__name__ == "SwiGLU"
    contract.test_follows_the_protocol_and_trains("dit_swiglu")
    contract.test_cached_chunks_equal_block_causal_forward("dit_swiglu", 2)
    contract.test_rolling_cache_equals_sink_window_forward_with_absolute_rope("dit_swiglu")
    contract.test_every_attention_backend_equals_math("dit_swiglu", "sdpa")
    contract.test_fused_cache_pass_equals_cache_pass_commit_then_forward("dit_swiglu", 1, 2, "window")


def test_ci_runs_the_readme_test_command_as_written():
    """README's set-up is two commands (env + install + demo; test extras + tests); .ci/run runs the second."""
    repo = Path(__file__).resolve().parents[1]
    setup = (repo / "README.md").read_text().split("## Setup (two commands)")[1].split("```bash")[1].split("```")[0]
    commands = [line.split("#")[0].strip() for line in setup.strip().splitlines()]
    assert len(commands) == 2 and commands[0].endswith("realcam demo") and "pip install -e ." in commands[0]
    assert commands[1] in (repo / ".ci" / "run").read_text().splitlines()
    import configparser
    setup_cfg = configparser.ConfigParser()
    setup_cfg.read(repo / "setup.cfg")
    assert any(r.startswith("tensorboard") for r in setup_cfg["options"]["install_requires"].split()), \
        "TensorBoard is installed by README's command 1, not only the test extras"
