"""The conditioning bundle every denoiser call carries: clean source latents and target cameras."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor


@dataclass
class Cond:
    """Conditions for ``denoiser(x, sigma, cond)``; all per-frame fields are aligned with ``x``'s frames.

    source      [B, F, C, h, w]  clean source latents (the source stream is never noised)
    target_c2w  [B, F, 4, 4]     target cameras relative to the pose reference (OpenCV c2w)
    target_K    [B, F, 3, 3]     target intrinsics in pixels of an ``image_size`` image
    source_K    [B, F, 3, 3]     source intrinsics (defaults to target_K)
    camera_keep [B]              1 keeps the target camera, 0 drops it (classifier-free guidance)
    text        [B, L, text_dim] the prompt's text embeddings (umT5 outputs, L <= 512), for backbones with text
    """

    source: Tensor
    target_c2w: Tensor
    target_K: Tensor
    image_size: tuple[int, int]
    source_K: Tensor | None = None
    camera_keep: Tensor | None = None
    text: Tensor | None = None

    def __post_init__(self) -> None:
        B, F = self.source.shape[:2]
        for name in ("target_c2w", "target_K", "source_K"):
            value = getattr(self, name)
            if value is None:
                continue
            want = (B, F, 4, 4) if name == "target_c2w" else (B, F, 3, 3)
            if tuple(value.shape) != want:
                raise ValueError(f"cond.{name} has shape {tuple(value.shape)}, expected {want} to match source")
        if self.text is not None and (self.text.ndim != 3 or self.text.shape[0] != B):
            raise ValueError(f"cond.text has shape {tuple(self.text.shape)}, expected [B={B}, L, text_dim] "
                             f"(the prompt's text embeddings)")

    @property
    def num_frames(self) -> int:
        return self.source.shape[1]

    def frames(self, start: int, stop: int) -> "Cond":
        """The same conditions restricted to frames [start, stop) (a chunk)."""
        sl = slice(start, stop)
        return replace(
            self,
            source=self.source[:, sl],
            target_c2w=self.target_c2w[:, sl],
            target_K=self.target_K[:, sl],
            source_K=None if self.source_K is None else self.source_K[:, sl],
        )

    def without_camera(self) -> "Cond":
        """The unconditional branch of classifier-free guidance: target camera dropped."""
        return replace(self, camera_keep=torch.zeros(self.source.shape[0], device=self.source.device))

    def to(self, device: torch.device | str) -> "Cond":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, source=move(self.source), target_c2w=move(self.target_c2w),
                       target_K=move(self.target_K), source_K=move(self.source_K),
                       camera_keep=move(self.camera_keep), text=move(self.text))
