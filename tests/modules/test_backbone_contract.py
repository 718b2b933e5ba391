"""The backbone contract, run over every registered backbone (``BACKBONES.list()``, plugins included).

Each backbone is built at the tiny sizes of :data:`realcam.modules.protocol.CONTRACT_SIZE` with random weights,
and must give the equivalences streaming relies on: cached chunk-by-chunk output equals the block-causal full
forward; the rolling sink + window cache equals a recompute; every attention backend equals ``math``; the clean
cache pass stages the K/V of a sigma = 0 pass; the fused cache pass equals the cache pass, commit and forward.
"""
from dataclasses import replace

import pytest
import torch

from realcam.modules.cond import Cond
from realcam.modules.protocol import CONTRACT_SIZE, CausalDenoiser, FusedCachePass
from realcam.registry import ATTENTION_BACKENDS, BACKBONES
from tests.modules.test_backbone import make_inputs, randomize, stream

# Every registered backbone, plus the Wan preset with the per-block camera encoder (ReCamMaster's injection,
# "name@encoder"): it acts inside every block, so it must keep every equivalence too.
NAMES = BACKBONES.list() + ["tiny-wan@recammaster"]


def build(name: str, **overrides) -> torch.nn.Module:
    name, _, camera = name.partition("@")
    camera_args = {"camera_encoder": camera} if camera else {}
    return randomize(BACKBONES.build(name, **{**CONTRACT_SIZE, **camera_args, **overrides})).eval()


def with_text(model, cond: Cond) -> Cond:
    """``cond`` plus a random prompt when the backbone reads text (Wan), so the contract runs with text on."""
    if model.text_dim is None:
        return cond
    g = torch.Generator().manual_seed(9)
    return replace(cond, text=torch.randn(cond.source.shape[0], 5, model.text_dim, generator=g))


@pytest.mark.parametrize("name", NAMES)
def test_follows_the_protocol_and_trains(name):
    x, sigma, cond = make_inputs(F=2)
    causal = build(name, attention_mode="causal", chunk_frames=1)
    cond = with_text(causal, cond)
    assert isinstance(causal, CausalDenoiser) and causal.chunk_frames == 1
    assert causal.new_cache().num_layers > 0
    teacher = build(name, attention_mode="bidirectional", chunk_frames=1).train()
    cond = with_text(teacher, cond)
    out = teacher(x, sigma, cond)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None for p in teacher.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("chunk_frames", [1, 2])
def test_cached_chunks_equal_block_causal_forward(name, chunk_frames):
    x, sigma, cond = make_inputs(F=6)
    model = build(name, attention_mode="causal", chunk_frames=chunk_frames)
    cond = with_text(model, cond)
    with torch.no_grad():
        full = model(x, sigma, cond)
        cached = stream(model, x, sigma, cond, model.new_cache())
    torch.testing.assert_close(cached, full, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_rolling_cache_equals_sink_window_forward_with_absolute_rope(name):
    """Once chunks are evicted, the rolling cache equals the full forward under the sink + window mask."""
    x, sigma, cond = make_inputs(F=8)
    model = build(name, attention_mode="causal", chunk_frames=1, sink_chunks=1, window_chunks=2,
                  rope_policy="absolute")
    cond = with_text(model, cond)
    with torch.no_grad():
        full = model(x, sigma, cond)
        cache = model.new_cache()
        cached = stream(model, x, sigma, cond, cache)
        unbounded = build(name, attention_mode="causal", chunk_frames=1, window_chunks=None)(x, sigma, cond)
    assert cache.state()["chunks"] == 3, "sink (1) + window (2) chunks stay cached"
    torch.testing.assert_close(cached, full, atol=2e-5, rtol=1e-4)
    assert not torch.allclose(unbounded[:, 4:], full[:, 4:], atol=1e-4), "eviction must change the answer"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("sink,window", [(1, 2), (0, 3)])
def test_rolling_window_cache_equals_recompute_over_visible_chunks(name, sink, window):
    """Window-relative RoPE: each new chunk equals a from-scratch forward over exactly the chunks it may see
    (sinks, then the window, then itself) laid out from t = 0. With one layer the cached K/V of a chunk depend
    only on its own input, so the recompute is an exact reference."""
    x, sigma, cond = make_inputs(F=6)
    model = build(name, depth=1, attention_mode="causal", chunk_frames=1, sink_chunks=sink, window_chunks=window)
    cond = with_text(model, cond)
    reference = build(name, depth=1, attention_mode="causal", chunk_frames=1, window_chunks=None)   # same weights
    with torch.no_grad():
        cached = stream(model, x, sigma, cond, model.new_cache())
        for i in range(x.shape[1]):
            visible = [j for j in range(i) if j < sink or i - j <= window] + [i]
            sub = reference(x[:, visible], sigma[:, visible],
                            Cond(cond.source[:, visible], cond.target_c2w[:, visible], cond.target_K[:, visible],
                                 cond.image_size, text=cond.text))
            torch.testing.assert_close(cached[:, i], sub[:, -1], atol=2e-5, rtol=1e-4, msg=f"chunk {i}")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("backend", [b for b in ATTENTION_BACKENDS.list() if b != "math"])
def test_every_attention_backend_equals_math(name, backend):
    """The block-causal full forward and the cached stream under ``backend`` equal the ``math`` reference."""
    x, sigma, cond = make_inputs(F=4)
    ref = build(name, attention_mode="causal", chunk_frames=1, attention="math")
    model = build(name, attention_mode="causal", chunk_frames=1, attention=backend)
    cond = with_text(model, cond)
    with torch.no_grad():
        torch.testing.assert_close(model(x, sigma, cond), ref(x, sigma, cond), atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(stream(model, x, sigma, cond, model.new_cache()),
                                   stream(ref, x, sigma, cond, ref.new_cache()), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_write_cache_stages_the_clean_pass(name):
    x, sigma, cond = make_inputs(F=3)
    model = build(name, attention_mode="causal", chunk_frames=1)
    cond = with_text(model, cond)
    full, light = model.new_cache(), model.new_cache()
    with torch.no_grad():
        for i in range(3):
            c = cond.frames(i, i + 1)
            model(x[:, i:i + 1], torch.zeros(x.shape[0], 1), c, cache=full)
            model.write_cache(x[:, i:i + 1], c, light)
            full.commit()
            light.commit()
    for a, b in zip(full.k + full.v, light.k + light.v):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("chunk_frames,window,rope", [(1, None, "window"), (2, 2, "window"), (1, 2, "absolute")])
def test_fused_cache_pass_equals_cache_pass_commit_then_forward(name, chunk_frames, window, rope):
    """Chunk by chunk over 8 frames (evicting under window 2): commit_and_forward(prev clean, next noisy) gives
    the flow of write_cache + commit + forward, leaves the same cache, and a further pass of the next chunk (its
    later denoising steps) agrees too."""
    model = build(name, attention_mode="causal", chunk_frames=chunk_frames, window_chunks=window, rope_policy=rope)
    if not isinstance(model, FusedCachePass):
        pytest.skip(f"{name} has no fused cache pass (optional)")
    x, sigma, cond = make_inputs(B=2, F=8)
    cond = with_text(model, cond)
    c = chunk_frames
    chunks = [(x[:, s:s + c], sigma[:, s:s + c], cond.frames(s, s + c)) for s in range(0, 8, c)]
    ref, fused = model.new_cache(), model.new_cache()
    with torch.no_grad():
        for cache in (ref, fused):
            model(*chunks[0], cache=cache)
        for i in range(1, len(chunks)):
            clean = chunks[i - 1][0] * 0.5                  # the previous chunk's result
            model.write_cache(clean, chunks[i - 1][2], ref)
            ref.commit()
            want = model(*chunks[i], cache=ref)
            got = model.commit_and_forward(clean, chunks[i - 1][2], *chunks[i], cache=fused)
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5, msg=f"chunk {i}")
            again = (chunks[i][0] * 0.3, chunks[i][1] * 0.5, chunks[i][2])
            torch.testing.assert_close(model(*again, cache=fused), model(*again, cache=ref), atol=1e-4, rtol=1e-5)
            assert fused.state() == ref.state()
            for a, b in zip(fused.k + fused.v, ref.k + ref.v):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
