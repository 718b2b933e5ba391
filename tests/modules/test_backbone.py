"""Backbone contract tests and the cache equivalences the streaming student relies on."""
import pytest
import torch

from realcam.modules.backbone import PRESETS, CrossFrameDiT
from realcam.modules.cond import Cond
from realcam.registry import BACKBONES

TINY = dict(in_channels=12, dim=24, depth=2, heads=2, ffn_dim=48, patch=(1, 2, 2), freq_dim=32)


def make_inputs(B=2, F=6, C=12, h=4, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, F, C, h, w, generator=g)
    source = torch.randn(B, F, C, h, w, generator=g)
    c2w = torch.eye(4).repeat(B, F, 1, 1)
    c2w[..., :3, 3] = torch.randn(B, F, 3, generator=g) * 0.2
    K = torch.tensor([[10.0, 0, 12], [0, 10.0, 8], [0, 0, 1]]).repeat(B, F, 1, 1)
    sigma = torch.rand(B, F, generator=g)
    return x, sigma, Cond(source=source, target_c2w=c2w, target_K=K, image_size=(16, 24))


def randomize(model: torch.nn.Module, seed=1):
    """Zero-initialized heads and gates would make every output 0; give all weights random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def test_zero_init_outputs_zero_flow():
    x, sigma, cond = make_inputs()
    model = CrossFrameDiT(**TINY)
    assert torch.count_nonzero(model(x, sigma, cond)) == 0


def test_x0_prediction_returns_the_flow_of_its_clean_estimate():
    """prediction='x0' keeps the denoiser protocol: x - sigma * flow recovers the head's x0 estimate."""
    from realcam.modules.flow import x0_from_flow

    x, sigma, cond = make_inputs()
    sigma = sigma.clamp(min=0.1)
    model = CrossFrameDiT(**TINY, prediction="x0")
    flow = model(x, sigma, cond)   # zero-initialized head: x0 estimate is 0, so flow = x / sigma
    torch.testing.assert_close(flow, x / sigma[..., None, None, None])
    torch.testing.assert_close(x0_from_flow(x, flow, sigma), torch.zeros_like(x), atol=1e-5, rtol=0)
    randomize(model)
    x0_a = x0_from_flow(x, model(x, sigma, cond), sigma)
    x0_b = x0_from_flow(x * 0 + 1, model(x * 0 + 1, sigma, cond), sigma)
    assert not torch.allclose(x0_a, x0_b)


@pytest.mark.parametrize("layout", ["interleaved", "prefix"])
@pytest.mark.parametrize("camera_encoder", ["plucker", "extrinsics_mlp"])
def test_forward_backward_shapes(layout, camera_encoder):
    x, sigma, cond = make_inputs()
    model = randomize(CrossFrameDiT(**TINY, layout=layout, camera_encoder=camera_encoder))
    flow = model(x, sigma, cond)
    assert flow.shape == x.shape and torch.isfinite(flow).all()
    flow.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"


def test_interleaved_layout_pairs_source_and_target_per_chunk():
    model = CrossFrameDiT(**TINY, chunk_frames=2)
    order, times = model.group_order(4)
    # groups index [S0..S3, Y0..Y3]; chunk i = [S_2i, S_2i+1 | Y_2i, Y_2i+1], a pair shares its time
    assert order.tolist() == [0, 1, 4, 5, 2, 3, 6, 7]
    assert times.tolist() == [0, 1, 0, 1, 2, 3, 2, 3]
    prefix = CrossFrameDiT(**TINY, layout="prefix")
    order, times = prefix.group_order(3)
    assert order.tolist() == [0, 1, 2, 3, 4, 5] and times.tolist() == [0, 1, 2, 3, 4, 5]


def test_target_depends_on_source_and_camera():
    x, sigma, cond = make_inputs()
    model = randomize(CrossFrameDiT(**TINY)).eval()
    base = model(x, sigma, cond)
    moved = Cond(cond.source, cond.target_c2w.clone(), cond.target_K, cond.image_size)
    moved.target_c2w[..., 0, 3] += 1.0
    assert not torch.allclose(base, model(x, sigma, moved))
    assert not torch.allclose(base, model(x, sigma, Cond(cond.source * 0, cond.target_c2w, cond.target_K, cond.image_size)))
    dropped = model(x, sigma, cond.without_camera())
    assert not torch.allclose(base, dropped)


def test_bidirectional_sees_the_future_causal_does_not():
    x, sigma, cond = make_inputs(F=4)
    x2 = x.clone()
    x2[:, 3] += 1.0
    for mode, changes_past in (("bidirectional", True), ("causal", False)):
        model = randomize(CrossFrameDiT(**TINY, attention_mode=mode)).eval()
        a, b = model(x, sigma, cond), model(x2, sigma, cond)
        assert torch.allclose(a[:, :3], b[:, :3], atol=1e-6) != changes_past, mode


def test_length_agnostic_interleaved():
    model = randomize(CrossFrameDiT(**TINY)).eval()
    for F in (2, 5, 11):
        x, sigma, cond = make_inputs(F=F)
        assert model(x, sigma, cond).shape == x.shape


def test_bad_inputs_are_named():
    model = CrossFrameDiT(**TINY)
    x, sigma, cond = make_inputs()
    with pytest.raises(ValueError, match="expects in_channels=12"):
        model(x[:, :, :6], sigma, cond)
    with pytest.raises(ValueError, match="layout='prefix'.*bidirectional"):
        CrossFrameDiT(**TINY, layout="prefix", attention_mode="causal")
    with pytest.raises(ValueError, match="camera_encoder.dim=8 does not match the backbone dim=24"):
        from realcam.registry import CAMERA_ENCODERS
        CrossFrameDiT(**TINY, camera_encoder=CAMERA_ENCODERS.build("plucker", dim=8))
    with pytest.raises(ValueError, match="bidirectional model sees the future"):
        model.new_cache()


# ---- KV cache equivalences ----------------------------------------------------------------------


def stream(model, x, sigma, cond, cache):
    """Chunk by chunk: forward the chunk, then commit its K/V (as the sigma=0 pass does in inference)."""
    c = model.chunk_frames
    outs = []
    for s in range(0, x.shape[1], c):
        outs.append(model(x[:, s:s + c], sigma[:, s:s + c], cond.frames(s, s + c), cache=cache))
        cache.commit()
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("chunk_frames", [1, 2])
@pytest.mark.parametrize("reproject", [
    dict(reproject_depths=[1.0, 4.0]),
    dict(reproject_depths=[1.0, 4.0], reproject_space_to_depth=2, reproject_blend=True, prediction="x0")],
    ids=["reproject", "reproject-blend"])
def test_cached_streaming_with_reprojection_equals_block_causal_forward(chunk_frames, reproject):
    """The backbone contract (test_backbone_contract.py) with the source reprojection and its blend head on."""
    x, sigma, cond = make_inputs(F=6)
    model = randomize(CrossFrameDiT(**TINY, attention_mode="causal", chunk_frames=chunk_frames, **reproject)).eval()
    with torch.no_grad():
        full = model(x, sigma, cond)
        cached = stream(model, x, sigma, cond, model.new_cache())
    torch.testing.assert_close(cached, full, atol=2e-5, rtol=1e-4)


def test_window_rope_positions_stay_bounded_and_cache_size_flat():
    x, sigma, cond = make_inputs(B=1, F=1)
    model = randomize(CrossFrameDiT(**TINY, attention_mode="causal", sink_chunks=1, window_chunks=3)).eval()
    cache = model.new_cache()
    sizes, starts = [], []
    with torch.no_grad():
        for _ in range(12):
            starts.append(cache.query_t_start())
            model(x, sigma, cond, cache=cache)
            cache.commit()
            sizes.append(cache.num_tokens)
    assert max(starts) == 4 and cache.num_committed == 12 and cache.next_t == 12
    assert len(set(sizes[4:])) == 1, f"cache must stop growing once full: {sizes}"


def test_denoising_passes_do_not_change_the_cache_until_commit():
    x, sigma, cond = make_inputs(F=2)
    model = randomize(CrossFrameDiT(**TINY, attention_mode="causal")).eval()
    cache = model.new_cache()
    with torch.no_grad():
        model(x[:, :1], sigma[:, :1], cond.frames(0, 1), cache=cache)
        cache.commit()
        a = model(x[:, 1:], sigma[:, 1:], cond.frames(1, 2), cache=cache)
        model(torch.randn_like(x[:, 1:]), sigma[:, 1:] * 0.5, cond.frames(1, 2), cache=cache)  # another step
        b = model(x[:, 1:], sigma[:, 1:], cond.frames(1, 2), cache=cache)
    assert cache.state()["chunks"] == 1
    torch.testing.assert_close(a, b)


def test_cache_stays_out_of_autograd():
    x, sigma, cond = make_inputs(F=2)
    model = randomize(CrossFrameDiT(**TINY, attention_mode="causal"))
    cache = model.new_cache()
    out = model(x[:, :1], sigma[:, :1], cond.frames(0, 1), cache=cache)
    cache.commit()
    assert all(not k.requires_grad for k in cache.k)
    out2 = model(x[:, 1:], sigma[:, 1:], cond.frames(1, 2), cache=cache)
    (out.sum() + out2.sum()).backward()   # no "backward through the graph a second time" error


def test_cache_rejects_misuse():
    model = CrossFrameDiT(**TINY, attention_mode="causal", chunk_frames=2)
    x, sigma, cond = make_inputs(F=3)
    cache = model.new_cache()
    with pytest.raises(RuntimeError, match="without a staged chunk"):
        cache.commit()
    with pytest.raises(ValueError, match="one chunk of 2 frames, got 3"):
        model(x, sigma, cond, cache=cache)


# ---- presets ----------------------------------------------------------------------------------------


def test_tiny_preset_builds_and_runs():
    model = BACKBONES.build("tiny")
    x = torch.randn(1, 2, 12, 16, 16)
    cond = Cond(torch.randn_like(x), torch.eye(4).repeat(1, 2, 1, 1),
                torch.tensor([[32.0, 0, 16], [0, 32.0, 16], [0, 0, 1]]).repeat(1, 2, 1, 1), (32, 32))
    assert model(x, torch.rand(1, 2), cond).shape == x.shape


def test_wan_preset_builds_on_meta_with_wan_shapes():
    with torch.device("meta"):
        model = BACKBONES.build("wan1.3b")
        assert model.dim == 1536 and model.depth == 30 and model.heads == 12
        assert model.blocks[0].ffn[0].out_features == 8960 and model.patch == (1, 2, 2) and model.in_channels == 16
        params = sum(p.numel() for p in model.parameters())
        assert 1.0e9 < params < 1.3e9, params
        # 480x832 video -> 60x104 latents: a 3-frame chunk forward on meta checks every shape
        x = torch.empty(1, 3, 16, 60, 104)
        cond = Cond(torch.empty_like(x), torch.eye(4).expand(1, 3, 4, 4), torch.eye(3).expand(1, 3, 3, 3), (480, 832))
        assert model(x, torch.empty(1, 3), cond).shape == x.shape
    assert PRESETS["wan1.3b"]["chunk_frames"] == 3


def test_commit_and_forward_rejects_what_it_cannot_do():
    x, sigma, cond = make_inputs(B=1, F=2)
    model = CrossFrameDiT(**TINY, attention_mode="causal")
    with pytest.raises(ValueError, match="two chunks of the same shape"):
        model.commit_and_forward(x, cond, x[:, 1:], sigma[:, 1:], cond.frames(1, 2), cache=model.new_cache())


def test_recammaster_camera_dropout_removes_the_target_camera_in_every_block():
    """camera_keep = False (camera dropout, the unconditional branch of guidance) removes the target camera from a
    per-block encoder's embedding in every block (the source keeps its identity pose, as with the input-side
    encoders): a dropped sample's output no longer depends on its target cameras; a kept one does."""
    from dataclasses import replace

    x, sigma, cond = make_inputs(F=2)
    model = randomize(CrossFrameDiT(**TINY, camera_encoder="recammaster")).eval()
    assert len(model.camera_encoder.cam_encoder) == TINY["depth"]
    keep = torch.tensor([False, True])
    far = cond.target_c2w.clone()
    far[..., :3, 3] *= -10
    moved = replace(cond, camera_keep=keep, target_c2w=far)
    with torch.no_grad():
        dropped, dropped_moved = model(x, sigma, replace(cond, camera_keep=keep)), model(x, sigma, moved)
    torch.testing.assert_close(dropped[0], dropped_moved[0])
    assert (dropped[1] - dropped_moved[1]).abs().max() > 1e-2
