"""Backbone contract tests and the cache equivalences the streaming student relies on."""
import pytest
import torch

from realcam.modules.backbone import PRESETS, CrossFrameDiT
from realcam.modules.cond import Cond
from realcam.registry import ATTENTION_BACKENDS, BACKBONES

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


def test_preconditioned_x0_is_skip_plus_scaled_output_and_finite_at_sigma_zero():
    """prediction='x0_precond': x - sigma * flow = c_skip x + c_out F with EDM's weights for
    x = (1 - sigma) x0 + sigma eps; the flow stays finite at sigma = 0 (where the estimate is x itself) and at
    sigma = 1 the estimate is sigma_data * F alone."""
    from realcam.modules.flow import x0_from_flow

    x, sigma, cond = make_inputs()
    model = CrossFrameDiT(**TINY, prediction="x0_precond", sigma_data=0.5)
    x = x.double()
    sigma = torch.cat([torch.zeros_like(sigma[:, :1]), torch.ones_like(sigma[:, :1]), sigma[:, 2:]], 1).double()
    F_out = torch.randn_like(x)
    s = sigma[..., None, None, None]
    flow = model.precond_flow(x, F_out, s)
    assert torch.isfinite(flow).all()
    den = (1 - s) ** 2 * 0.25 + s ** 2
    expected = (1 - s) * 0.25 / den * x + 0.5 * s / den.sqrt() * F_out
    torch.testing.assert_close(x0_from_flow(x, flow, sigma)[:, 1:], expected[:, 1:])
    torch.testing.assert_close(expected[:, 0], x[:, 0])
    torch.testing.assert_close(expected[:, 1], 0.5 * F_out[:, 1])
    # the flow at sigma -> 0 is the limit of (x - x0) / sigma: compare with a tiny sigma
    tiny = torch.full_like(s[:, :1], 1e-7)
    x0_tiny = (1 - tiny) * 0.25 / ((1 - tiny) ** 2 * 0.25 + tiny ** 2) * x[:, :1] \
        + 0.5 * tiny / ((1 - tiny) ** 2 * 0.25 + tiny ** 2).sqrt() * F_out[:, :1]
    torch.testing.assert_close(flow[:, :1], (x[:, :1] - x0_tiny) / tiny, atol=1e-5, rtol=1e-5)
    # through the model: a zero-initialized head gives x0 = c_skip x
    out = model(x.float(), sigma.float().clamp(0.1, 0.9), cond)
    s9 = sigma.float().clamp(0.1, 0.9)[..., None, None, None]
    c_skip = (1 - s9) * 0.25 / ((1 - s9) ** 2 * 0.25 + s9 ** 2)
    torch.testing.assert_close(x0_from_flow(x.float(), out, sigma.float().clamp(0.1, 0.9)), c_skip * x.float(),
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="sigma_data"):
        CrossFrameDiT(**TINY, prediction="x0_precond", sigma_data=0.0)
    with pytest.raises(ValueError, match="x0_precond"):
        CrossFrameDiT(**TINY, prediction="eps")


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


@pytest.mark.parametrize("backend", ATTENTION_BACKENDS.list())
@pytest.mark.parametrize("chunk_frames", [1, 2])
@pytest.mark.parametrize("reproject", [
    {}, dict(reproject_depths=[1.0, 4.0]),
    dict(reproject_depths=[1.0, 4.0], reproject_space_to_depth=2, reproject_blend=True, prediction="x0")],
    ids=["plain", "reproject", "reproject-blend"])
def test_cached_streaming_equals_block_causal_forward(backend, chunk_frames, reproject):
    x, sigma, cond = make_inputs(F=6)
    model = randomize(CrossFrameDiT(**TINY, attention_mode="causal", chunk_frames=chunk_frames,
                                    attention=backend, **reproject)).eval()
    with torch.no_grad():
        full = model(x, sigma, cond)
        cached = stream(model, x, sigma, cond, model.new_cache())
    torch.testing.assert_close(cached, full, atol=2e-5, rtol=1e-4)


def test_rolling_cache_equals_sink_window_forward_with_absolute_rope():
    """Once chunks are evicted, the rolling cache equals the full forward under the sink+window mask."""
    x, sigma, cond = make_inputs(F=8)
    model = randomize(CrossFrameDiT(**TINY, attention_mode="causal", sink_chunks=1, window_chunks=2,
                                    rope_policy="absolute")).eval()
    with torch.no_grad():
        full = model(x, sigma, cond)
        cache = model.new_cache()
        cached = stream(model, x, sigma, cond, cache)
    assert cache.state()["chunks"] == 3, "sink (1) + window (2) chunks stay cached"
    torch.testing.assert_close(cached, full, atol=2e-5, rtol=1e-4)
    # eviction changed the answer: a model that keeps everything gives a different result
    unbounded = randomize(CrossFrameDiT(**TINY, attention_mode="causal")).eval()
    with torch.no_grad():
        assert not torch.allclose(unbounded(x, sigma, cond)[:, 4:], full[:, 4:], atol=1e-4)


@pytest.mark.parametrize("sink,window", [(1, 2), (2, 1), (0, 3)])
def test_rolling_window_cache_equals_recompute_over_visible_chunks(sink, window):
    """Window-relative RoPE: each new chunk equals a from-scratch forward over exactly the chunks it may
    see (sinks, then the window, then itself) laid out from t = 0. With one layer the cached K/V of a
    chunk depend only on its own input, so the from-scratch recompute is an exact reference."""
    cfg = {**TINY, "depth": 1}
    x, sigma, cond = make_inputs(F=7)
    model = randomize(CrossFrameDiT(**cfg, attention_mode="causal", sink_chunks=sink, window_chunks=window)).eval()
    reference = randomize(CrossFrameDiT(**cfg, attention_mode="causal")).eval()   # same weights, no eviction
    with torch.no_grad():
        cached = stream(model, x, sigma, cond, model.new_cache())
        for i in range(x.shape[1]):
            visible = [j for j in range(i) if j < sink or i - j <= window] + [i]
            sub = reference(x[:, visible], sigma[:, visible],
                            Cond(cond.source[:, visible], cond.target_c2w[:, visible], cond.target_K[:, visible],
                                 cond.image_size))
            torch.testing.assert_close(cached[:, i], sub[:, -1], atol=2e-5, rtol=1e-4, msg=f"chunk {i}")


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


# ---- isolated source: the source's K/V are computed once per chunk ------------------------------------


BLEND = dict(reproject_depths=[1.0, 4.0], reproject_space_to_depth=2, reproject_blend=True, prediction="x0")


@pytest.mark.parametrize("backend", ATTENTION_BACKENDS.list())
@pytest.mark.parametrize("chunk_frames", [1, 2])
def test_isolated_source_streaming_equals_masked_forward(backend, chunk_frames):
    """Source computed once per chunk and target alone per pass == the block-causal forward whose mask hides
    each chunk's target from its source; and the isolation changes the answer (the mask is not a no-op)."""
    x, sigma, cond = make_inputs(F=6)
    model = randomize(CrossFrameDiT(**TINY, attention_mode="causal", chunk_frames=chunk_frames,
                                    attention=backend, isolate_source=True, **BLEND)).eval()
    plain = randomize(CrossFrameDiT(**TINY, attention_mode="causal", chunk_frames=chunk_frames,
                                    attention=backend, **BLEND)).eval()
    with torch.no_grad():
        full = model(x, sigma, cond)
        cached = stream(model, x, sigma, cond, model.new_cache())
        assert not torch.allclose(plain(x, sigma, cond)[:, chunk_frames:], full[:, chunk_frames:], atol=1e-3)
    torch.testing.assert_close(cached, full, atol=2e-5, rtol=1e-4)


def test_isolated_source_rolling_cache_equals_sink_window_forward():
    x, sigma, cond = make_inputs(F=8)
    model = randomize(CrossFrameDiT(**TINY, attention_mode="causal", sink_chunks=1, window_chunks=2,
                                    rope_policy="absolute", isolate_source=True)).eval()
    with torch.no_grad():
        full = model(x, sigma, cond)
        cache = model.new_cache()
        cached = stream(model, x, sigma, cond, cache)
    assert cache.state()["chunks"] == 3 and cache.k[0].shape[2] == 3 * 2 * 6   # chunks stored [source | target]
    torch.testing.assert_close(cached, full, atol=2e-5, rtol=1e-4)


def test_isolated_source_runs_once_per_chunk_and_passes_see_the_same_source():
    """4 denoising passes and the cache pass of a chunk: the first pass runs all 12 tokens (source blind to
    the target), every pass after it the 6 target tokens alone, and each pass equals the same pass on a cache
    that recomputes the source (memo off)."""
    x, sigma, cond = make_inputs(B=1, F=2)
    model = randomize(CrossFrameDiT(**TINY, attention_mode="causal", isolate_source=True, **BLEND)).eval()
    lengths = []
    model.blocks[0].register_forward_hook(lambda mod, args, out: lengths.append(args[0].shape[1]))
    cache, fresh = model.new_cache(), model.new_cache()
    runs, fresh_runs = [], []

    def counted(into, fn):
        lengths.clear()
        out = fn()
        into.append(list(lengths))
        return out

    with torch.no_grad():
        for c in (cache, fresh):
            model(x[:, :1], sigma[:, :1], cond.frames(0, 1), cache=c)
            c.commit()
        chunk = cond.frames(1, 2)
        for s in (1.0, 0.75, 0.5, 0.25):
            noisy, sig = torch.randn_like(x[:, 1:]), torch.full((1, 1), s)
            out = counted(runs, lambda: model(noisy, sig, chunk, cache=cache))
            fresh.scratch.clear()          # forget the memo: the source runs again
            ref = counted(fresh_runs, lambda: model(noisy, sig, chunk, cache=fresh))
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)   # GEMMs of 6 vs 12 rows: rounding
        counted(runs, lambda: model.write_cache(x[:, 1:], chunk, cache))
        cache.commit()
    # 6 tokens per stream: the whole chunk once, then the target alone
    assert runs == [[12], [6], [6], [6], [6]] and fresh_runs == [[12]] * 4, (runs, fresh_runs)
    assert cache.state()["chunks"] == 2 and cache.k[0].shape[2] == 2 * 2 * 6


def test_isolated_source_after_a_staging_only_first_pass():
    """write_cache as a chunk's first pass stages K/V without writing the last block's buffer; a denoising pass
    after it must not reuse that buffer's source slot."""
    x, sigma, cond = make_inputs(B=1, F=2)
    model = randomize(CrossFrameDiT(**TINY, attention_mode="causal", isolate_source=True)).eval()
    caches = model.new_cache(), model.new_cache()
    with torch.no_grad():
        for c in caches:
            model(x[:, :1], sigma[:, :1], cond.frames(0, 1), cache=c)
            c.commit()
        chunk = cond.frames(1, 2)           # one cond object, as the passes of a streamed chunk share it
        model.write_cache(x[:, 1:], chunk, caches[0])
        after = model(x[:, 1:], sigma[:, 1:], chunk, cache=caches[0])
        plain = model(x[:, 1:], sigma[:, 1:], chunk, cache=caches[1])
    torch.testing.assert_close(after, plain, rtol=0, atol=0)


def test_isolated_source_is_recomputed_when_the_weights_change():
    x, sigma, cond = make_inputs(B=1, F=1)
    model = randomize(CrossFrameDiT(**TINY, attention_mode="causal", isolate_source=True)).eval()
    cache = model.new_cache()
    with torch.no_grad():
        model(x, sigma, cond, cache=cache)
        model.blocks[0].k.weight.mul_(0.5)       # an optimizer step between two passes of one chunk
        after = model(x, sigma, cond, cache=cache)
        torch.testing.assert_close(after, model(x, sigma, cond, cache=model.new_cache()), rtol=0, atol=0)


def test_isolate_source_needs_a_causal_interleaved_model():
    with pytest.raises(ValueError, match="isolate_source=True needs attention_mode='causal'"):
        CrossFrameDiT(**TINY, isolate_source=True)
    mask = CrossFrameDiT(**TINY, attention_mode="causal", isolate_source=True).full_mask(3, 12)
    assert mask.source_tokens == 12 and mask.chunk_tokens == (24,) * 3


# ---- the cache pass fused into the next chunk's first pass -------------------------------------------


@pytest.mark.parametrize("isolate", [False, True])
@pytest.mark.parametrize("chunk_frames", [1, 2])
@pytest.mark.parametrize("window,rope", [(None, "window"), (2, "window"), (2, "absolute")])
def test_commit_and_forward_equals_cache_pass_commit_then_forward(chunk_frames, window, rope, isolate):
    """Chunk by chunk over 8 frames (evicting under window 2): commit_and_forward(prev clean, next noisy) gives
    the flow of write_cache + commit + forward, leaves the same cache, and a further pass of the next chunk
    (its later denoising steps) agrees too. With an isolated source too: the previous chunk's source K/V come
    from its first pass, and the next chunk's are reused by its later passes."""
    x, sigma, cond = make_inputs(B=2, F=8)
    model = randomize(CrossFrameDiT(**TINY, attention_mode="causal", chunk_frames=chunk_frames,
                                    window_chunks=window, rope_policy=rope, isolate_source=isolate, **BLEND)).eval()
    c = chunk_frames
    chunks = [(x[:, s:s + c], sigma[:, s:s + c], cond.frames(s, s + c)) for s in range(0, 8, c)]
    ref, fused = model.new_cache(), model.new_cache()
    lengths = []
    model.blocks[0].register_forward_hook(lambda mod, args, out: lengths.append(args[0].shape[1]))
    with torch.no_grad():
        for cache in (ref, fused):
            model(*chunks[0], cache=cache)
        for i in range(1, len(chunks)):
            clean = chunks[i - 1][0] * 0.5                  # the previous chunk's result
            model.write_cache(clean, chunks[i - 1][2], ref)
            ref.commit()
            want = model(*chunks[i], cache=ref)
            lengths.clear()
            got = model.commit_and_forward(clean, chunks[i - 1][2], *chunks[i], cache=fused)
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5, msg=f"chunk {i}")
            again = (chunks[i][0] * 0.3, chunks[i][1] * 0.5, chunks[i][2])
            torch.testing.assert_close(model(*again, cache=fused), model(*again, cache=ref), atol=1e-4, rtol=1e-5)
            # rows per pass (6 tokens per frame per stream): isolated, the previous target, the next source and
            # target, then the target alone (its source reused); otherwise both chunks whole, then the chunk
            assert lengths[:2] == ([3 * 6 * c, 6 * c] if isolate else [4 * 6 * c, 2 * 6 * c]), lengths
            assert fused.state() == ref.state()
            for a, b in zip(fused.k + fused.v, ref.k + ref.v):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_commit_and_forward_rejects_what_it_cannot_do():
    x, sigma, cond = make_inputs(B=1, F=2)
    isolated = CrossFrameDiT(**TINY, attention_mode="causal", isolate_source=True)
    with pytest.raises(ValueError, match="needs the previous chunk's passes"):
        isolated.commit_and_forward(x[:, :1], cond.frames(0, 1), x[:, 1:], sigma[:, 1:], cond.frames(1, 2),
                                    cache=isolated.new_cache())
    cache = isolated.new_cache()
    with torch.no_grad():
        isolated(x[:, :1], sigma[:, :1], cond.frames(0, 1), cache=cache)          # fp32 passes, then bf16
        with torch.autocast("cpu", torch.bfloat16), pytest.raises(ValueError, match="same autocast"):
            isolated.commit_and_forward(x[:, :1], cond.frames(0, 1), x[:, 1:], sigma[:, 1:], cond.frames(1, 2),
                                        cache=cache)
        isolated.commit_and_forward(x[:, :1], cond.frames(0, 1), x[:, 1:], sigma[:, 1:], cond.frames(1, 2),
                                    cache=cache)                                   # the same state: fine
    model = CrossFrameDiT(**TINY, attention_mode="causal")
    with pytest.raises(ValueError, match="two chunks of the same shape"):
        model.commit_and_forward(x, cond, x[:, 1:], sigma[:, 1:], cond.frames(1, 2), cache=model.new_cache())
