"""The transformer block of :class:`realcam.modules.backbone.CrossFrameDiT`.

:class:`DiTBlock` is Wan's block: per-token time modulation, RoPE self-attention with q/k RMSNorm, optionally
text cross-attention (:class:`TextCrossAttention`, when the backbone has ``text_dim``), a gated GELU FFN. It
computes q, k and v and hands them to an *attention processor*
(:mod:`realcam.modules.processors`), which owns how attention is done: masked over the whole sequence, against
a KV cache, or committing one chunk while starting the next. The block itself has no modes.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realcam.modules.processors import AttentionProcessor
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


def select_groups(t: Tensor, groups: int, rows: Tensor) -> Tensor:
    """The token groups ``rows`` of t [B, groups * n, C] (or [groups * n, C]) -> [B, len(rows) * n, C]."""
    lead = t.shape[:-2]
    return t.view(*lead, groups, -1, t.shape[-1])[..., rows, :, :].reshape(*lead, -1, t.shape[-1])


class TextCrossAttention(nn.Module):
    """Wan's cross-attention to the text: q from the (affine-normed) tokens, k and v from the embedded prompt,
    RMSNorm over the full width on q and k, no RoPE, no mask. The prompt's k and v are computed apart
    (:meth:`keys_values`), so a stream computes them once per prompt."""

    def __init__(self, dim: int, heads: int, eps: float = 1e-6):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)

    def _heads(self, t: Tensor) -> Tensor:
        return t.view(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2)

    def keys_values(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """Embedded text [B, L, D] -> (k, v) [B, H, L, D/H]."""
        return self._heads(self.norm_k(self.k(context))), self._heads(self.v(context))

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor]) -> Tensor:
        """x [B, N, D] (normed) attends to the text's (k, v) -> [B, N, D]."""
        q = self._heads(self.norm_q(self.q(x)))
        k, v = kv
        out = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype))
        return self.o(out.transpose(1, 2).flatten(2))


# ---------------------------------------------------------------------------------------------
# Block
# ---------------------------------------------------------------------------------------------


class DiTBlock(nn.Module):
    """Per-token time modulation -> RoPE self-attention (q/k RMSNorm) -> [text cross-attention] -> modulation ->
    GELU FFN. ``cross_attention``: add Wan's text cross-attention (affine LayerNorm ``norm3``, then
    :class:`TextCrossAttention`)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, eps: float = 1e-6, cross_attention: bool = False):
        super().__init__()
        self.heads, self.eps = heads, eps
        self.norm1 = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(torch.zeros(1, 1, 6, dim))
        self.norm3 = nn.LayerNorm(dim, eps=eps) if cross_attention else None
        self.cross_attn = TextCrossAttention(dim, heads, eps) if cross_attention else None

    def modulations(self, e6: Tensor) -> list[Tensor]:
        """[B, G, 6, D] time embedding -> shift1, 1 + scale1, gate1, shift2, 1 + scale2, gate2 (each [B, G, 1, D],
        ready to broadcast over a group's tokens)."""
        mods = list((self.modulation + e6)[:, :, :, None].unbind(2))
        mods[1], mods[4] = 1 + mods[1], 1 + mods[4]
        return mods

    def forward(self, x: Tensor, mods: list[Tensor], rope: tuple[Tensor, Tensor], attn: AttentionProcessor,
                rows: Tensor | None = None, text: tuple[Tensor, Tensor] | None = None,
                camera: tuple[Tensor, Callable[[Tensor], Tensor]] | None = None) -> Tensor:
        """x [B, G*n, D] -> [B, G*n, D], or [B, len(rows)*n, D] for the groups ``rows`` alone (keys and values
        still cover every group: the head reads only target groups, so the last block skips the rest).

        mods: per-group modulation from :meth:`modulations`; rope: (cos2, sin2) tables of :meth:`Rope3D.tables`
        for every token; attn: the processor, ``attn(q, k, v, raw_k)`` with q and k rotated, raw_k before RoPE;
        text: this block's (k, v) of the prompt (:meth:`TextCrossAttention.keys_values`), with cross-attention;
        camera: a per-block camera encoder's (embedding [B, G, 1, D] added to the self-attention input, projector
        of the self-attention output) (:class:`~realcam.modules.camera.BlockCameraEncoder`), or None.
        """
        h = self._attention_input(x, mods, camera)
        q, k, raw_k, v = self.qkv(h, rope, rows, mods[0].shape[1])
        out = attn(q, k, v, raw_k)
        if rows is not None:
            x, mods = select_groups(x, mods[0].shape[1], rows), [m[:, rows] for m in mods]
        o = self.o(out.transpose(1, 2).flatten(2))
        if camera is not None:
            o = camera[1](o)
        x = x + self._gated(o, mods[2])
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.norm3(x), text)
        return x + self._gated(self.ffn(self._modulated(self.norm2(x), mods[3], mods[4])), mods[5])

    def keys_values(self, x: Tensor, mods: list[Tensor], camera: tuple | None = None) -> tuple[Tensor, Tensor]:
        """(raw k, v) [B, H, G*n, D/H] of x: all a cache pass needs from the last block."""
        h = self._attention_input(x, mods, camera)
        return self._heads(self.norm_k(self.k(h))), self._heads(self.v(h))

    def _attention_input(self, x: Tensor, mods: list[Tensor], camera: tuple | None) -> Tensor:
        """The modulated norm1(x), plus a per-block camera embedding (ReCamMaster adds it after the modulation)."""
        h = self._modulated(self.norm1(x), mods[0], mods[1])
        if camera is None:
            return h
        B, L, D = h.shape
        return (h.view(B, camera[0].shape[1], -1, D) + camera[0]).view(B, L, D)

    @staticmethod
    def _modulated(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
        B, L, D = x.shape
        return (x.view(B, shift.shape[1], -1, D) * scale + shift).view(B, L, D)

    @staticmethod
    def _gated(y: Tensor, gate: Tensor) -> Tensor:
        B, L, D = y.shape
        return (y.view(B, gate.shape[1], -1, D) * gate).view(B, L, D)

    def _heads(self, t: Tensor) -> Tensor:
        """[B, L, D] -> [B, H, L, D/H] (a view)."""
        return t.view(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2)

    # ---- projections ---------------------------------------------------------------------------------
    def qkv(self, h: Tensor, rope, rows: Tensor | None = None, groups: int = 1):
        """(q rotated, k rotated, k before RoPE for the cache, v), each [B, H, *, D/H]; q for the groups ``rows``
        of ``groups`` (None: all)."""
        raw_k, v = self._heads(self.norm_k(self.k(h))), self._heads(self.v(h))
        hq, rope_q = (h, rope) if rows is None else self._rows(h, rope, rows, groups)
        q = Rope3D.rotate(self._heads(self.norm_q(self.q(hq))), *rope_q)
        return q, Rope3D.rotate(raw_k, *rope), raw_k, v

    @staticmethod
    def _rows(h: Tensor, rope, rows: Tensor, groups: int) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """The query rows: h's groups ``rows`` and their RoPE tables."""
        return select_groups(h, groups, rows), tuple(select_groups(t, groups, rows) for t in rope)
