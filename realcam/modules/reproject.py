"""Plane-sweep reprojection of the source: where each target token would find its content in the source
frame if the scene sat at one of a few depths, and (optionally) the means to copy it from there.

A camera encoder tells the network *which* camera the target is; it still has to learn the geometry that
turns that into "look there in the source". This module hands it the answer for a few depth hypotheses:
for every target latent pixel, its ray (target camera) is cut at depth ``d``, the 3D point is projected
into the source camera of the same instant, and the source latents are sampled there (bilinear). One
sample per depth plus an in-view flag per depth, patchified like the latents, go through an MLP whose
output layer starts at zero and is added to the target tokens. The network learns which depth (or mix)
is right per token; no depth is estimated. With a pixel codec the sampling runs on the pixel grid
(``space_to_depth``), and with ``blend`` the head may take its x0 straight from those samples.

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
    # float64 whatever the input: in float32 the positions carry ~1e-4 px of rounding (depth x ray, then / z), so
    # the identity pose would not sample the source pixels themselves (the copy gate relies on that); it is cheap
    dt = torch.float64
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

    ``forward(source [B, F, C, h, w], target_c2w, target_K, source_K, image_size, keep=None)
    -> (tokens [B, F/pt, n, dim], warp)``, where ``warp`` holds the samples for :meth:`blend`.

    ``space_to_depth`` = f > 1 declares that the latents are an f x f space-to-depth of an image (the pixel
    codec): the channels are unfolded into the f-times finer grid before sampling, so the warp moves
    whole pixels instead of interpolating across f-pixel-wide latent cells, then folded back. Leave it at
    1 for a learned codec (samples in latent space).

    ``blend`` (used by the backbone's ``reproject_blend``): the network may *copy* instead of regenerate.
    The head emits one logit per depth plus one for its own prediction at every sample position; the x0
    estimate is the softmax mix of the warped source at each depth and the generated x0. A sample that
    lands outside the source view (or a dropped camera) gets no weight, so the network regenerates there.

    ``copy_gate`` = tau > 0 adds a parallax-free copy path to :meth:`blend`: where the warped source agrees at
    every depth (largest spread over depths and channels below tau), the depth does not matter, so the pixel is
    copied from the warped source and the generated x0 gets no weight; between 0 and tau the two blend linearly.
    The depths agree everywhere at the identity pose and under a pure rotation (the warp is then a homography
    independent of depth), and on uniform regions under any motion, so there the copy is exact whatever the
    logits say. It has no parameters: a trained model can turn it on at inference.
    """

    def __init__(self, dim: int, in_channels: int, patch: Sequence[int], depths: Sequence[float],
                 hidden: int | None = None, space_to_depth: int = 1, copy_gate: float = 0.0):
        super().__init__()
        if not (math.isfinite(copy_gate) and copy_gate >= 0):
            raise ValueError(f"reproject_copy_gate={copy_gate}: give a tolerance >= 0 in latent units (0 = off; "
                             f"e.g. 0.1 on [-1, 1] pixels)")
        self.copy_gate = float(copy_gate)
        depths = [float(d) for d in depths]
        if not depths or any(not math.isfinite(d) or d <= 0 for d in depths):
            raise ValueError(f"reproject_depths={depths}: give one or more finite depths > 0 (in the units of "
                             f"the camera translations, e.g. [2.0, 3.5, 6.0, 12.0] for metres)")
        f = int(space_to_depth)
        if f < 1 or in_channels % (f * f):
            raise ValueError(f"reproject_space_to_depth={space_to_depth}: needs an integer >= 1 whose square "
                             f"divides in_channels={in_channels} (the pixel codec's factor, or 1)")
        self.dim, self.in_channels, self.patch, self.factor = dim, in_channels, tuple(patch), f
        self.register_buffer("depths", torch.tensor(depths), persistent=False)
        pt, ph, pw = self.patch
        feats = len(depths) * (in_channels + f * f) * pt * ph * pw
        hidden = hidden or dim
        self.mlp = nn.Sequential(nn.Linear(feats, hidden), nn.SiLU(), zero_linear(hidden, dim))

    @property
    def num_depths(self) -> int:
        return self.depths.numel()

    def blend_channels(self) -> int:
        """Logit channels per latent pixel the head emits for :meth:`blend`: (depths + 1) per fine pixel."""
        return (self.num_depths + 1) * self.factor ** 2

    def fine(self, x: Tensor) -> Tensor:
        """[B, F, C, h, w] latents -> [B, F, C / f^2, f h, f w] float32 on the fine grid (f = 1: unchanged)."""
        B, Fr = x.shape[:2]
        return F.pixel_shuffle(x.float().flatten(0, 1), self.factor).unflatten(0, (B, Fr))

    def features(self, source: Tensor, target_c2w: Tensor, target_K: Tensor, source_K: Tensor,
                 image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """(samples [B, F, D, C / f^2, f h, f w], inside [B, F, D, f h, f w]): the source sampled at each depth
        on the fine grid, and where that sample is valid (in front of the source camera, inside its image)."""
        B, Fr, C, h, w = source.shape
        f = self.factor
        with _fp32(source.device):
            fine = self.fine(source).flatten(0, 1)
            H, W = h * f, w * f
            grid, front = reproject_grid(target_c2w, target_K, source_K, image_size, (H, W), self.depths)
            D = grid.shape[2]
            sampled = F.grid_sample(fine, grid.float().reshape(B * Fr, D * H, W, 2),
                                    mode="bilinear", padding_mode="zeros", align_corners=False)
            sampled = sampled.view(B, Fr, C // (f * f), D, H, W).transpose(2, 3)
            inside = front & (grid.abs() <= 1).all(-1)
            return sampled, inside

    def forward(self, source: Tensor, target_c2w: Tensor, target_K: Tensor, source_K: Tensor,
                image_size: tuple[int, int], keep: Tensor | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        sampled, inside = self.features(source, target_c2w, target_K, source_K, image_size)
        if keep is not None:   # a dropped camera gives the blend nothing to copy; its tokens are zeroed with the
            inside = inside & (keep.view(-1, 1, 1, 1, 1) > 0)     # camera embedding, so features need no mask
        B, Fr, D = sampled.shape[:3]
        f = self.factor
        fold = lambda t: F.pixel_unshuffle(t.flatten(0, 2), f).unflatten(0, (B, Fr, D))  # noqa: E731
        feats = torch.cat([fold(sampled), fold(inside[:, :, :, None].float())], dim=3)   # [B, F, D, C + f^2, h, w]
        tokens = patchify(feats.flatten(2, 3), self.patch)                                 # like the latents
        return self.mlp(tokens.to(self.mlp[0].weight.dtype)), (sampled, inside)

    def blend(self, x0: Tensor, logits: Tensor, warp: tuple[Tensor, Tensor]) -> Tensor:
        """x0 [B, F, C, h, w] generated, logits [B, F, (D + 1) f^2, h, w] -> the mixed x0 (float32).

        Weights are a softmax over (depth_1 .. depth_D, generated) at every fine pixel; invalid samples are
        masked out, so where no depth lands inside the source the result is the generated x0 exactly.
        """
        sampled, inside = warp
        B, Fr = x0.shape[:2]
        f, D = self.factor, self.num_depths
        with _fp32(x0.device):
            gen, lg = self.fine(x0), self.fine(logits)                  # [B, F, c, H, W], [B, F, D + 1, H, W]
            valid = torch.cat([inside, torch.ones_like(inside[:, :, :1])], dim=2)
            weight = torch.softmax(lg.masked_fill(~valid, float("-inf")), dim=2)               # [B, F, D+1, H, W]
            mixed = (weight[:, :, :D, None] * sampled).sum(2) + weight[:, :, D:] * gen
            if self.copy_gate > 0:
                mixed = self._copy_where_depths_agree(mixed, lg[:, :, :D], warp)
            return F.pixel_unshuffle(mixed.flatten(0, 1), f).unflatten(0, (B, Fr))

    def copy_weight(self, warp: tuple[Tensor, Tensor]) -> Tensor:
        """[B, F, f h, f w] in [0, 1]: how far each fine pixel's warped samples agree across the depths (1: within
        nothing, 0: spread >= ``copy_gate`` or a depth lands outside the source). See the class docstring."""
        sampled, inside = warp
        spread = (sampled.amax(2) - sampled.amin(2)).amax(2)                                 # [B, F, H, W]
        return (1 - spread / self.copy_gate).clamp(0, 1) * inside.all(2)

    def _copy_where_depths_agree(self, mixed: Tensor, depth_logits: Tensor, warp: tuple[Tensor, Tensor]) -> Tensor:
        sampled, inside = warp
        # the network's own mix over depths (finite fill: a pixel with no valid depth has gate 0 anyway)
        weight = torch.softmax(depth_logits.masked_fill(~inside, -1e9), dim=2)
        copied = (weight[:, :, :, None] * sampled).sum(2)
        gate = self.copy_weight(warp)[:, :, None]
        return gate * copied + (1 - gate) * mixed

    def depth_logits(self, logits: Tensor) -> Tensor:
        """The blend logits [B, F, (D + 1) f^2, h, w] of the depths only, on the fine grid: [B, F, D, f h, f w]."""
        return self.fine(logits)[:, :, :self.num_depths]

    def depth_errors(self, x0: Tensor, warp: tuple[Tensor, Tensor]) -> Tensor:
        """Mean squared error [B, F, D, f h, f w] between the warped source at each depth and the true x0
        [B, F, C, h, w], per fine pixel (``inf`` where the sample is invalid)."""
        sampled, inside = warp
        with _fp32(x0.device):
            err = (sampled - self.fine(x0)[:, :, None]).square().mean(3)
            return err.masked_fill(~inside, float("inf"))
