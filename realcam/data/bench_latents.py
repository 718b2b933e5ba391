"""What training from precomputed latents saves in the loader: frames vs latents of the same samples.

    realcam data bench --latents --height 240 --width 416 --length 81 --num-samples 16 --batch-size 2 \\
        --workers 0 --out latent_loader.json

Shards are rendered once (the ``synthetic`` source, one frame format per row) and encoded into latent shards with
Wan's shapes (16 channels, 8x space, 4x time, ``1 + (T - 1) / 4`` latent frames) by a cheap stand-in encoder, so
no VAE runs here: the loader's cost depends on the latents' shapes and bytes, not on their values. Each round
times one training epoch of ``RealcamDataModule.train_dataloader()`` on the frames, then on the latents
(alternating, so machine load hits both alike); the table gives the median samples/s and the ratio.
"""
from __future__ import annotations

import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from realcam.atomic import write_atomic
from realcam.data.bench import print_table
from realcam.data.encode import encode_shards
from realcam.data.make import make_shards


class WanShapedEncoder:
    """A stand-in with Wan2.1 VAE's shapes: the first frame alone, then the mean of each group of 4 frames, 8x8
    pixel blocks projected to 16 channels by a fixed random matrix. For loader timing only."""

    def __init__(self, channels: int = 16, spatial: int = 8, temporal: int = 4):
        self.spatial, self.temporal = spatial, temporal
        self.proj = torch.randn(channels, 3 * spatial * spatial, generator=torch.Generator().manual_seed(0))

    def latent_frames(self, frames: int) -> int:
        if (frames - 1) % self.temporal:
            raise ValueError(f"frames={frames} does not fit the 1 + {self.temporal}k rule")
        return 1 + (frames - 1) // self.temporal

    def encode(self, video: Tensor) -> Tensor:       # [B, T, 3, H, W] -> [B, F, C, h, w]
        B, T = video.shape[:2]
        rest = video[:, 1:].unflatten(1, ((T - 1) // self.temporal, self.temporal)).mean(2)
        frames = torch.cat([video[:, :1], rest], 1)
        blocks = F.pixel_unshuffle(frames.flatten(0, 1), self.spatial)
        return torch.einsum("oc,nchw->nohw", self.proj, blocks).unflatten(0, (B, -1))


def _epoch(folder: Path, batch_size: int, num_workers: int, batches: int) -> float:
    """samples/s of one training epoch (latents read where the folder holds them)."""
    from realcam.data.datamodule import RealcamDataModule

    dm = RealcamDataModule(train_shards=str(folder / "train-*.tar"), batch_size=batch_size, num_workers=num_workers,
                           train_batches_per_epoch=batches, shuffle_buffer=0, log_corrupt=False,
                           loader_timeout=300.0 if num_workers else 0.0)
    t0, n = time.perf_counter(), 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for batch in dm.train_dataloader():
            n += len(batch["key"])
    return n / (time.perf_counter() - t0)


def benchmark_latent_loader(height: int = 240, width: int = 416, length: int = 81, num_samples: int = 16,
                            batch_size: int = 2, workers: Sequence[int] = (0,),
                            frame_formats: Sequence[str] = ("mp4", "npy"), rounds: int = 3,
                            root: str | Path | None = None) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        for fmt in frame_formats:
            src, out = Path(tmp) / fmt, Path(tmp) / f"{fmt}_latents"
            make_shards(src, num_samples, strategies=("none",), lengths=[length], height=height, width=width,
                        samples_per_shard=max(1, num_samples // 4), frame_format=fmt, progress=False)
            encode_shards(src, out, WanShapedEncoder(), codec_info=dict(name="wan-shaped stand-in"), progress=False)
            mb = {k: sum(p.stat().st_size for p in d.glob("train-*.tar")) / 2**20 for k, d in
                  (("frames", src), ("latents", out))}
            for nw in workers:
                speed: dict[str, list[float]] = {"frames": [], "latents": []}
                for _ in range(rounds):
                    speed["frames"].append(_epoch(src, batch_size, nw, max(1, num_samples // batch_size)))
                    speed["latents"].append(_epoch(out, batch_size, nw, max(1, num_samples // batch_size)))
                frames, latents = statistics.median(speed["frames"]), statistics.median(speed["latents"])
                rows.append(dict(frame_format=fmt, num_workers=nw, batch_size=batch_size, T=length,
                                 size=f"{height}x{width}", frames_mb=round(mb["frames"], 1),
                                 latent_shards_mb=round(mb["latents"], 1), frames_samples_per_s=frames,
                                 latents_samples_per_s=latents, speedup=latents / frames, rounds=rounds))
    return rows


def run_latent_bench(out: str | Path | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """The table, printed; the rows written to ``out`` as JSON."""
    rows = benchmark_latent_loader(**kwargs)
    print_table("training loader: frames vs precomputed latents (RealcamDataModule train stream, median of rounds)",
                rows, ["frame_format", "num_workers", "batch_size", "T", "size", "frames_mb", "latent_shards_mb",
                       "frames_samples_per_s", "latents_samples_per_s", "speedup"])
    if out is not None:
        write_atomic(Path(out), json.dumps({"latent_loader": rows}, indent=1) + "\n")
        print(f"\nwrote {out}")
    return rows
