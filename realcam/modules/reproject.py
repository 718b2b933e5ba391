"""Plane-sweep reprojection of the source: where each target token would find its content in the source
frame if the scene sat at one of a few depths.

A camera encoder tells the network *which* camera the target is; it still has to learn the geometry that
turns that into "look there in the source". This module hands it the answer for a few depth hypotheses:
for every target latent pixel, its ray (target camera) is cut at depth ``d``, the 3D point is projected
into the source camera of the same instant, and the source latents are sampled there (bilinear). One
sample per depth plus an in-view flag per depth, patchified like the latents, go through an MLP whose
output layer starts at zero and is added to the target tokens. The network learns which depth (or mix)
is right per token; no depth is estimated.

Cameras follow the :class:`realcam.modules.cond.Cond` convention: ``target_c2w`` is relative to the pose
reference and the source camera sits at the identity. That is exact for ``pose_reference:
current_source`` (the source camera of each instant *is* the reference); with ``first_source`` the source
is assumed static at the reference. Depths are in the units of the camera translations (metres for the
converters in :mod:`realcam.geometry.io`).

The term is per frame (target frame t reads source frame t only), so block-causal, cached and full
forwards see the same values.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realcam import geometry
from realcam.modules.camera import _fp32, zero_linear
from realcam.modules.patches import patchify


def reproject_grid(target_c2w: Tensor, target_K: Tensor, source_K: Tensor, image_size: tuple[int, int],
                   latent_size: tuple[int, int], depths: Tensor, min_z: float = 1e-3) -> tuple[Tensor, Tensor]:
    """Source sampling positions for every target latent pixel at every depth.

    target_c2w [B, F, 4, 4] (target camera in the source camera's frame), target_K / source_K [B, F, 3, 3]
    (pixels of an ``image_size`` image), depths [D] (z in the target camera).
    Returns (grid [B, F, D, h, w, 2] in ``F.grid_sample`` coordinates (align_corners=False), in front
    [B, F, D, h, w] bool: the point lies in front of the source camera).
    """
    dt = torch.float64 if target_c2w.dtype == torch.float64 else torch.float32
    c2w, Ks, depths = target_c2w.to(dt), source_K.to(dt), depths.to(dt)
    # rays through the latent pixel centres: the target intrinsics rescaled to the latent grid
    rays = geometry.pixel_rays(geometry.resize_intrinsics(target_K.to(dt), image_size, latent_size), *latent_size)
    pts = depths.view(1, 1, -1, 1, 1) * rays[:, :, None]                            # [B, F, D, hw, 3]
    R, t = c2w[..., :3, :3], c2w[..., :3, 3]
    src = torch.einsum("bfij,bfdnj->bfdni", R, pts) + t[:, :, None, None]           # source camera frame
    proj = torch.einsum("bfij,bfdnj->bfdni", Ks, src)
    z = proj[..., 2]
    front = z > min_z
    uv = proj[..., :2] / torch.where(front, z, torch.ones_like(z))[..., None]
    size = torch.tensor(image_size[::-1], dtype=dt, device=c2w.device)       # (W, H)
    grid = torch.where(front[..., None], 2 * uv / size - 1, torch.full_like(uv, 4.0))   # behind: off the image
    B, Fr, D = grid.shape[:3]
    return grid.view(B, Fr, D, *latent_size, 2), front.view(B, Fr, D, *latent_size)


class SourceReprojection(nn.Module):
    """Target-token features from the source sampled at ``depths`` along each target ray.

    ``forward(source [B, F, C, h, w], target_c2w, target_K, source_K, image_size) -> [B, F/pt, n, dim]``.
    """

    def __init__(self, dim: int, in_channels: int, patch: Sequence[int], depths: Sequence[float],
                 hidden: int | None = None):
        super().__init__()
        depths = [float(d) for d in depths]
        if not depths or any(not math.isfinite(d) or d <= 0 for d in depths):
            raise ValueError(f"reproject_depths={depths}: give one or more finite depths > 0 (in the units of "
                             f"the camera translations, e.g. [2.0, 3.5, 6.0, 12.0] for metres)")
        self.dim, self.in_channels, self.patch = dim, in_channels, tuple(patch)
        self.register_buffer("depths", torch.tensor(depths), persistent=False)
        pt, ph, pw = self.patch
        feats = len(depths) * (in_channels + 1) * pt * ph * pw
        hidden = hidden or dim
        self.mlp = nn.Sequential(nn.Linear(feats, hidden), nn.SiLU(), zero_linear(hidden, dim))

    def features(self, source: Tensor, target_c2w: Tensor, target_K: Tensor, source_K: Tensor,
                 image_size: tuple[int, int]) -> Tensor:
        """[B, F, D, C + 1, h, w]: the source sampled at each depth, then the in-view flag (1 where the point
        projects in front of the source camera and inside its image)."""
        B, Fr, C, h, w = source.shape
        with _fp32(source.device):
            grid, front = reproject_grid(target_c2w, target_K, source_K, image_size, (h, w), self.depths)
            D = grid.shape[2]
            sampled = F.grid_sample(source.float().reshape(B * Fr, C, h, w), grid.float().reshape(B * Fr, D * h, w, 2),
                                    mode="bilinear", padding_mode="zeros", align_corners=False)
            sampled = sampled.view(B, Fr, C, D, h, w).transpose(2, 3)
            inside = front & (grid.abs() <= 1).all(-1)
            return torch.cat([sampled, inside[:, :, :, None].float()], dim=3)

    def forward(self, source: Tensor, target_c2w: Tensor, target_K: Tensor, source_K: Tensor,
                image_size: tuple[int, int]) -> Tensor:
        feats = self.features(source, target_c2w, target_K, source_K, image_size)       # [B, F, D, C + 1, h, w]
        tokens = patchify(feats.flatten(2, 3), self.patch)                               # like the latents
        return self.mlp(tokens.to(self.mlp[0].weight.dtype))
