"""Latent codecs: video [B, T, 3, H, W] in [-1, 1] <-> latents [B, F, C, h, w].

The backbone only sees latents, so a VAE (Wan's, a tiny decoder, ...) drops in as another registry
entry without touching it. Every codec states its channel count and compression factors, and hands out a
:class:`CodecStream` that encodes and decodes chunk by chunk with the same result as the offline calls.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch.nn.functional as F
from torch import Tensor, nn

from realcam.registry import CODECS


class CodecStream(ABC):
    """One video stream, chunk by chunk: the concatenated results equal the codec's offline ``encode`` /
    ``decode`` of the concatenated inputs. Encoding and decoding keep separate state, so one stream can encode
    a source while it decodes a target."""

    @abstractmethod
    def encode_chunk(self, video: Tensor) -> Tensor:
        """The next frames [B, n, 3, H, W] -> their latent frames [B, m, C, h, w]."""

    @abstractmethod
    def decode_chunk(self, latents: Tensor) -> Tensor:
        """The next latent frames [B, m, C, h, w] -> their video frames [B, n, 3, H, W]."""

    def snapshot(self) -> dict:
        """Everything :meth:`restore` needs to undo the calls that come after (a streaming chunk that fails half
        way leaves no trace): every attribute, lists and dicts copied one level deep. Enough for streams that
        replace their cached tensors rather than write into them (diffusers' Wan feature caches assign new ones);
        a stream that writes into its state in place overrides both methods."""
        return {name: _shallow_copy(value) for name, value in vars(self).items()}

    def restore(self, snapshot: dict) -> None:
        """Go back to a :meth:`snapshot`."""
        self.__dict__.update({name: _shallow_copy(value) for name, value in snapshot.items()})


def _shallow_copy(value):
    return list(value) if isinstance(value, list) else dict(value) if isinstance(value, dict) else value


class LatentCodec(nn.Module, ABC):
    """Base class: subclasses set the three attributes and implement encode/decode.

    ``first_frame_alone``: a causal video VAE (Wan's) codes the first frame into a latent frame of its own and
    then ``temporal_factor`` frames per latent frame, so a clip has ``1 + temporal_factor * k`` frames.
    """

    latent_channels: int
    spatial_factor: int
    temporal_factor: int
    first_frame_alone: bool = False

    @abstractmethod
    def encode(self, video: Tensor) -> Tensor:
        """[B, T, 3, H, W] in [-1, 1] -> [B, F, C, h, w]."""

    @abstractmethod
    def decode(self, latents: Tensor) -> Tensor:
        """[B, F, C, h, w] -> [B, T, 3, H, W] in [-1, 1] (approximately, for lossy codecs)."""

    def stream(self) -> CodecStream:
        """A fresh chunk-by-chunk state. Frame-wise codecs (temporal_factor 1) have nothing to carry."""
        if self.temporal_factor != 1:
            raise NotImplementedError(f"{type(self).__name__} compresses time (temporal_factor="
                                      f"{self.temporal_factor}) and must implement stream() itself")
        return FramewiseStream(self)

    def latent_frames(self, frames: int) -> int:
        """F latent frames for T video frames, or a ValueError naming the rule T must follow."""
        tf = self.temporal_factor
        if self.first_frame_alone:
            if frames < 1 or (frames - 1) % tf:
                below = 1 + tf * max(0, (frames - 1) // tf)
                raise ValueError(f"frames={frames} does not fit the 1 + {tf}k rule of {type(self).__name__} (a first "
                                 f"frame alone, then {tf} frames per latent frame): use {below} or {below + tf} "
                                 f"frames")
            return 1 + (frames - 1) // tf
        if frames < 1 or (frames - 1) % tf and frames % tf:
            raise ValueError(f"frames={frames} does not fit temporal factor {tf}")
        return -(-frames // tf)

    def pose_frames(self, latent_frames: int, start: int = 0) -> list[int]:
        """The video frame whose camera latent frame ``i`` takes, for ``i`` in ``[start, start + latent_frames)``:
        frame ``temporal_factor * i``. With Wan's VAE that is frame 0 for the first latent frame (it holds frame 0
        alone), then the last frame of each group of 4 (frames 1-4 -> 4, 5-8 -> 8, ...): ReCamMaster's sampling of
        one camera per 4 frames (``cameras[::4]``, 21 of 81). Training (``prepare_batch``) and streaming use it."""
        return [self.temporal_factor * i for i in range(start, start + latent_frames)]

    def video_frames(self, latent_frames: int) -> int:
        """T video frames decoded from F latent frames."""
        tf = self.temporal_factor
        return 1 + tf * (latent_frames - 1) if self.first_frame_alone else tf * latent_frames

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(F, C, h, w) for a video of the given size; checks divisibility with a clear error."""
        f = self.spatial_factor
        if height % f or width % f:
            raise ValueError(
                f"video size {height}x{width} is not divisible by the codec's spatial factor {f}; "
                f"resize or crop to a multiple of {f}"
            )
        return (self.latent_frames(frames), self.latent_channels, height // f, width // f)


class FramewiseStream(CodecStream):
    """The stream of a codec that codes each frame on its own: chunks go straight through encode / decode."""

    def __init__(self, codec: LatentCodec):
        self.codec = codec

    def encode_chunk(self, video: Tensor) -> Tensor:
        return self.codec.encode(video)

    def decode_chunk(self, latents: Tensor) -> Tensor:
        return self.codec.decode(latents)


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
