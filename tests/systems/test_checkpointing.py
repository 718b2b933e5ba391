"""Activation checkpointing of every DiT block (realcam.systems.sharding.checkpoint_block), cached passes
included: the self-rollout's exit passes recompute in the backward pass against the cache as it was in the
forward pass, and give the gradients they give without checkpointing."""
import copy

import pytest
import torch

from realcam.modules.block import DiTBlock
from realcam.modules.flow import FlowSchedule
from realcam.modules.processors import CachedLayer, PastAttention
from realcam.modules.protocol import CONTRACT_SIZE
from realcam.registry import BACKBONES
from realcam.rollout import causal_rollout
from realcam.systems.sharding import checkpoint_block
from tests.modules.test_backbone import make_inputs, randomize


def causal_model(name: str, chunk_frames: int = 1, window: int | None = 1, seed: int = 3):
    return randomize(BACKBONES.build(name, **CONTRACT_SIZE, attention_mode="causal", chunk_frames=chunk_frames,
                                     sink_chunks=1, window_chunks=window), seed=seed)


def with_text(model, cond):
    if model.text_dim is not None:          # Wan: a prompt
        cond.text = torch.randn(1, 5, model.text_dim, generator=torch.Generator().manual_seed(4))
    return cond


def checkpointed(model):
    model = copy.deepcopy(model)
    for block in (m for m in model.modules() if isinstance(m, DiTBlock)):
        checkpoint_block(block)
    return model


def rollout_grads(model, cond, exit_step: int) -> tuple[torch.Tensor, dict]:
    """The rollout's x0 and every parameter's gradient of a fixed random projection of it."""
    sigmas = FlowSchedule(shift=3.0).student_sigmas()
    roll = causal_rollout(model, cond, sigmas, torch.Generator().manual_seed(5), exit_step=exit_step)
    weights = torch.randn(roll.x0.shape, generator=torch.Generator().manual_seed(6))
    (roll.x0 * weights).sum().backward()
    return roll.x0.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["tiny", "tiny-wan"])
@pytest.mark.parametrize("chunk_frames,window,exit_step", [(1, 1, 1), (2, 1, 0), (1, None, 2)])
def test_checkpointed_rollout_gradients_equal_plain(name, chunk_frames, window, exit_step):
    """A rollout over 4 chunks (window 1 and sink 1: chunks are evicted before the backward pass) with an exit
    step: checkpointing every block changes neither x0 nor any gradient, and the blocks really recompute."""
    _, _, cond = make_inputs(B=1, F=4 * chunk_frames)
    model = causal_model(name, chunk_frames, window)
    cond = with_text(model, cond)
    plain_x0, plain = rollout_grads(model, cond, exit_step)
    ckpt = checkpointed(model)
    calls = []
    ckpt.blocks[0].q.register_forward_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    ckpt_x0, grads = rollout_grads(ckpt, cond, exit_step)
    torch.testing.assert_close(ckpt_x0, plain_x0, atol=0, rtol=0)
    assert grads.keys() == plain.keys() and len(grads) > 0
    for n, g in grads.items():
        torch.testing.assert_close(g, plain[n], atol=1e-6, rtol=1e-5, msg=lambda m: f"{n}: {m}")
    # per chunk: exit_step no-grad passes, the exit pass, the cache pass; then one recomputation per chunk
    chunks, passes = 4, exit_step + 2
    assert len(calls) == chunks * (passes + 1) and calls[-chunks:] == [True] * chunks


def test_recomputation_leaves_the_cache_alone():
    """The backward pass of a checkpointed rollout stages nothing into the cache: what the rollout left there
    (the last chunk committed, nothing staged) is what the cache holds after the backward pass."""
    _, _, cond = make_inputs(B=1, F=3)
    model = checkpointed(causal_model("tiny"))
    cache = model.new_cache()
    roll = causal_rollout(model, cond, FlowSchedule(shift=3.0).student_sigmas(), torch.Generator().manual_seed(1),
                          exit_step=1, cache=cache)
    k, state = list(cache.k), cache.state()
    roll.x0.sum().backward()
    assert cache.state() == state and all(a is b for a, b in zip(cache.k, k))
    assert all(s is None for s in cache._staged) and cache._staged_info is None


def test_pinned_passes_share_each_chunk(monkeypatch):
    """Over 5 chunks with sink 1 and window 2, the exit passes' pins hold each committed chunk's K/V once (shared
    from pass to pass, not one concatenation per cache state), and the chunk-wise K/V the cache keeps for them
    concatenate to exactly what it attends to."""
    pins = []
    pin = CachedLayer.pin
    monkeypatch.setattr(CachedLayer, "pin", lambda self: pins.append((self.index, pin(self))) or pins[-1][1])
    _, _, cond = make_inputs(B=1, F=5)
    model = checkpointed(causal_model("tiny", window=2))
    cache = model.new_cache()
    causal_rollout(model, cond, FlowSchedule(shift=3.0).student_sigmas(), torch.Generator().manual_seed(1),
                   exit_step=0, cache=cache).x0.sum().backward()
    layer0 = [p for i, p in pins if i == 0]
    assert [len(p.past) for p in layer0] == [0, 1, 2, 3, 3]
    assert len({id(k) for p in layer0 for k, _ in p.past}) == 4         # chunks 0..3, each held once
    for i in range(len(model.blocks)):
        k, v = (torch.cat(t, dim=2) for t in zip(*cache.chunk_kv[i]))
        assert torch.equal(k, cache.k[i]) and torch.equal(v, cache.v[i])


def test_past_attention_refuses_a_cache_written_in_place():
    """Pinned K/V are references; a cache that wrote into them would make the recomputation wrong: it raises."""
    q = k = v = torch.randn(1, 2, 4, 3)
    past = torch.randn(1, 2, 4, 3)
    attn = PastAttention(lambda q, k, v, mask: q, lambda k, chunks, starts: k, [(past, past.clone())], [], [])
    attn(q, k, v, k)
    past.add_(1)
    with pytest.raises(RuntimeError, match="written in place"):
        attn(q, k, v, k)


def test_no_grad_passes_are_not_checkpointed():
    """Streaming (no gradients) runs the blocks as they are: the same values, one call each."""
    _, _, cond = make_inputs(B=1, F=3)
    model = causal_model("tiny-wan")
    cond = with_text(model, cond)
    sigmas = FlowSchedule(shift=3.0).student_sigmas()
    with torch.no_grad():
        plain = causal_rollout(model, cond, sigmas, torch.Generator().manual_seed(2)).x0
        ckpt = checkpointed(model)
        calls = []
        ckpt.blocks[0].q.register_forward_hook(lambda *_: calls.append(1))
        again = causal_rollout(ckpt, cond, sigmas, torch.Generator().manual_seed(2)).x0
    torch.testing.assert_close(again, plain, atol=0, rtol=0)
    assert len(calls) == 3 * (len(sigmas) + 1)
