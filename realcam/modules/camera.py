"""Camera encoders: relative target cameras -> embeddings added onto tokens.

Every encoder maps ``c2w [B, F, 4, 4]`` (relative to the pose reference, OpenCV) and intrinsics
``K [B, F, 3, 3]`` (pixels of an ``image_size`` image) to ``[B, F, n, dim]`` with ``n`` either the
number of tokens per frame (per-token encoders) or 1 (per-frame encoders, broadcast over tokens).
Output projections start at zero, so a fresh encoder leaves a pretrained backbone unchanged.

A *per-block* encoder (:class:`BlockCameraEncoder`, e.g. ReCamMaster's ``recammaster``) instead returns one
embedding per block, ``[depth, B, F, 1, dim]``, which every block adds to its self-attention input, and maps
each block's self-attention output through :meth:`BlockCameraEncoder.project` (the identity at init).

Write your own by subclassing :class:`CameraEncoder`; register it with
``@CAMERA_ENCODERS.register("name")`` or reference it by ``class_path`` in YAML.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import nullcontext

import torch
from torch import Tensor, nn

from realcam import geometry
from realcam.registry import CAMERA_ENCODERS


class CameraEncoder(nn.Module, ABC):
    """Base class. ``dim`` must equal the backbone width; the backbone checks it."""

    per_block = False       # True: the embedding goes inside every block (BlockCameraEncoder), not onto the input

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    @abstractmethod
    def forward(self, c2w: Tensor, K: Tensor, image_size: tuple[int, int], grid: tuple[int, int]) -> Tensor:
        """c2w [B, F, 4, 4], K [B, F, 3, 3] -> [B, F, gh*gw or 1, dim]."""


def _fp32(device: torch.device):
    """Disable autocast on real devices (``meta``, used for shape checks, has no autocast)."""
    return nullcontext() if device.type == "meta" else torch.autocast(device_type=device.type, enabled=False)


def zero_linear(fan_in: int, fan_out: int) -> nn.Linear:
    layer = nn.Linear(fan_in, fan_out)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


@CAMERA_ENCODERS.register("plucker")
class PluckerEncoder(CameraEncoder):
    """Per-token Plücker rays (o x d, d), sampled ``rays_per_token`` x ``rays_per_token`` inside each
    token's footprint, flattened (6 * r * r features), then an MLP with a zero-initialized output."""

    def __init__(self, dim: int, rays_per_token: int = 2, hidden: int | None = None):
        super().__init__(dim)
        self.rays_per_token = rays_per_token
        feat = 6 * rays_per_token**2
        hidden = hidden or dim
        self.mlp = nn.Sequential(nn.Linear(feat, hidden), nn.SiLU(), zero_linear(hidden, dim))

    def forward(self, c2w: Tensor, K: Tensor, image_size: tuple[int, int], grid: tuple[int, int]) -> Tensor:
        r = self.rays_per_token
        gh, gw = grid
        # Rays on an (gh*r, gw*r) grid spanning the whole image: intrinsics rescaled to that grid.
        # Ray geometry stays in fp32 even under bf16 autocast: directions and moments lose too much in bf16.
        with _fp32(c2w.device):
            K_grid = geometry.resize_intrinsics(K.float(), image_size, (gh * r, gw * r))
            rays = geometry.plucker_rays(c2w.float(), K_grid, gh * r, gw * r)     # [B, F, 6, gh*r, gw*r]
        B, Fr = rays.shape[:2]
        rays = rays.view(B, Fr, 6, gh, r, gw, r).permute(0, 1, 3, 5, 2, 4, 6)    # [B, F, gh, gw, 6, r, r]
        feats = rays.reshape(B, Fr, gh * gw, 6 * r * r)
        return self.mlp(feats.to(self.mlp[0].weight.dtype))


@CAMERA_ENCODERS.register("extrinsics_mlp")
class ExtrinsicsMLPEncoder(CameraEncoder):
    """The relative 3x4 pose (optionally with intrinsics normalized by the image size) through an MLP
    to one vector per frame; zero-initialized output, broadcast over the frame's tokens."""

    def __init__(self, dim: int, use_intrinsics: bool = True, hidden: int | None = None):
        super().__init__(dim)
        self.use_intrinsics = use_intrinsics
        feat = 12 + (4 if use_intrinsics else 0)
        hidden = hidden or dim
        self.mlp = nn.Sequential(nn.Linear(feat, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 zero_linear(hidden, dim))

    def forward(self, c2w: Tensor, K: Tensor, image_size: tuple[int, int], grid: tuple[int, int]) -> Tensor:
        feats = [c2w[..., :3, :4].flatten(-2).float()]
        if self.use_intrinsics:
            h, w = image_size
            norm = torch.tensor([w, h, w, h], dtype=torch.float32, device=K.device)
            feats.append(torch.stack([K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2]], -1).float() / norm)
        x = torch.cat(feats, dim=-1)
        return self.mlp(x.to(self.mlp[0].weight.dtype)).unsqueeze(2)


class BlockCameraEncoder(CameraEncoder):
    """A camera encoder that acts inside every one of the backbone's ``depth`` blocks: ``forward`` returns
    ``[depth, B, F, 1, dim]`` (block i adds row i to its modulated self-attention input) and :meth:`project`
    maps block i's self-attention output. At init the embedding is zero and ``project`` the identity."""

    per_block = True

    def __init__(self, dim: int, depth: int):
        super().__init__(dim)
        self.depth = depth

    @abstractmethod
    def project(self, block: int, out: Tensor) -> Tensor:
        """Block ``block``'s self-attention output [B, N, dim] -> [B, N, dim]."""


def identity_linear(dim: int) -> nn.Linear:
    layer = nn.Linear(dim, dim)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(dim))
    nn.init.zeros_(layer.bias)
    return layer


@CAMERA_ENCODERS.register("recammaster")
class ReCamMasterEncoder(BlockCameraEncoder):
    """ReCamMaster's camera injection: per block a zero-initialized ``cam_encoder`` Linear(12 -> dim) of the
    flattened 3x4 [R | t] (row-major), added to the modulated ``norm1`` output before self-attention, and a
    ``projector`` Linear(dim -> dim), the identity at init, on the self-attention output. One vector per frame,
    broadcast over its tokens; intrinsics are not used. ``depth`` must equal the backbone's (the backbone passes
    it when built by name). Its weights load from ReCamMaster's ``blocks.N.cam_encoder`` / ``blocks.N.projector``
    (docs/wan.md)."""

    def __init__(self, dim: int, depth: int = 1):
        super().__init__(dim, depth)
        self.cam_encoder = nn.ModuleList(zero_linear(12, dim) for _ in range(depth))
        self.projector = nn.ModuleList(identity_linear(dim) for _ in range(depth))

    def forward(self, c2w: Tensor, K: Tensor, image_size: tuple[int, int], grid: tuple[int, int]) -> Tensor:
        feats = c2w[..., :3, :4].flatten(-2)                                           # [B, F, 12]
        return torch.stack([enc(feats.to(enc.weight.dtype)) for enc in self.cam_encoder]).unsqueeze(3)

    def project(self, block: int, out: Tensor) -> Tensor:
        return self.projector[block](out)
