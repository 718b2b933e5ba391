"""The sizes, recipe values, time budget and random networks that ``realcam bench gpu``'s items share
(:mod:`realcam.bench.gpu` runs the streaming and VAE items, :mod:`realcam.bench.gpu_train` the training ones)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from realcam.bench._common import randomize_
from realcam.registry import BACKBONES


@dataclass(frozen=True)
class Profile:
    """The sizes of one run. ``grid``: streaming latents (h, w); ``train_grid`` / ``train_frames``: the training
    items' latents; ``text_tokens``: prompt length; ``vae``: ``full`` (diffusers' defaults) or ``tiny``."""

    preset: str
    grid: tuple[int, int]
    text_tokens: int
    vae: str
    train_grid: tuple[int, int]
    train_frames: int
    timed_chunks: int
    vae_chunks: int
    dtype: str
    model_args: tuple = ()
    item_s: float = 0.0       # about how long an item takes: one is not started with less budget left


PROFILES = {
    "full": Profile("wan2.1-t2v-1.3b", (60, 104), 512, "full", (16, 16), 6, timed_chunks=8, vae_chunks=4,
                    dtype="bf16", item_s=20.0),
    # chunk_frames 3 as the recipe (tiny-wan's own preset streams one latent frame per chunk)
    "tiny": Profile("tiny-wan", (4, 4), 8, "tiny", (4, 4), 3, timed_chunks=4, vae_chunks=2, dtype="bf16",
                    model_args=(("chunk_frames", 3),)),
}
SHIFT, STEPS = 5.0, (1000, 750, 500, 250)       # the wan1.3b recipe


class Budget:
    """The run's wall-clock deadline: items that cannot start are skipped, timed loops stop early."""

    def __init__(self, seconds: float):
        self.seconds, self.start = float(seconds), time.monotonic()

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)


def random_network(profile: Profile, device: torch.device, **options):
    """A network of the profile's preset with random weights (zero-initialized outputs drawn too), built straight
    on ``device``: a 1.3B model initializes there in seconds instead of about 20 s on a CPU. A module that cannot be
    built under a device context is built on the CPU and moved."""
    kwargs = {**dict(profile.model_args), **options}
    try:
        with torch.device(device):
            net = BACKBONES.build(profile.preset, **kwargs)
    except Exception:
        net = BACKBONES.build(profile.preset, **kwargs).to(device)
    return randomize_(net)
