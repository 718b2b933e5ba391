"""Attention processors: how a block's attention is done, behind one call (the seam of diffusers' processors).

A :class:`~realcam.modules.block.DiTBlock` computes q, k and v and calls ``attn(q, k, v, raw_k)`` with q and k
rotated (RoPE) and raw_k the keys before RoPE (what a KV cache stores). The processor returns the attention
output [B, H, Lq, D/H]. A backbone makes one processor per pass and hands each block its layer's view
(:meth:`layer`); the block never knows which kind it got:

- :class:`MaskedAttention`: the whole sequence under a :class:`~realcam.modules.attention.MaskSpec` (training,
  the teacher, a block-causal forward);
- :class:`CachedAttention`: one chunk against a :class:`~realcam.modules.cache.KVCache`: stages the chunk's K/V
  and attends to [cache, rotated at its policy positions | chunk]; its layer view :class:`CachedLayer` can
  :meth:`~CachedLayer.pin` the cache as it is now into a :class:`PastAttention`, the same attention as a pure
  function of tensors held from forward time (what activation checkpointing recomputes in the backward pass);
- :class:`CommitAndAttend`: a finished chunk's clean pass and the next chunk's first pass as one (the fused
  cache pass): the first rows attend to the cache as it is, their K/V are committed, the rest attend to the
  cache after that commit.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Protocol

import torch
from torch import Tensor

from realcam.modules.attention import AttentionBackend, MaskSpec
from realcam.modules.cache import CommitPlan, KVCache

FULL = MaskSpec.full()
RotateCached = Callable[[Tensor, list, list], Tensor]     # (raw keys, chunks, starts) -> rotated keys


class AttentionProcessor(Protocol):
    def __call__(self, q: Tensor, k: Tensor, v: Tensor, raw_k: Tensor) -> Tensor:
        """q [B, H, Lq, D], k / raw_k / v [B, H, L, D] (q and k rotated) -> [B, H, Lq, D]."""


class MaskedAttention:
    """The whole sequence at once under ``mask`` (q may cover fewer rows only for a ``full`` mask)."""

    def __init__(self, backend: AttentionBackend, mask: MaskSpec):
        self.backend, self.mask = backend, mask

    def layer(self, index: int) -> "MaskedAttention":
        return self

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, raw_k: Tensor) -> Tensor:
        return self.backend(q, k, v, self.mask)


class CachedAttention:
    """One chunk against ``cache``: its K/V are staged (kept by ``cache.commit()``), and it attends to the cache
    and to itself. Without gradients the cache side comes from the chunk's preallocated KV buffers
    (:meth:`KVCache.kv_buffers`, built once per chunk); with gradients fresh tensors are concatenated, so the
    shared buffers stay out of autograd.

    attn_cast: the dtype the backend computes in whatever it is given (SDPA under autocast), so q and the
    buffers are stored in it up front; None to leave dtypes alone.
    """

    def __init__(self, backend: AttentionBackend, cache: KVCache, rotate_cached: RotateCached,
                 attn_cast: torch.dtype | None = None):
        self.backend, self.cache, self.rotate_cached, self.attn_cast = backend, cache, rotate_cached, attn_cast

    def layer(self, index: int) -> "CachedLayer":
        return CachedLayer(self, index)

    def stage(self, index: int, raw_k: Tensor, v: Tensor) -> None:
        """Stage a layer's K/V without attending (the last block of a cache-only pass)."""
        self.cache.stage(index, raw_k, v)

    def attend(self, index: int, q: Tensor, k: Tensor, v: Tensor, raw_k: Tensor) -> Tensor:
        self.cache.stage(index, raw_k, v)
        if torch.is_grad_enabled():
            past_k = self.cache.rotated_keys(index, self.rotate_cached)
            if past_k is not None:
                k = torch.cat([past_k.to(k.dtype), k], dim=2)
                v = torch.cat([self.cache.v[index].to(v.dtype), v], dim=2)
        else:
            k, v = self.buffers(index, k.shape[2], k, v)
            q = q if self.attn_cast is None else q.to(self.attn_cast)
        return self.backend(q, k, v, FULL)

    def buffers(self, index: int, tokens: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """The chunk's KV buffers (the cache in front, ``tokens`` rows of the chunk behind it) with (k, v) written
        into their tail: the values of concatenating the rotated cache and (k, v)."""
        dtypes = (k.dtype, v.dtype) if self.attn_cast is None else (self.attn_cast,) * 2
        k_buf, v_buf = self.cache.kv_buffers(index, tokens, self.rotate_cached, k, v, dtypes)
        k_buf[:, :, -k.shape[2]:] = k
        v_buf[:, :, -v.shape[2]:] = v
        return k_buf, v_buf


class CachedLayer(partial):
    """Layer ``index`` of a :class:`CachedAttention`: ``attn(q, k, v, raw_k)`` as the block calls it (a
    ``partial`` of :meth:`CachedAttention.attend`, so streaming calls it as cheaply as before)."""

    def __new__(cls, owner: CachedAttention, index: int):
        layer = super().__new__(cls, owner.attend, index)
        layer.owner, layer.index = owner, index
        return layer

    def pin(self) -> "PastAttention":
        """This layer with the cache as it is now: its raw keys, values and their rotary positions, held as
        references (a commit builds new tensors and new lists, and the no-grad KV buffers are separate tensors,
        so nothing held here is written later). Held chunk by chunk (:meth:`KVCache.keep_chunk_kv`, turned on
        here) when the cache can, so the pins of later chunks share them. The chunk's K/V are staged by the
        first call only."""
        cache, i = self.owner.cache, self.index
        past = (cache.chunk_kv[i] if cache.keep_chunk_kv() else
                [] if cache.k[i] is None else [(cache.k[i], cache.v[i])])
        return PastAttention(self.owner.backend, self.owner.rotate_cached, past, cache.chunks,
                             cache.key_chunk_starts(), partial(cache.stage, i))


class PastAttention:
    """One chunk attending to [past | itself] with the past given explicitly (``past``: (raw keys, values)
    [B, H, *, D] pieces in cache order, concatenated here, the keys rotated at ``starts``; empty for an empty
    cache): a pure function of its tensors, so a checkpointed block recomputes in the backward pass exactly what
    it computed in the forward pass, however the cache has moved on. ``stage(raw_k, v)`` runs on the first call
    only: a recomputation writes nothing.

    Computes what :meth:`CachedAttention.attend` computes with gradients (the same rotation, concatenation and
    backend call); raises if a held tensor was written in place since (its version counter moved)."""

    def __init__(self, backend: AttentionBackend, rotate_cached: RotateCached, past: list[tuple[Tensor, Tensor]],
                 chunks: list, starts: list[int], stage: Callable[[Tensor, Tensor], None] | None = None):
        self.backend, self.rotate_cached = backend, rotate_cached
        self.past, self.chunks, self.starts, self.stage = list(past), chunks, starts, stage
        self.versions = self._versions()

    def _versions(self) -> list[int]:
        return [t._version for kv in self.past for t in kv]

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, raw_k: Tensor) -> Tensor:
        if self.stage is not None:
            self.stage(raw_k, v)
            self.stage = None
        if self.past:
            if self._versions() != self.versions:
                raise RuntimeError("PastAttention: the cached K/V it holds were written in place after the "
                                   "forward pass; a KV cache must build new tensors on commit")
            past_k, past_v = (torch.cat(t, dim=2) if len(t) > 1 else t[0] for t in zip(*self.past))
            k = torch.cat([self.rotate_cached(past_k, self.chunks, self.starts).to(k.dtype), k], dim=2)
            v = torch.cat([past_v.to(v.dtype), v], dim=2)
        return self.backend(q, k, v, FULL)


class CommitAndAttend(CachedAttention):
    """[chunk i, clean | chunk i + 1] in one pass, without gradients. The first ``split`` rows (chunk i) attend
    to the cache as it is; their K/V are committed by ``plan`` (collected here, installed by :meth:`install`, so
    every layer sees the cache before the commit); the rest (chunk i + 1) attend to the cache after the commit
    and are staged. When q holds fewer rows than k (the last block), they are chunk i + 1's alone."""

    def __init__(self, backend: AttentionBackend, cache: KVCache, rotate_cached: RotateCached,
                 attn_cast: torch.dtype | None, split: int, plan: CommitPlan):
        super().__init__(backend, cache, rotate_cached, attn_cast)
        self.split, self.plan = split, plan
        self.new_kv: list[tuple[Tensor, Tensor]] = []
        self.next_buffers: list[tuple[Tensor, Tensor]] = []

    def layer(self, index: int) -> AttentionProcessor:
        return partial(self.attend, index)      # inference only: no gradients, nothing to pin

    def attend(self, index: int, q: Tensor, k: Tensor, v: Tensor, raw_k: Tensor) -> Tensor:
        n, plan = self.split, self.plan
        new_k, new_v = self.cache.appended(index, raw_k[:, :, :n], v[:, :, :n], plan)
        q = q if self.attn_cast is None else q.to(self.attn_cast)
        outs = []
        if q.shape[2] == k.shape[2]:        # chunk i's queries (the last block needs none: only its K/V count)
            outs.append(self.backend(q[:, :, :n], *self.buffers(index, n, k[:, :, :n], v[:, :, :n]), FULL))
            q = q[:, :, n:]
        # chunk i + 1's buffers: the cache after the commit, rotated at its new positions, then its own K/V
        past, dtypes = new_k.shape[2], (k.dtype, v.dtype) if self.attn_cast is None else (self.attn_cast,) * 2
        k_next = torch.empty(*new_k.shape[:2], past + k.shape[2] - n, k.shape[-1], dtype=dtypes[0], device=k.device)
        v_next = torch.empty(*new_v.shape[:2], past + v.shape[2] - n, v.shape[-1], dtype=dtypes[1], device=k.device)
        k_next[:, :, :past] = self.rotate_cached(new_k, plan.chunks, plan.starts)
        v_next[:, :, :past] = new_v
        k_next[:, :, past:] = k[:, :, n:]
        v_next[:, :, past:] = v[:, :, n:]
        outs.append(self.backend(q, k_next, v_next, FULL))
        self.cache.stage(index, raw_k[:, :, n:], v[:, :, n:])
        self.new_kv.append((new_k, new_v))
        self.next_buffers.append((k_next, v_next))
        return torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]

    def install(self) -> None:
        """Commit chunk i (chunk i + 1's K/V stay staged, its buffers ready for its next passes)."""
        self.cache.install_commit(self.plan, self.new_kv, self.next_buffers)
