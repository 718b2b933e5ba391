"""scripts/make_tiny_wan.py: a seeded random tiny Wan2.1 folder that realcam's own loaders read as the pretrained
model (that realcam's Wan computes diffusers' Wan is tests/test_pretrained.py's job)."""
import hashlib
import importlib.util
from pathlib import Path

import pytest
import torch

from realcam import load_pretrained
from realcam.modules.backbone import PRESETS
from realcam.modules.cond import Cond
from realcam.pretrained import ARCHITECTURE_KEYS, architecture, key_table, read_checkpoint
from realcam.registry import BACKBONES
from realcam.tiny_wan import make_tiny_wan_transformer, make_tiny_wan_vae

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_tiny_wan.py"


def run_script(*args) -> int:
    spec = importlib.util.spec_from_file_location("make_tiny_wan", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([str(a) for a in args])


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny_wan") / "model"
    assert run_script(out) == 0
    return out


def test_the_folder_loads_as_the_tiny_wan_preset_with_the_makers_weights(tiny):
    model = load_pretrained(tiny)
    assert model.pretrained_report == {"layout": "diffusers", "missing": [], "unexpected": [], "camera": "init"}
    arch = architecture(*read_checkpoint(tiny))
    assert {k: v for k, v in arch.items() if k in PRESETS["tiny-wan"]} == \
        {k: v for k, v in PRESETS["tiny-wan"].items() if k in ARCHITECTURE_KEYS}
    made = make_tiny_wan_transformer(0).state_dict()
    loaded = model.state_dict()
    for ours in key_table(model.depth, "diffusers"):
        assert torch.equal(loaded[ours], made[ours]), ours
    by_name = BACKBONES.build("tiny-wan", pretrained=str(tiny), attention_mode="causal")
    assert by_name.text_dim == 32 and by_name.in_channels == 16 and by_name.chunk_frames == 1
    assert all(torch.equal(by_name.state_dict()[k], loaded[k]) for k in key_table(model.depth, "diffusers"))
    # every Wan tensor was drawn: the loaded model's flow is not the zero of a fresh realcam model
    x = torch.randn(1, 1, 16, 4, 4)
    cond = Cond(torch.randn_like(x), torch.eye(4).expand(1, 1, 4, 4), torch.eye(3).expand(1, 1, 3, 3), (32, 32),
                text=torch.randn(1, 5, 32))
    assert by_name(x, torch.full((1, 1), 0.5), cond).abs().mean() > 1e-3


def test_diffusers_and_the_wan_codec_and_the_text_encoder_read_it(tiny):
    from diffusers import WanTransformer3DModel
    from safetensors.torch import load_file

    from realcam.modules.text import UMT5TextEncoder
    from realcam.modules.wan_vae import WanCodec

    # diffusers' own class takes the config and every tensor, names and shapes (strict); from_pretrained would
    # need accelerate for the float32 modules Wan keeps
    wan = WanTransformer3DModel.from_config(WanTransformer3DModel.load_config(tiny / "transformer"))
    wan.load_state_dict(load_file(tiny / "transformer" / "diffusion_pytorch_model.safetensors"), strict=True)
    assert wan.config.text_dim == 32 and wan.config.in_channels == 16
    codec = WanCodec(str(tiny))
    assert all(torch.equal(a, b) for a, b in zip(codec.vae.state_dict().values(),
                                                  make_tiny_wan_vae(0).state_dict().values()))
    video = torch.rand(1, 5, 3, 16, 16) * 2 - 1
    assert codec.encode(video).shape == (1, 2, 16, 2, 2)
    text = UMT5TextEncoder(tiny)
    empty = text.encode([""])[0]
    assert text.dim == 32 and empty.shape == (1, 32) and empty.abs().mean() > 0.1   # umT5's "" is not zeros


def test_seeded_deterministic_and_never_overwrites(tiny, tmp_path, capsys):
    assert run_script(tmp_path / "again") == 0
    assert digests(tmp_path / "again") == digests(tiny)
    assert run_script(tmp_path / "other", "--seed", "1") == 0
    changed = {k for k, v in digests(tmp_path / "other").items() if digests(tiny)[k] != v}
    assert {"transformer/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
            "text_encoder/model.safetensors"} <= changed
    before = digests(tiny)
    assert run_script(tiny) == 2
    assert "already exists" in capsys.readouterr().err and digests(tiny) == before


def test_a_failure_halfway_leaves_nothing(tmp_path, monkeypatch):
    import realcam.tiny_wan as tiny_wan

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tiny_wan, "save_tiny_umt5", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        tiny_wan.make_tiny_wan(tmp_path / "model")
    assert list(tmp_path.iterdir()) == []
