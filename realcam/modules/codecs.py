"""Latent codecs: video [B, T, 3, H, W] in [-1, 1] <-> latents [B, F, C, h, w].

The backbone only sees latents, so a VAE (Wan's, a tiny decoder, ...) drops in as another registry
entry without touching it. Every codec states its channel count and compression factors.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch.nn.functional as F
from torch import Tensor, nn

from realcam.registry import CODECS


class LatentCodec(nn.Module, ABC):
    """Base class: subclasses set the three attributes and implement encode/decode."""

    latent_channels: int
    spatial_factor: int
    temporal_factor: int

    @abstractmethod
    def encode(self, video: Tensor) -> Tensor:
        """[B, T, 3, H, W] in [-1, 1] -> [B, F, C, h, w]."""

    @abstractmethod
    def decode(self, latents: Tensor) -> Tensor:
        """[B, F, C, h, w] -> [B, T, 3, H, W] in [-1, 1] (approximately, for lossy codecs)."""

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(F, C, h, w) for a video of the given size; checks divisibility with a clear error."""
        f = self.spatial_factor
        if height % f or width % f:
            raise ValueError(
                f"video size {height}x{width} is not divisible by the codec's spatial factor {f}; "
                f"resize or crop to a multiple of {f}"
            )
        if (frames - 1) % self.temporal_factor and frames % self.temporal_factor:
            raise ValueError(f"frames={frames} does not fit temporal factor {self.temporal_factor}")
        return (-(-frames // self.temporal_factor), self.latent_channels, height // f, width // f)


@CODECS.register("pixel")
class PixelCodec(LatentCodec):
    """Frames patchified directly: space-to-depth by ``factor``, lossless and parameter-free."""

    def __init__(self, factor: int = 4, channels: int = 3):
        super().__init__()
        if factor < 1:
            raise ValueError(f"factor={factor} must be >= 1")
        self.factor = factor
        self.channels = channels
        self.latent_channels = channels * factor * factor
        self.spatial_factor = factor
        self.temporal_factor = 1

    def encode(self, video: Tensor) -> Tensor:
        self.latent_shape(video.shape[1], video.shape[-2], video.shape[-1])
        return F.pixel_unshuffle(video.flatten(0, 1), self.factor).unflatten(0, video.shape[:2])

    def decode(self, latents: Tensor) -> Tensor:
        return F.pixel_shuffle(latents.flatten(0, 1), self.factor).unflatten(0, latents.shape[:2])
