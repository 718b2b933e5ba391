"""Patchify: latents [B, F, C, h, w] <-> tokens [B, F/pt, gh*gw, C*pt*ph*pw], one layout for every module."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor


def patchify(x: Tensor, patch: Sequence[int]) -> Tensor:
    """[B, F, C, h, w] -> [B, F/pt, gh*gw, C*pt*ph*pw] (features ordered channel, then t, y, x in the patch)."""
    B, Fr, C, h, w = x.shape
    pt, ph, pw = patch
    if Fr % pt or h % ph or w % pw:
        raise ValueError(f"latents {tuple(x.shape)} do not divide into patches {tuple(patch)}")
    x = x.view(B, Fr // pt, pt, C, h // ph, ph, w // pw, pw).permute(0, 1, 4, 6, 3, 2, 5, 7)
    return x.reshape(B, Fr // pt, (h // ph) * (w // pw), C * pt * ph * pw)


def unpatchify(tokens: Tensor, patch: Sequence[int], channels: int, h: int, w: int) -> Tensor:
    """[B, Ft, gh*gw, C*pt*ph*pw] -> [B, Ft*pt, C, h, w], the inverse of :func:`patchify`."""
    B, Ft = tokens.shape[:2]
    pt, ph, pw = patch
    x = tokens.view(B, Ft, h // ph, w // pw, channels, pt, ph, pw).permute(0, 1, 5, 4, 2, 6, 3, 7)
    return x.reshape(B, Ft * pt, channels, h, w)
