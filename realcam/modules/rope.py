"""3-D rotary position embedding over (t, y, x), Wan-style split of the head dimension.

The head dim is cut into three bands: time gets ``d - 4*(d//6)`` channels, rows and columns get
``2*(d//6)`` each. Time positions are *group* positions (one per frame of a stream), so a source frame
and the target frame of the same instant share their time index, as the cross-frame layout requires.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def _band_freqs(channels: int, theta: float) -> Tensor:
    """Inverse frequencies for one band of ``channels`` (even) rotary channels: [channels // 2]."""
    return 1.0 / theta ** (torch.arange(0, channels, 2, dtype=torch.float64) / channels)


class Rope3D(nn.Module):
    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        if head_dim % 2 or head_dim < 6:
            raise ValueError(f"head_dim={head_dim} must be even and >= 6 for 3-D RoPE")
        band = 2 * (head_dim // 6)
        self.bands = (head_dim - 2 * band, band, band)
        freqs = [_band_freqs(c, theta) for c in self.bands]
        for name, f in zip(("freq_t", "freq_y", "freq_x"), freqs):
            self.register_buffer(name, f.float(), persistent=False)
        self.head_dim = head_dim

    def angles(self, t: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """cos/sin tables for groups at time positions ``t`` [G], each a (gh x gw) token grid.

        Returns two tensors [G * gh * gw, head_dim // 2], in the token order of the sequence.
        """
        gh, gw = grid
        dev = self.freq_t.device
        t = t.to(device=dev, dtype=torch.float32)
        ys = torch.arange(gh, device=dev, dtype=torch.float32)
        xs = torch.arange(gw, device=dev, dtype=torch.float32)
        n = gh * gw
        ang_t = (t[:, None] * self.freq_t[None]).repeat_interleave(n, dim=0)          # [G*n, ct]
        ang_y = (ys[:, None] * self.freq_y[None]).repeat_interleave(gw, dim=0)         # [n, cy]
        ang_x = (xs[:, None] * self.freq_x[None]).repeat(gh, 1)                         # [n, cx]
        ang_yx = torch.cat([ang_y, ang_x], dim=-1).repeat(t.numel(), 1)                 # [G*n, cy+cx]
        ang = torch.cat([ang_t, ang_yx], dim=-1)
        return ang.cos(), ang.sin()

    @staticmethod
    def apply(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Rotate channel pairs (2i, 2i+1) of x [B, H, L, D] by the angles [L, D/2]."""
        dtype = x.dtype
        x = x.float().unflatten(-1, (-1, 2))
        x0, x1 = x[..., 0], x[..., 1]
        out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
        return out.flatten(-2).to(dtype)
