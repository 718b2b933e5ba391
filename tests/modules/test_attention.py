"""Every registered attention backend equals ``math`` (forward and backward) under every mask kind."""
import logging

import pytest
import torch

from realcam.modules import attention
from realcam.modules.attention import AttentionBackend, FlexAttention, MaskSpec
from realcam.registry import ATTENTION_BACKENDS

CHUNKS = (5, 3, 7, 4, 6, 5)  # unequal chunk sizes, 30 tokens, 6 chunks
MASKS = {
    "full": MaskSpec.full(),
    "block_causal": MaskSpec.block_causal(CHUNKS),
    "sink1_window1": MaskSpec.sink_window(CHUNKS, sink=1, window=1),
    "sink1_window2": MaskSpec.sink_window(CHUNKS, sink=1, window=2),
}


def build(name, monkeypatch):
    # Compiling flex costs seconds per shape on CPU; eager flex runs the same mask_mod and block
    # mask. The compiled path has its own test below.
    monkeypatch.setenv(attention.FLEX_COMPILE_ENV, "0")
    return ATTENTION_BACKENDS.build(name)


def qkv(L=30, dtype=torch.float32, B=2, H=2, D=8, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, L, D, generator=g).to(dtype).requires_grad_(grad) for _ in range(3)]


@pytest.mark.parametrize("mask_name", list(MASKS))
@pytest.mark.parametrize("name", ATTENTION_BACKENDS.list())
def test_backend_matches_math_forward_and_backward(name, mask_name, monkeypatch):
    backend, ref, mask = build(name, monkeypatch), ATTENTION_BACKENDS.build("math"), MASKS[mask_name]
    q, k, v = qkv(grad=True)
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out, expected = backend(q, k, v, mask), ref(q2, k2, v2, mask)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    d_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), d_out)
    expected_grads = torch.autograd.grad(expected, (q2, k2, v2), d_out)
    for got, want, what in zip(grads, expected_grads, "qkv"):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=f"grad of {what} differs from math")


@pytest.mark.parametrize("name", ATTENTION_BACKENDS.list())
def test_backend_bf16_close_to_fp32_math_and_custom_scale(name, monkeypatch):
    backend, mask = build(name, monkeypatch), MASKS["sink1_window1"]
    q, k, v = qkv()
    expected = ATTENTION_BACKENDS.build("math")(q, k, v, mask, scale=0.2)
    out = backend(*(t.bfloat16() for t in (q, k, v)), mask, scale=0.2)
    assert out.dtype == torch.bfloat16 and out.shape == q.shape
    torch.testing.assert_close(out.float(), expected, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("name", ATTENTION_BACKENDS.list())
def test_full_mask_with_query_shorter_than_keys(name, monkeypatch):
    backend = build(name, monkeypatch)
    q, _, _ = qkv(L=7, seed=1, grad=True)
    _, k, v = qkv(L=19, seed=2, grad=True)
    out = backend(q, k, v, MaskSpec.full())
    expected = torch.softmax(q @ k.transpose(-2, -1) / 8 ** 0.5, -1) @ v
    assert out.shape == (2, 2, 7, 8)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    d_out = torch.randn_like(out)
    for got, want in zip(torch.autograd.grad(out, (q, k, v), d_out), torch.autograd.grad(expected, (q, k, v), d_out)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ATTENTION_BACKENDS.list())
def test_backend_rejects_bad_inputs(name, monkeypatch):
    backend = build(name, monkeypatch)
    q, k, v = qkv(L=30)
    with pytest.raises(ValueError, match="sums to 29 tokens but the sequence has L=30"):
        backend(q, k, v, MaskSpec.block_causal((29,)))
    with pytest.raises(ValueError, match="needs q and k of equal length"):
        backend(q[:, :, :6], k, v, MaskSpec.block_causal(CHUNKS))
    with pytest.raises(TypeError, match="mask must be a MaskSpec"):
        backend(q, k, v, "full")


def test_dense_mask_semantics_by_hand():
    # chunks of 1, 2, 1, 1 tokens -> token chunk ids [0, 1, 1, 2, 3]
    spec = MaskSpec.sink_window([1, 2, 1, 1], sink=1, window=1)
    assert spec.chunk_tokens == (1, 2, 1, 1) and hash(spec) == hash(MaskSpec.sink_window((1, 2, 1, 1), 1, 1))
    assert spec.chunk_ids(5).tolist() == [0, 1, 1, 2, 3]
    assert spec.dense(5).int().tolist() == [
        [1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0],   # chunk 1 sees itself whole, including the later token of its own chunk
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0],
        [1, 0, 0, 1, 1],   # chunk 3: sink chunk 0, chunk 2 (window 1) and itself; chunk 1 has rolled out
    ]
    causal = MaskSpec.block_causal([1, 2, 1, 1]).dense(5)
    assert causal.int().tolist()[4] == [1, 1, 1, 1, 1] and causal.int().tolist()[0] == [1, 0, 0, 0, 0]
    assert MaskSpec.full().dense(3).all() and MaskSpec.full().chunk_ids(3).tolist() == [0, 0, 0]
    # a window covering everything is block-causal; sink 0 / window 0 is chunk-diagonal
    assert torch.equal(MaskSpec.sink_window([1, 2, 1, 1], 0, 3).dense(5), causal)
    diag = MaskSpec.sink_window([1, 2, 1, 1], 0, 0).dense(5)
    assert torch.equal(diag, torch.block_diag(*(torch.ones(n, n) for n in (1, 2, 1, 1))).bool())


def test_maskspec_validation_messages():
    with pytest.raises(ValueError, match="kind 'causal' is unknown: expected one of 'full', 'block_causal'"):
        MaskSpec("causal", (2, 2))
    with pytest.raises(ValueError, match=r"chunk_tokens\[1\] = 0: every chunk needs >= 1 token"):
        MaskSpec.block_causal((2, 0))
    with pytest.raises(ValueError, match="window = -1 must be >= 0"):
        MaskSpec.sink_window((2, 2), sink=1, window=-1)
    with pytest.raises(ValueError, match="sink = -2 must be >= 0"):
        MaskSpec.sink_window((2, 2), sink=-2, window=1)
    with pytest.raises(ValueError, match="needs chunk_tokens"):
        MaskSpec.block_causal(())
    with pytest.raises(ValueError, match="only apply to kind 'sink_window'"):
        MaskSpec("block_causal", (2, 2), window=1)
    with pytest.raises(TypeError, match="sequence of ints"):
        MaskSpec.block_causal((2.5, 2))
    with pytest.raises(ValueError, match="sums to 4 tokens but the sequence has L=5"):
        MaskSpec.block_causal((2, 2)).dense(5)


def test_user_subclass_registers_and_runs(monkeypatch):
    class Doubled(AttentionBackend):  # a toy backend: math with the scale folded into q
        def forward(self, q, k, v, mask, scale):
            return ATTENTION_BACKENDS.build("math")(q * scale * 2, k, v, mask, scale=0.5)

    ATTENTION_BACKENDS.register("test_doubled")(Doubled)
    try:
        backend = ATTENTION_BACKENDS.build("test_doubled")
        q, k, v = qkv()
        torch.testing.assert_close(backend(q, k, v, MASKS["block_causal"]),
                                   ATTENTION_BACKENDS.build("math")(q, k, v, MASKS["block_causal"]))
    finally:
        ATTENTION_BACKENDS._entries.pop("test_doubled")


@pytest.mark.slow  # the one test that compiles: ~5 s with a warm inductor cache, ~20 s cold on 2 cores
def test_flex_compiled_matches_math_or_falls_back_once(caplog):
    backend = FlexAttention(compile=True)
    q, k, v = qkv(L=30, B=1)
    mask = MASKS["sink1_window2"]
    with caplog.at_level(logging.WARNING, logger=attention.__name__):
        out = backend(q, k, v, mask)
        again = backend(q, k, v, mask)  # cached block mask, cached graph
    torch.testing.assert_close(out, ATTENTION_BACKENDS.build("math")(q, k, v, mask), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, out)
    fallbacks = [r for r in caplog.records if "torch.compile failed" in r.message]
    assert len(fallbacks) == (0 if backend.uses_compile(q.device) else 1)


def test_flex_compile_env_and_block_mask_cache(monkeypatch):
    monkeypatch.setenv(attention.FLEX_COMPILE_ENV, "0")
    assert not FlexAttention().uses_compile(torch.device("cpu"))
    monkeypatch.setenv(attention.FLEX_COMPILE_ENV, "sometimes")
    with pytest.raises(ValueError, match="expected 0, 1 or auto"):
        FlexAttention()
    first = attention._cached_block_mask(MASKS["block_causal"], 30, torch.device("cpu"))
    assert attention._cached_block_mask(MaskSpec.block_causal(list(CHUNKS)), 30, torch.device("cpu")) is first


def test_flex_falls_back_to_eager_once_when_compile_fails(monkeypatch, caplog):
    def broken():
        def run(*args, **kwargs):
            raise RuntimeError("no C++ compiler here")
        return run

    monkeypatch.setattr(attention, "_compiled_flex", broken)
    backend, mask = FlexAttention(compile=True), MASKS["block_causal"]
    q, k, v = qkv()
    with caplog.at_level(logging.WARNING, logger=attention.__name__):
        out = backend(q, k, v, mask)
        backend(q, k, v, mask)
    fallbacks = [r.message for r in caplog.records if "torch.compile failed" in r.message]
    assert len(fallbacks) == 1 and "no C++ compiler here" in fallbacks[0]  # logged once, then eager for good
    assert not backend.uses_compile(q.device)
    torch.testing.assert_close(out, ATTENTION_BACKENDS.build("math")(q, k, v, mask), atol=1e-5, rtol=1e-5)
