"""3-D rotary position embedding over (t, y, x), Wan-style split of the head dimension.

The head dim is cut into three bands: time gets ``d - 4*(d//6)`` channels, rows and columns get
``2*(d//6)`` each. Time positions are *group* positions (one per frame of a stream), so a source frame
and the target frame of the same instant share their time index, as the cross-frame layout requires.

Streaming asks for the same few tables over and over (the window-relative positions of a full cache repeat
every chunk), so :meth:`Rope3D.tables` keeps a small cache of ready-to-apply tables.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

TABLE_CACHE_SIZE = 64


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
        self._tables: OrderedDict[tuple, tuple[Tensor, Tensor]] = OrderedDict()

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

    def tables(self, t: Tensor | list[int] | tuple[int, ...], grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Ready-to-apply tables for :meth:`rotate`: ``cos2``, ``sin2`` [G * gh * gw, head_dim].

        Memoized per (positions, grid, device): they are constants, so the cache is safe under autograd too.
        """
        if (isinstance(t, Tensor) and t.device.type == "meta") or self.freq_t.device.type == "meta":
            return self.pair_tables(*self.angles(torch.as_tensor(t), grid))   # shape checks: nothing to keep
        t = tuple(int(v) for v in (t.tolist() if isinstance(t, Tensor) else t))
        key = (t, tuple(grid), self.freq_t.device, self.freq_t.dtype)
        hit = self._tables.get(key)
        if hit is not None:
            self._tables.move_to_end(key)
            return hit
        cos, sin = self.angles(torch.tensor(t, dtype=torch.float32), grid)
        hit = self.pair_tables(cos, sin)
        self._tables[key] = hit
        if len(self._tables) > TABLE_CACHE_SIZE:
            self._tables.popitem(last=False)
        return hit

    @staticmethod
    def pair_tables(cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
        """[L, D/2] angles -> [L, D] tables: cos repeated per channel pair, sin as (-sin, +sin) per pair."""
        return (torch.stack([cos, cos], dim=-1).flatten(-2).contiguous(),
                torch.stack([-sin, sin], dim=-1).flatten(-2).contiguous())

    @staticmethod
    def rotate(x: Tensor, cos2: Tensor, sin2: Tensor) -> Tensor:
        """Rotate channel pairs (2i, 2i+1) of x [B, H, L, D] with tables from :meth:`tables`.

        out = x * cos2 + swap_pairs(x) * sin2, i.e. (x0 cos - x1 sin, x1 cos + x0 sin): bit for bit what
        :meth:`apply` computes (negation is exact and both are single-rounded products and sums), with half
        the kernels.
        """
        dtype = x.dtype
        x = x.float()
        pairs = x.unflatten(-1, (-1, 2))
        swapped = torch.stack([pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)   # stack: 2x faster than flip
        return (x * cos2 + swapped * sin2).to(dtype)

    @staticmethod
    def apply(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Rotate channel pairs (2i, 2i+1) of x [B, H, L, D] by the angles [L, D/2]."""
        dtype = x.dtype
        x = x.float().unflatten(-1, (-1, 2))
        x0, x1 = x[..., 0], x[..., 1]
        out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
        return out.flatten(-2).to(dtype)
