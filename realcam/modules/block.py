"""The transformer block of :class:`realcam.modules.backbone.CrossFrameDiT` and its cached attention paths.

:class:`DiTBlock` is Wan's block without text cross-attention: per-token time modulation, RoPE self-attention
with q/k RMSNorm, a gated GELU FFN. With a KV cache it also runs the streaming variants: a whole chunk, an
isolated source's [source | target] and target-only passes, and the fused pass that commits one chunk while
starting the next (``part``; see :meth:`DiTBlock.forward`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realcam.modules.cache import KVCache
from realcam.modules.rope import Rope3D


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMS-normalize the last dim in float32, back to x's dtype, times ``weight`` (broadcast)."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight


# ---------------------------------------------------------------------------------------------
# Block
# ---------------------------------------------------------------------------------------------


class DiTBlock(nn.Module):
    """Per-token time modulation -> RoPE self-attention (q/k RMSNorm) -> modulation -> GELU FFN."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, eps: float = 1e-6):
        super().__init__()
        self.heads, self.eps = heads, eps
        self.norm1 = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(torch.zeros(1, 1, 6, dim))
        self._fused: tuple | None = None     # (key, weight, bias, norm weight) for no-grad passes

    def modulations(self, e6: Tensor) -> list[Tensor]:
        """[B, G, 6, D] time embedding -> shift1, 1 + scale1, gate1, shift2, 1 + scale2, gate2 (each [B, G, 1, D],
        ready to broadcast over a group's tokens)."""
        mods = list((self.modulation + e6)[:, :, :, None].unbind(2))
        mods[1], mods[4] = 1 + mods[1], 1 + mods[4]
        return mods

    def forward(self, x: Tensor, mods: list[Tensor], rope: tuple[Tensor, Tensor], attend, layer: int,
                cache: KVCache | None = None, rotate_cached=None, attn_cast: torch.dtype | None = None,
                keep: Tensor | None = None, rope_q: tuple[Tensor, Tensor] | None = None,
                part: str = "all", pair: dict | None = None) -> Tensor | None:
        """x [B, G*n, D] -> [B, G*n, D] (or [B, K*n, D] with ``keep``).

        mods: per-group modulation from :meth:`modulations`; rope the (cos2, sin2) tables of :meth:`Rope3D.tables`;
        ``attend(q, k, v)`` applies the mask; ``rotate_cached(k, chunks, starts)`` applies RoPE to cached keys
        at their policy positions. ``attn_cast``: the dtype the attention backend computes in whatever it is
        given (autocast), so q and the KV buffers can be stored in it up front.
        keep: the groups [K] whose outputs are wanted, or None for all. The head reads only target groups,
            so the last block computes queries, attention and FFN for those alone (keys and values still cover
            every group; needs a mask of kind ``full``). Empty: only stage K/V in the cache, return None.
        rope_q: the tables of the kept rows (default ``rope``).
        part: with a cache, what x holds. ``all``: the chunk, every token sees the cache and the whole chunk.
            For a model with an isolated source: ``both``, the chunk [source | target] (equal halves) where the
            source does not see the target (its K/V go to ``stage_source``); ``target``, the target alone
            (no-grad passes after a ``both`` one), which sees the cache and the source K/V already in the
            chunk's KV buffers. ``pair`` (no-grad, with ``pair``): x is [previous chunk, clean | next chunk] as
            in :meth:`CrossFrameDiT.commit_and_forward`: the previous chunk's rows attend to the cache as it is, its
            K/V are committed (into ``pair["new_kv"]``, the cache untouched) and the next chunk's rows attend to
            the cache after that commit (its KV buffers built into ``pair["buffers"]``); for an isolated source,
            x is [previous target, clean | next source | next target] (see :meth:`_pair_attention`).
        """
        B, L, D = x.shape
        G = mods[0].shape[1]

        h = (self.norm1(x).view(B, G, -1, D) * mods[1] + mods[0]).view(B, L, D)
        if keep is not None and keep.numel():
            rows = lambda t: t.view(B, G, -1, t.shape[-1])[:, keep].reshape(B, -1, t.shape[-1])  # noqa: E731
            x, mods = rows(x), [m[:, keep] for m in mods]
        else:
            rows = None
        stage_only = keep is not None and rows is None
        q_rows = False if stage_only else rows      # which rows need queries: False none, None all
        if torch.is_grad_enabled():
            q_rot, k_rot, k, v = self._qkv(h, rope, rope_q, q_rows)
        else:
            q_rot, k_rot, k, v = self._qkv_fused(h, rope, rope_q, q_rows)
        if part == "pair":
            return self._pair_attention(x, q_rot, k_rot, k, v, q_rows is None, mods, layer, cache, rotate_cached,
                                        attn_cast, attend, pair)
        half = L // 2           # part "both": the source's tokens, then the target's
        if cache is not None and part == "both":
            cache.stage_source(layer, k[:, :, :half], v[:, :, :half])
            cache.stage(layer, k[:, :, half:], v[:, :, half:])
        elif cache is not None:
            cache.stage(layer, k, v)
        if stage_only:
            return None
        if cache is not None and not torch.is_grad_enabled():
            # Inference: a target-only pass's tail is [its source's K/V, written by the ``both`` pass | its own].
            k_rot, v = self._cached_kv(cache, layer, 2 * L if part == "target" else L, rotate_cached, k_rot, v,
                                       attn_cast)
            q_rot = q_rot if attn_cast is None else q_rot.to(attn_cast)
        elif cache is not None:
            # Gradient through this pass (training): fresh tensors, the shared buffers must stay out of autograd.
            past_k = cache.rotated_keys(layer, rotate_cached)
            if past_k is not None:
                k_rot = torch.cat([past_k.to(k_rot.dtype), k_rot], dim=2)
                v = torch.cat([cache.v[layer].to(v.dtype), v], dim=2)
        if part == "both" and q_rows is None:     # every row queries: the source must not see the target
            out = torch.cat([attend(q_rot[:, :, :half], k_rot[:, :, :-half], v[:, :, :-half]),
                             attend(q_rot[:, :, half:], k_rot, v)], dim=2)
        else:
            out = attend(q_rot, k_rot, v)
        return self._finish(x, out, mods)

    def _pair_attention(self, x, q_rot, k_rot, k, v, all_rows, mods, layer, cache, rotate_cached, attn_cast,
                        attend, pair):
        """The attention and the rest of the block for part ``pair`` (see :meth:`forward`). x holds the previous
        chunk's rows (``pair["split"]`` of them), then the next chunk's. With an isolated source
        (``pair["source_kv"]`` is a list) the previous rows are its target alone, its source K/V the ones its
        first pass staged, and the next chunk's source rows do not see its target."""
        n_prev, plan, isolated = pair["split"], pair["plan"], pair["source_kv"] is not None
        dtypes = _buffer_dtypes(k_rot, v, attn_cast)
        k_prev, v_prev = k[:, :, :n_prev], v[:, :, :n_prev]
        if isolated:                    # the chunk is committed as [source | target]
            src_k, src_v = cache.staged_source(layer)
            k_prev, v_prev = torch.cat([src_k, k_prev], dim=2), torch.cat([src_v, v_prev], dim=2)
        new_k, new_v = cache.appended(layer, k_prev, v_prev, plan)
        q_rot = q_rot if attn_cast is None else q_rot.to(attn_cast)
        outs = []
        if all_rows:        # the previous chunk's queries (the last block needs none: its K/V are all that count)
            tokens = 2 * n_prev if isolated else n_prev     # isolated: [its source | itself] in the buffers' tail
            outs.append(attend(q_rot[:, :, :n_prev], *self._cached_kv(cache, layer, tokens, rotate_cached,
                                                                      k_rot[:, :, :n_prev], v[:, :, :n_prev],
                                                                      attn_cast)))
        # the next chunk's buffers: the cache after the commit, rotated at its new positions, then its own K/V
        n_next, past = k.shape[2] - n_prev, new_k.shape[2]
        k_next = torch.empty(*new_k.shape[:2], past + n_next, k_rot.shape[-1], dtype=dtypes[0], device=k.device)
        v_next = torch.empty(*new_v.shape[:2], past + n_next, v.shape[-1], dtype=dtypes[1], device=k.device)
        k_next[:, :, :past] = rotate_cached(new_k, plan.chunks, plan.starts)
        v_next[:, :, :past] = new_v
        k_next[:, :, past:] = k_rot[:, :, n_prev:]
        v_next[:, :, past:] = v[:, :, n_prev:]
        if isolated:                    # the next chunk is [source | target], the source blind to its target
            half = n_next // 2
            if all_rows:
                outs.append(attend(q_rot[:, :, n_prev:n_prev + half], k_next[:, :, :past + half],
                                   v_next[:, :, :past + half]))
            outs.append(attend(q_rot[:, :, n_prev + half:] if all_rows else q_rot, k_next, v_next))
            cache.stage(layer, k[:, :, n_prev + half:], v[:, :, n_prev + half:])
            pair["source_kv"].append((k[:, :, n_prev:n_prev + half], v[:, :, n_prev:n_prev + half]))
        else:
            outs.append(attend(q_rot[:, :, n_prev:] if all_rows else q_rot, k_next, v_next))
            cache.stage(layer, k[:, :, n_prev:], v[:, :, n_prev:])
        pair["new_kv"].append((new_k, new_v))
        pair["buffers"].append((k_next, v_next))
        return self._finish(x, torch.cat(outs, dim=2) if len(outs) > 1 else outs[0], mods)

    @staticmethod
    def _cached_kv(cache: KVCache, layer: int, tokens: int, rotate_cached, k_rot: Tensor, v: Tensor,
                   attn_cast: torch.dtype | None) -> tuple[Tensor, Tensor]:
        """The chunk's preallocated KV buffers (the cache in front, built once per chunk by
        :meth:`KVCache.kv_buffers`, ``tokens`` of the chunk behind it) with this pass's rows written into the
        tail: the same values as concatenating the rotated cache and (k_rot, v)."""
        k_buf, v_buf = cache.kv_buffers(layer, tokens, rotate_cached, k_rot, v, _buffer_dtypes(k_rot, v, attn_cast))
        k_buf[:, :, -k_rot.shape[2]:] = k_rot
        v_buf[:, :, -v.shape[2]:] = v
        return k_buf, v_buf

    def _finish(self, x: Tensor, out: Tensor, mods: list[Tensor]) -> Tensor:
        """The block after attention: output projection and FFN, each gated into the residual.
        x [B, G*n, D], out [B, H, G*n, D/H] -> [B, G*n, D]."""
        B, _, D = x.shape
        G = mods[0].shape[1]
        o = self.o(out.transpose(1, 2).reshape(B, -1, D)).view(B, G, -1, D)
        x = x + (o * mods[2]).view(B, -1, D)
        h = (self.norm2(x).view(B, G, -1, D) * mods[4] + mods[3]).view(B, -1, D)
        return x + (self.ffn(h).view(B, G, -1, D) * mods[5]).view(B, -1, D)

    def _heads(self, t: Tensor) -> Tensor:
        """[B, L, D] -> [B, H, L, D/H] (a view)."""
        return t.view(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2)

    def _qkv(self, h: Tensor, rope, rope_q, rows) -> tuple[Tensor | None, Tensor, Tensor, Tensor]:
        """(rotated q, rotated k, raw k for the cache, v), each [B, H, *, D/H], through the modules.

        rows: None computes q for every row, a callable for the rows it selects, False for none (q is None).
        """
        k, v = self._heads(self.norm_k(self.k(h))), self._heads(self.v(h))
        q = None
        if rows is not False:
            q = self._heads(self.norm_q(self.q(h if rows is None else rows(h))))
            q = Rope3D.rotate(q, *(rope if rope_q is None else rope_q))
        return q, Rope3D.rotate(k, *rope), k, v

    def _qkv_fused(self, h: Tensor, rope, rope_q, rows) -> tuple[Tensor | None, Tensor, Tensor, Tensor]:
        """:meth:`_qkv` with one GEMM for q, k and v and one norm and rotation for q and k (no-grad passes).

        Bit for bit the same numbers: each output element is still one dot product over D in the same dtype
        (the weights are cast as autocast would), and norm and rotation act row by row on the last dim.
        """
        B, L, D = h.shape
        dev = h.device
        dtype = torch.get_autocast_dtype(dev.type) if dev.type != "meta" and torch.is_autocast_enabled(dev.type) \
            else self.q.weight.dtype
        weight, bias, norm_w = self._fused_weights(dtype)
        h_in = h.to(dtype)          # what autocast does to each linear's input
        if rows is None:
            qkv = F.linear(h_in, weight, bias)                                        # [B, L, 3D]
            qk = rms_norm(qkv[..., :2 * D].unflatten(-1, (2, D)), norm_w, self.eps)   # [B, L, 2, D]
            cos2, sin2 = rope
            qk_rot = Rope3D.rotate(qk.unflatten(-1, (self.heads, -1)), cos2[:, None, None], sin2[:, None, None])
            k = qk[:, :, 1].unflatten(-1, (self.heads, -1)).transpose(1, 2)
            return qk_rot[:, :, 0].transpose(1, 2), qk_rot[:, :, 1].transpose(1, 2), k, self._heads(qkv[..., 2 * D:])
        kv = F.linear(h_in, weight[D:], bias[D:])
        k, v = self._heads(rms_norm(kv[..., :D], norm_w[1], self.eps)), self._heads(kv[..., D:])
        q = None
        if rows is not False:
            q = self._heads(rms_norm(F.linear(rows(h_in), weight[:D], bias[:D]), norm_w[0], self.eps))
            q = Rope3D.rotate(q, *(rope if rope_q is None else rope_q))
        return q, Rope3D.rotate(k, *rope), k, v

    def _fused_weights(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """[3D, D] q/k/v weight and [3D] bias in ``dtype``, [2, D] q/k norm weight; memoized per parameter
        version and storage, so an optimizer step or a load_state_dict is seen."""
        params = (self.q.weight, self.k.weight, self.v.weight, self.q.bias, self.k.bias, self.v.bias,
                  self.norm_q.weight, self.norm_k.weight)
        key = (dtype, *(p._version for p in params), *(p.data_ptr() for p in params))
        if self._fused is None or self._fused[0] != key:
            with torch.no_grad():
                weight = torch.cat(params[:3]).to(dtype)
                bias = torch.cat(params[3:6]).to(dtype)
                self._fused = (key, weight, bias, torch.stack(params[6:]))
        return self._fused[1:]


def _buffer_dtypes(k: Tensor, v: Tensor, attn_cast: torch.dtype | None) -> tuple[torch.dtype, torch.dtype]:
    """The dtypes KV buffers are stored in: what the attention backend will compute in (``attn_cast``), else
    the keys' and values' own."""
    return (k.dtype, v.dtype) if attn_cast is None else (attn_cast, attn_cast)
