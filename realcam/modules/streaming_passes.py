"""The streaming-only passes of :class:`realcam.modules.backbone.CrossFrameDiT`, as a mixin it inherits.

Two things a cached (causal) model does that a plain forward never needs, kept out of the model file:

- the **fused pass** (:meth:`StreamingPasses.commit_and_forward`): a finished chunk's clean cache pass and the
  next chunk's first denoising pass as one transformer pass;
- the **isolated source** (``isolate_source``): the chunk's source K/V computed once, in its first no-grad pass,
  and reused by its later passes while nothing they depend on has changed (:class:`SourceMemoKey`).

The methods use the model's own parts (patch embedding, conditioning, layout, RoPE, blocks, head), so the
mixin only makes sense on ``CrossFrameDiT``.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from realcam.modules.attention import MaskSpec
from realcam.modules.cache import ChunkInfo, KVCache
from realcam.modules.cond import Cond


class SourceMemoKey(NamedTuple):
    """What a chunk's source K/V depend on besides tensor identities (see ``CrossFrameDiT._source_memo_key``)."""
    image_size: tuple
    frames: int
    grid: tuple
    dtype: torch.dtype
    autocast: tuple
    inference: bool
    t0: float
    versions: tuple


class StreamingPasses:
    """Cached passes of ``CrossFrameDiT`` (see the module docstring)."""

    @torch.no_grad()
    def commit_and_forward(self, prev_x0: Tensor, prev_cond: Cond, x: Tensor, sigma: Tensor, cond: Cond,
                           cache: KVCache) -> Tensor:
        """The clean pass of a finished chunk and the first denoising pass of the next, as one pass.

        Streaming runs, per chunk, its denoising passes and then a clean pass (sigma = 0) whose K/V the cache
        keeps. The clean pass of chunk i and the first pass of chunk i + 1 are independent given the cache, so
        they can share every projection and FFN: ``prev_x0`` [B, c, C, h, w] (chunk i's result) attends to the
        cache as it is, its K/V are committed, and ``x`` (chunk i + 1 at ``sigma``) attends to the cache after
        that commit. Returns the flow of ``x``, as ``self(x, sigma, cond, cache=cache)`` after
        ``write_cache(prev_x0, prev_cond, cache); cache.commit()`` would (to float rounding); the cache then holds
        chunk i and has chunk i + 1's K/V staged. Needs the cache state of chunk i's passes (no commit since).

        With ``isolate_source`` the pass runs [chunk i target, clean | chunk i + 1 source | chunk i + 1 target]:
        chunk i's source K/V are the ones its first pass staged, so only its target runs again, against
        [cache | its source | itself] as a target-only pass would; chunk i is committed as [source | target], and
        chunk i + 1 runs as its first ("both") pass would, its source staged and memoized for its later passes.
        """
        B, Fr, C, h, w = x.shape
        if prev_x0.shape != x.shape or prev_cond.source.shape != x.shape or cond.source.shape != x.shape:
            raise ValueError(f"commit_and_forward takes two chunks of the same shape, got prev_x0 "
                             f"{tuple(prev_x0.shape)}, x {tuple(x.shape)}, sources {tuple(prev_cond.source.shape)} "
                             f"and {tuple(cond.source.shape)}")
        if Fr != self.chunk_frames:
            raise ValueError(f"cached forward takes one chunk of {self.chunk_frames} frames, got {Fr}")
        sigma = sigma.expand(B, Fr) if sigma.dim() == 2 else sigma.view(B, 1).expand(B, Fr)
        isolated = self.isolate_source
        if isolated:
            self._check_isolated_fusion(cache, x.device)
        pt, ph, pw = self.patch
        grid = (h // ph, w // pw)
        n, Ft = grid[0] * grid[1], Fr // pt
        # The previous chunk's rows: [source | target], or its target alone when its source K/V are staged.
        prev = (prev_x0,) if isolated else (prev_cond.source, prev_x0)
        G = len(prev) + 2                                                             # groups of Ft frames
        tokens = self.patch_embed(torch.cat([self.patchify(t) for t in (*prev, cond.source, x)], dim=1))
        stream, camera_prev, _ = self._conditioning(prev_cond, Ft, grid, tokens.dtype, cache)
        _, camera, warp = self._conditioning(cond, Ft, grid, tokens.dtype, cache)
        memo = cache.scratch.get(("conditioning", id(self)))                          # the next chunk's
        prev_embed = stream + camera_prev
        prev_embed = prev_embed[:, Ft:] if isolated else prev_embed
        seq = (tokens + torch.cat([prev_embed, stream + camera], dim=1)).reshape(B, G * Ft * n, self.dim)
        times = self._layout(Ft, x.device)[1]                                         # [source, target] groups
        plan = cache.plan_commit(ChunkInfo(Ft, 2 * Ft * n, cache.next_t))
        zeros = torch.zeros_like(sigma[:, ::pt])
        e, mods = self._time_conditioning(torch.cat([zeros] * (G - 1) + [sigma[:, ::pt]], dim=1), seq.dtype, True)
        prev_times = times[Ft:] if isolated else times
        rope = self.rope.tables(torch.cat([prev_times + cache.query_t_start(), times + plan.query_t_start]), grid)
        keep = torch.arange((G - 1) * Ft, G * Ft, device=x.device)     # the head reads the next chunk's target
        rope_q = self.rope.tables(times[Ft:] + plan.query_t_start, grid)
        attend = lambda q, k, v: self.attention(q, k, v, MaskSpec.full())  # noqa: E731
        rotate = lambda k, chunks, starts: self._rotate_cached_keys(k, chunks, starts, grid)  # noqa: E731
        pair = {"split": (G - 2) * Ft * n, "plan": plan, "new_kv": [], "buffers": [],
                "source_kv": [] if isolated else None}
        attn_cast = self._attention_cast(x.device)
        for i, block in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            seq = block(seq, mods[i], rope, attend, i, cache, rotate, attn_cast, keep if last else None,
                        rope_q if last else None, part="pair", pair=pair)
        cache.install_commit(plan, pair["new_kv"], pair["buffers"])     # keeps the next chunk's staged K/V
        if memo is not None:            # the next chunk's later passes reuse its conditioning
            cache.scratch[("conditioning", id(self))] = memo
        if isolated:                    # ... and its source K/V
            for i, (sk, sv) in enumerate(pair["source_kv"]):
                cache.stage_source(i, sk, sv)
            refs, key = self._source_memo_key(cond, Ft, grid, tokens.dtype, x.device,
                                              float(times[0] + plan.query_t_start))
            cache.scratch[("source", id(self))] = (refs, key, cache.current_buffers())
        return self._head(seq.view(B, Ft, n, self.dim), e[:, (G - 1) * Ft:], x, sigma, warp)

    def _check_isolated_fusion(self, cache: KVCache, device: torch.device) -> None:
        """The previous chunk's source K/V must sit in its KV buffers, written by its no-grad passes under the
        autocast and inference state of this pass (the memo of its source says so)."""
        hit = cache.scratch.get(("source", id(self)))
        if (not cache.has_staged_source() or hit is None
                or not all(a is b for a, b in zip(hit[2], cache.current_buffers()))
                or (hit[1].autocast, hit[1].inference) != (autocast_state(device), torch.is_inference_mode_enabled())):
            raise ValueError("commit_and_forward on an isolated-source model needs the previous chunk's passes in the "
                             "cache (its staged source K/V and KV buffers), run without gradients under the same "
                             "autocast and inference state: run its denoising passes first, as StreamingGenerator does")

    def _run_isolated(self, x: Tensor, sigma: Tensor, cond: Cond, cache: KVCache, stage_only: bool):
        """A cached pass of a model with ``isolate_source``. The chunk's first no-grad pass (and every pass that
        needs gradients) runs [source | target] with the source blind to the target; the no-grad passes after
        it run the target alone against [cache | source | target], the source's K/V taken from the chunk's
        KV buffers. Reuse is checked against the identity and version of every input and parameter, the
        autocast state and the buffers themselves."""
        B, Fr, C, h, w = x.shape
        pt, ph, pw = self.patch
        grid = (h // ph, w // pw)
        n, Ft = grid[0] * grid[1], Fr // pt
        grad = torch.is_grad_enabled()
        target = self.patch_embed(self.patchify(x))                                    # [B, Ft, n, D]
        stream, camera, warp = self._conditioning(cond, Ft, grid, target.dtype, cache)
        times = self._layout(Ft, x.device)[1] + cache.query_t_start()                  # [source, target] groups
        cache.stage_chunk(Ft, 2 * Ft * n)
        attend = lambda q, k, v: self.attention(q, k, v, MaskSpec.full())  # noqa: E731
        rotate = lambda k, chunks, starts: self._rotate_cached_keys(k, chunks, starts, grid)  # noqa: E731
        attn_cast = self._attention_cast(x.device)
        refs, key = self._source_memo_key(cond, Ft, grid, target.dtype, x.device, float(times[0]))
        hit = None if grad else cache.scratch.get(("source", id(self)))
        reuse = (hit is not None and hit[1] == key and all(a is b for a, b in zip(hit[0], refs))
                 and all(a is b for a, b in zip(hit[2], cache.current_buffers())))
        y = target + stream[:, Ft:] + camera[:, Ft:]
        if reuse:
            part, seq, rope = "target", y.reshape(B, Ft * n, self.dim), self.rope.tables(times[Ft:], grid)
            e, mods = self._time_conditioning(sigma[:, ::pt], seq.dtype, True)
            keep = None                                                     # every group is a target
        else:
            part, rope = "both", self.rope.tables(times, grid)
            s_tokens = self.patch_embed(self.patchify(cond.source)) + stream[:, :Ft] + camera[:, :Ft]
            seq = torch.cat([s_tokens, y], dim=1).reshape(B, 2 * Ft * n, self.dim)
            group_sigma = torch.cat([torch.zeros_like(sigma[:, ::pt]), sigma[:, ::pt]], dim=1)
            e, mods = self._time_conditioning(group_sigma, seq.dtype, not grad)
            e, keep = e[:, Ft:], torch.arange(Ft, 2 * Ft, device=x.device)   # the head reads the targets
        if stage_only:      # the clean pass: the last block only stages its K/V
            keep = torch.empty(0, dtype=torch.long, device=x.device)
        rope_q = self.rope.tables(times[Ft:], grid) if part == "both" and not stage_only else None
        for i, block in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            seq = block(seq, mods[i], rope, attend, i, cache, rotate, attn_cast, keep if last else None,
                        rope_q if last else None, part=part)
        if not grad and part == "both" and not stage_only:   # (a staging-only pass leaves the last buffer unwritten)
            cache.scratch[("source", id(self))] = (refs, key, cache.current_buffers())   # refs kept: ids stay unique
        if stage_only:
            return None
        return self._head(seq.view(B, Ft, n, self.dim), e, x, sigma, warp)

    def _source_memo_key(self, cond: Cond, Ft: int, grid: tuple[int, int], dtype: torch.dtype,
                         device: torch.device, t0: float) -> tuple[tuple, tuple]:
        """What a chunk's source K/V depend on (for reusing them across its no-grad passes): the tensors, by
        identity, and a key of shapes, dtypes, autocast / inference state, the chunk's first time and versions."""
        refs = (cond.source, cond.source_K, cond.target_K, *self.parameters())
        key = SourceMemoKey(cond.image_size, Ft, grid, dtype, autocast_state(device),
                            torch.is_inference_mode_enabled(), t0,
                            tuple(None if t is None or t.is_inference() else t._version for t in refs))
        return refs, key


def autocast_state(device: torch.device) -> tuple:
    """What autocast is doing on ``device`` (on, dtype), for memo keys; () on the meta device."""
    if device.type == "meta":
        return ()
    return (torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type))
