"""Wan2.1 weights: realcam.load_pretrained against diffusers' WanTransformer3DModel on tiny random models
(every parameter randomized), the original key layout, saving back, the real size on meta, bad inputs."""
import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from realcam import load_pretrained, save_pretrained
from realcam.modules.cond import Cond
from realcam.pretrained import ORIGINAL_PREFIX, key_table
from realcam.registry import BACKBONES

diffusers = pytest.importorskip("diffusers")
WAN_CFG = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
               text_dim=16, freq_dim=32, ffn_dim=48, num_layers=2, cross_attn_norm=True,
               qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=64)
B, F, C, H, W = 1, 2, 4, 4, 6


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    """A tiny diffusers Wan with every parameter random (norms and modulation tables too), saved as a folder."""
    torch.manual_seed(0)
    model = diffusers.WanTransformer3DModel(**WAN_CFG).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    folder = tmp_path_factory.mktemp("wan") / "transformer"
    model.save_pretrained(folder)
    return model, folder


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    source, x = torch.randn(2, B, F, C, H, W, generator=g)
    sigma = torch.rand(B, F, generator=g)
    text = torch.randn(B, 7, WAN_CFG["text_dim"], generator=g)
    cond = Cond(source, torch.eye(4).expand(B, F, 4, 4), torch.eye(3).expand(B, F, 3, 3), (8 * H, 8 * W), text=text)
    return x, sigma, cond


def float64_sinusoid(module, t):
    """diffusers' timestep sinusoid computed in float64, as the original Wan code (and realcam) compute it;
    diffusers computes it in float32, which alone moves these outputs by up to ~7e-5."""
    half = module.num_channels // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / (half - module.downscale_freq_shift))
    angles = t.double()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=-1).float()     # flip_sin_to_cos: cos first


def diffusers_flow(model, frames, sigma_per_frame, text, times=None, wan_sinusoid=True):
    """diffusers on frames [B, T, C, H, W] with one timestep per frame (per token), optionally the RoPE time index
    of every frame (default 0..T-1), the timestep sinusoid in float64 as Wan computes it (default)."""
    T, n = frames.shape[1], (H // 2) * (W // 2)
    timesteps = model.condition_embedder.timesteps_proj
    if wan_sinusoid:
        timesteps.forward = lambda t: float64_sinusoid(timesteps, t)
    if times is not None:
        rope = model.rope
        split = [rope.t_dim, rope.h_dim, rope.w_dim]

        def tables(freqs):
            f, h, w = freqs.split(split, dim=1)
            idx = torch.tensor(times)
            parts = [f[idx].view(T, 1, 1, -1).expand(T, H // 2, W // 2, -1),
                     h[:H // 2].view(1, H // 2, 1, -1).expand(T, H // 2, W // 2, -1),
                     w[:W // 2].view(1, 1, W // 2, -1).expand(T, H // 2, W // 2, -1)]
            return torch.cat(parts, dim=-1).reshape(1, T * n, 1, -1)

        rope.forward = lambda hidden: (tables(rope.freqs_cos), tables(rope.freqs_sin))
    try:
        timestep = (1000 * sigma_per_frame).repeat_interleave(n, dim=1)
        out = model(frames.permute(0, 2, 1, 3, 4), timestep, text, return_dict=False)[0]
    finally:
        model.rope.__dict__.pop("forward", None)
        timesteps.__dict__.pop("forward", None)
    return out.permute(0, 2, 1, 3, 4)


def test_prefix_layout_equals_diffusers(wan):
    dm, folder = wan
    model = load_pretrained(folder, layout="prefix").eval()
    x, sigma, cond = inputs()
    with torch.no_grad():
        ours = model(x, sigma, cond)
        theirs = diffusers_flow(dm, torch.cat([cond.source, x], 1), torch.cat([torch.zeros_like(sigma), sigma], 1),
                                cond.text)[:, F:]
        other = model(x, sigma, Cond(**{**cond.__dict__, "text": torch.randn_like(cond.text)}))
        float32_sinusoid = diffusers_flow(dm, torch.cat([cond.source, x], 1),
                                          torch.cat([torch.zeros_like(sigma), sigma], 1), cond.text,
                                          wan_sinusoid=False)[:, F:]
    assert (ours - theirs).abs().max() <= 1e-5
    assert (ours - float32_sinusoid).abs().max() <= 2e-4        # diffusers as shipped: its float32 sinusoid
    assert (other - ours).abs().max() > 1e-2, "the text must change the output"


def test_interleaved_layout_equals_diffusers_with_shared_times(wan):
    dm, folder = wan
    model = load_pretrained(folder, layout="interleaved", chunk_frames=1).eval()
    x, sigma, cond = inputs(1)
    frames = torch.stack([cond.source, x], dim=2).flatten(1, 2)                 # [S0, Y0, S1, Y1]
    per_frame = torch.stack([torch.zeros_like(sigma), sigma], dim=2).flatten(1)
    with torch.no_grad():
        ours = model(x, sigma, cond)
        theirs = diffusers_flow(dm, frames, per_frame, cond.text, times=[0, 0, 1, 1])[:, 1::2]
    assert (ours - theirs).abs().max() <= 1e-5


def test_original_layout_loads_the_same_tensors_and_saves_back(wan, tmp_path):
    dm, folder = wan
    ref = load_pretrained(folder)
    diffusers_state = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    to_diff, to_orig = key_table(2, "diffusers"), key_table(2, "original")
    original = {ORIGINAL_PREFIX + to_orig[k]: diffusers_state[to_diff[k]] for k in to_diff}
    (tmp_path / "orig").mkdir()
    save_file(original, str(tmp_path / "orig" / "wan.safetensors"))
    torch.save({k[len(ORIGINAL_PREFIX):]: v for k, v in original.items()}, tmp_path / "orig" / "wan.pth")
    (tmp_path / "orig" / "config.json").write_text(json.dumps({"dim": 24, "num_heads": 2, "eps": 1e-6}))
    for file in ("wan.safetensors", "wan.pth"):
        loaded = load_pretrained(tmp_path / "orig" / file)
        assert loaded.pretrained_report["layout"] == "original"
        for key in to_diff:                     # every Wan tensor (realcam's own parts start fresh)
            assert torch.equal(loaded.state_dict()[key], ref.state_dict()[key]), (file, key)
    out = save_pretrained(ref, tmp_path / "back")
    saved = load_file(str(out / "diffusion_pytorch_model.safetensors"))
    assert saved.keys() == diffusers_state.keys()
    assert all(torch.equal(saved[k], diffusers_state[k]) for k in saved)
    config = {k: v for k, v in json.loads((out / "config.json").read_text()).items() if not k.startswith("_")}
    again = diffusers.WanTransformer3DModel(**config)                     # diffusers takes the config and,
    again.load_state_dict(saved, strict=True)                             # strictly, every tensor
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), dm.state_dict().values()))


def test_real_size_on_meta_counts_wan_parameters_plus_realcams():
    with torch.device("meta"):
        model = BACKBONES.build("wan2.1-t2v-1.3b")
        big = BACKBONES.build("wan2.1-t2v-14b")
    parts: dict[str, int] = {}
    for name, p in model.named_parameters():
        part = name.split(".")[0]
        parts[part] = parts.get(part, 0) + p.numel()
    realcam_only = parts.pop("stream_embed") + parts.pop("camera_encoder")
    assert sum(parts.values()) == 1_418_996_800, parts
    assert 0 < realcam_only < 3_000_000
    assert sum(p.numel() for p in big.parameters()) > 14e9
    assert model.text_dim == 4096 and model.fp32_modulation and model.chunk_frames == 3
    with torch.device("meta"):      # ReCamMaster's injection: 30 x (Linear(12 -> 1536) + Linear(1536 -> 1536))
        recam = BACKBONES.build("wan2.1-t2v-1.3b", camera_encoder="recammaster").camera_encoder
    assert sum(p.numel() for p in recam.parameters()) == 71_424_000 == 30 * (12 * 1536 + 1536 + 1536 * 1536 + 1536)


def test_bf16_autocast_keeps_modulation_and_time_path_in_float32():
    model = BACKBONES.build("tiny-wan").eval()
    x = torch.randn(1, 1, 16, 4, 4)
    cond = Cond(torch.randn_like(x), torch.eye(4).expand(1, 1, 4, 4), torch.eye(3).expand(1, 1, 3, 3), (32, 32),
                text=torch.randn(1, 5, 32))
    seen = []
    model.blocks[0].register_forward_hook(lambda m, args, out: seen.append((args[1][0].dtype, out.dtype)))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(x, torch.rand(1, 1), cond)
    assert seen == [(torch.float32, torch.float32)], "modulation and the residual stream stay float32 under bf16"


def test_bad_inputs_name_the_file_or_key_and_the_fix(wan, tmp_path):
    _, folder = wan
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a Wan checkpoint"):
        load_pretrained(tmp_path / "empty")
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="holds no Wan transformer weights"):
        load_pretrained(tmp_path / "other.safetensors")
    data = (folder / "diffusion_pytorch_model.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_pretrained(tmp_path / "cut.safetensors")
    state = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    state["blocks.1.attn2.to_k.weight"] = torch.zeros(24, 20)
    (tmp_path / "bad").mkdir()
    save_file(state, str(tmp_path / "bad" / "diffusion_pytorch_model.safetensors"))
    (tmp_path / "bad" / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(ValueError, match=r"blocks.1.attn2.to_k.weight.*\(24, 20\).*\(24, 24\)"):
        load_pretrained(tmp_path / "bad")
    with pytest.raises(ValueError, match="architecture comes from the checkpoint"):
        load_pretrained(folder, dim=32)
    model = load_pretrained(folder, chunk_frames=1)
    x, sigma, cond = inputs()
    with pytest.raises(ValueError, match="text_dim=16: cond.text must hold"):
        model(x, sigma, Cond(cond.source, cond.target_c2w, cond.target_K, cond.image_size))


def test_a_wan_preset_loads_pretrained_weights_by_name(wan):
    """The registry route YAML takes (``generator: tiny-wan``, ``generator_args: {pretrained: PATH}``): the
    architecture comes from the checkpoint, the preset's realcam options stay."""
    _, folder = wan
    model = BACKBONES.build("tiny-wan", pretrained=str(folder), attention_mode="causal")
    ref = load_pretrained(folder)
    assert model.attention_mode == "causal" and model.chunk_frames == 1 and model.dim == 24
    assert all(torch.equal(model.state_dict()[k], ref.state_dict()[k]) for k in key_table(2, "diffusers"))


# ---- ReCamMaster's camera injection (camera_encoder: recammaster) ------------------------------------------------
def camera_inputs(seed=2):
    """inputs() with non-identity target cameras (rotation and translation per frame)."""
    x, sigma, cond = inputs(seed)
    g = torch.Generator().manual_seed(seed)
    c2w = torch.eye(4).repeat(B, F, 1, 1)
    angle = torch.rand(B, F, generator=g)
    c2w[..., 0, 0], c2w[..., 0, 2], c2w[..., 2, 0], c2w[..., 2, 2] = angle.cos(), angle.sin(), -angle.sin(), angle.cos()
    c2w[..., :3, 3] = torch.randn(B, F, 3, generator=g)
    return x, sigma, Cond(cond.source, c2w, cond.target_K, cond.image_size, text=cond.text)


def recammaster_file(dm, folder, tmp_path, prefix=""):
    """The diffusers Wan's tensors plus random ReCamMaster camera tensors (``blocks.N.cam_encoder`` [dim, 12],
    ``blocks.N.projector`` [dim, dim]), as one safetensors file with the config beside it."""
    g = torch.Generator().manual_seed(5)
    dim = WAN_CFG["num_attention_heads"] * WAN_CFG["attention_head_dim"]
    state = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    for i in range(WAN_CFG["num_layers"]):
        state[f"blocks.{i}.cam_encoder.weight"] = torch.randn(dim, 12, generator=g) * 0.3
        state[f"blocks.{i}.cam_encoder.bias"] = torch.randn(dim, generator=g) * 0.3
        state[f"blocks.{i}.projector.weight"] = torch.eye(dim) + torch.randn(dim, dim, generator=g) * 0.3
        state[f"blocks.{i}.projector.bias"] = torch.randn(dim, generator=g) * 0.3
    (tmp_path / "recam").mkdir()
    save_file({prefix + k: v for k, v in state.items()}, str(tmp_path / "recam" / "model.safetensors"))
    (tmp_path / "recam" / "config.json").write_text((folder / "config.json").read_text())
    return tmp_path / "recam" / "model.safetensors", state


def recammaster_diffusers_flow(dm, state, x, sigma, cond):
    """ReCamMaster's block written onto diffusers' Wan with hooks: per block the camera embedding of the flattened
    3x4 pose (identity for the source frames) added to attn1's input, the projector on attn1's output."""
    n = (H // 2) * (W // 2)
    eye = torch.eye(4).expand_as(cond.target_c2w)
    poses = torch.cat([eye, cond.target_c2w], 1)[..., :3, :4].flatten(-2)           # [B, 2F, 12]: [S..., Y...]
    hooks = []
    for i, block in enumerate(dm.blocks):
        emb = (poses @ state[f"blocks.{i}.cam_encoder.weight"].T + state[f"blocks.{i}.cam_encoder.bias"])
        emb = emb.repeat_interleave(n, dim=1)                                        # every token of its frame
        w, b = state[f"blocks.{i}.projector.weight"], state[f"blocks.{i}.projector.bias"]
        hooks.append(block.attn1.register_forward_pre_hook(lambda m, args, e=emb: (args[0] + e, *args[1:])))
        hooks.append(block.attn1.register_forward_hook(lambda m, args, out, w=w, b=b: out @ w.T + b))
    try:
        return diffusers_flow(dm, torch.cat([cond.source, x], 1), torch.cat([torch.zeros_like(sigma), sigma], 1),
                              cond.text)[:, F:]
    finally:
        for hook in hooks:
            hook.remove()


def test_recammaster_encoder_at_init_is_plain_wan_and_the_camera_acts_once_perturbed(wan):
    dm, folder = wan
    model = load_pretrained(folder, layout="prefix", camera_encoder="recammaster").eval()
    assert model.pretrained_report["camera"] == "init"
    x, sigma, cond = camera_inputs()
    with torch.no_grad():
        ours = model(x, sigma, cond)
        theirs = diffusers_flow(dm, torch.cat([cond.source, x], 1), torch.cat([torch.zeros_like(sigma), sigma], 1),
                                cond.text)[:, F:]
        assert (ours - theirs).abs().max() <= 1e-5
        for p in model.camera_encoder.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        moved = model(x, sigma, cond)
        other = model(x, sigma, Cond(cond.source, cond.target_c2w.flip(1), cond.target_K, cond.image_size,
                                     text=cond.text))
    assert (moved - ours).abs().max() > 1e-2 and (other - moved).abs().max() > 1e-2, "the camera must act"


@pytest.mark.parametrize("prefix", ["", ORIGINAL_PREFIX])
def test_recammaster_checkpoint_loads_its_camera_tensors_and_computes_recammaster(wan, tmp_path, prefix):
    dm, folder = wan
    file, state = recammaster_file(dm, folder, tmp_path, prefix)
    model = load_pretrained(file, layout="prefix", camera_encoder="recammaster").eval()
    assert model.pretrained_report["camera"] == "recammaster" and model.pretrained_report["unexpected"] == []
    enc = model.camera_encoder
    for i in range(WAN_CFG["num_layers"]):
        for part in ("cam_encoder", "projector"):
            for t in ("weight", "bias"):
                assert torch.equal(getattr(getattr(enc, part)[i], t), state[f"blocks.{i}.{part}.{t}"])
    x, sigma, cond = camera_inputs()
    with torch.no_grad():
        ours = model(x, sigma, cond)
        theirs = recammaster_diffusers_flow(dm, state, x, sigma, cond)
        plain = diffusers_flow(dm, torch.cat([cond.source, x], 1), torch.cat([torch.zeros_like(sigma), sigma], 1),
                               cond.text)[:, F:]
    assert (ours - theirs).abs().max() <= 1e-5
    assert (ours - plain).abs().max() > 1e-2, "the loaded camera tensors must act"
    # another encoder leaves ReCamMaster's tensors unread (reported, skipped)
    plucker = load_pretrained(file, layout="prefix")
    assert "blocks.0.cam_encoder.weight" in plucker.pretrained_report["unexpected"]


def test_recammaster_checkpoint_with_some_blocks_missing_is_an_error(wan, tmp_path):
    dm, folder = wan
    file, state = recammaster_file(dm, folder, tmp_path)
    save_file({k: v for k, v in state.items() if not k.startswith("blocks.1.projector")}, str(file))
    with pytest.raises(ValueError, match=r"ReCamMaster camera tensors for some blocks but lacks \['blocks.1.projector"):
        load_pretrained(file, camera_encoder="recammaster")
    with pytest.raises(ValueError, match="camera_encoder.depth=3 does not match the backbone depth=2"):
        from realcam.modules.camera import ReCamMasterEncoder
        load_pretrained(folder, camera_encoder=ReCamMasterEncoder(24, depth=3))


# ---- YAML: a Wan backbone by class_path (realcam.pretrained.PretrainedWan, init_args.pretrained) ------------------
def test_yaml_class_path_with_pretrained_builds_the_system_with_the_checkpoints_weights(wan, tmp_path, capsys,
                                                                                       monkeypatch):
    """``realcam fit --print_config`` accepts the teacher's ``denoiser`` as ``class_path: realcam.pretrained.
    PretrainedWan`` with ``init_args.pretrained``, and the printed config instantiates (jsonargparse) to a system
    whose network holds the checkpoint's tensors."""
    import yaml
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningModule

    from realcam.cli import main as realcam_main
    from tests.systems.test_teacher import CONFIG, REPO

    _, folder = wan
    config = yaml.safe_load(CONFIG.read_text())
    config["model"]["init_args"]["denoiser"] = {
        "class_path": "realcam.pretrained.PretrainedWan",
        "init_args": {"pretrained": str(folder), "attention_mode": "bidirectional", "chunk_frames": 1,
                      "camera_encoder": "recammaster"}}
    # a codec with the tiny Wan's 4 latent channels (a system refuses a codec/denoiser channel mismatch)
    config["model"]["init_args"]["codec"] = {"class_path": "realcam.modules.codecs.PixelCodec",
                                             "init_args": {"factor": 1, "channels": 4}}
    (tmp_path / "wan.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(REPO)
    try:
        realcam_main(["fit", "--config", str(tmp_path / "wan.yaml"), "--print_config"])
    except SystemExit as err:
        assert err.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    denoiser = printed["model"]["init_args"]["denoiser"]
    assert denoiser["class_path"] == "realcam.pretrained.PretrainedWan"
    assert denoiser["init_args"]["pretrained"] == str(folder)

    parser = ArgumentParser()
    parser.add_argument("--model", type=LightningModule)
    system = parser.instantiate(parser.parse_object({"model": printed["model"]})).model
    net, ref = system.denoiser, load_pretrained(folder, chunk_frames=1, camera_encoder="recammaster")
    assert type(net).__name__ == "PretrainedWan" and net.chunk_frames == 1 and net.pretrained_report["layout"]
    assert type(net.camera_encoder).__name__ == "ReCamMasterEncoder" and net.dim == 24
    state = net.state_dict()
    assert all(torch.equal(state[k], ref.state_dict()[k]) for k in key_table(2, "diffusers"))
    assert not any(p.is_meta for p in net.parameters()) and not any(b.is_meta for b in net.buffers())
    x, sigma, cond = inputs()
    with torch.no_grad():
        torch.testing.assert_close(net(x, sigma, cond), ref(x, sigma, cond))


def test_pretrained_wan_class_rejects_architecture_it_cannot_take(wan):
    from realcam.pretrained import PretrainedWan

    _, folder = wan
    with pytest.raises(TypeError, match="dim"):
        PretrainedWan(str(folder), dim=64)
