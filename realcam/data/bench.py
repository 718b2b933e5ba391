"""Data throughput: the synthetic renderer (clips/s) and the shard loader (samples/s), tiny preset by default,
and, given a real video, what each shard frame format costs on it (bytes, encode/decode time, PSNR).

    realcam data bench --out bench.json
    realcam data bench --codec-video clip.mp4 --codec-size 480x832 --codec-frames 81

The loader is timed on shards it first writes from the real ``synthetic`` source and LoopAug strategies, per
frame format and ``num_workers``. Each row iterates two training epochs of the same DataModule: the first
includes worker start-up (``first_epoch_s``); ``samples_per_s`` is the second, steady one (workers persist).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from realcam.data.make import make_shards


def print_table(title: str, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))


def benchmark_loader(height: int = 64, width: int = 64, length: int = 16, num_samples: int = 64,
                     batch_size: int = 8, workers: Sequence[int] = (0, 2),
                     frame_formats: Sequence[str] = ("npy", "png", "mp4"),
                     strategies: Sequence[str] = ("pingpong", "orbit_return", "none"), seed: int = 0,
                     root: str | Path | None = None) -> list[dict[str, Any]]:
    """samples/s of ``RealcamDataModule.train_dataloader()`` (decode + [-1, 1] batches, no resize) per row."""
    import warnings

    from realcam.data.datamodule import RealcamDataModule

    rows = []
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        for fmt in frame_formats:
            out = Path(tmp) / fmt
            made = make_shards(out, num_samples, strategies=strategies, lengths=[length], height=height,
                               width=width, seed=seed, samples_per_shard=max(1, num_samples // 8),
                               frame_format=fmt, progress=False)
            shard_mb = sum(s["bytes"] for s in made["shards"]) / 2**20
            for nw in workers:
                dm = RealcamDataModule(train_shards=str(out / "train-*.tar"), batch_size=batch_size, num_workers=nw,
                                       train_batches_per_epoch=max(1, num_samples // batch_size), shuffle_buffer=0,
                                       persistent_workers=True, loader_timeout=120.0 if nw else 0.0,
                                       log_corrupt=False)
                loader = dm.train_dataloader()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    times, counts = [], []
                    for _ in range(2):
                        t0, n = time.perf_counter(), 0
                        for batch in loader:
                            n += batch["source"].shape[0]
                        times.append(time.perf_counter() - t0)
                        counts.append(n)
                rows.append(dict(frame_format=fmt, num_workers=nw, batch_size=batch_size, T=length,
                                 size=f"{height}x{width}", shards_mb=round(shard_mb, 2), samples=counts[1],
                                 first_epoch_s=times[0], steady_epoch_s=times[1],
                                 samples_per_s=counts[1] / times[1]))
    return rows


def benchmark_frame_codecs(frames: torch.Tensor, crfs: Sequence[int] = (0, 10, 18),
                           repeats: int = 3) -> list[dict[str, Any]]:
    """One stream of uint8 frames [T, H, W, 3] stored as each shard frame format (npy, png, mp4 at each crf):
    bytes, ratio to npy, encode and decode seconds (median of ``repeats``), PSNR of the decoded stream."""
    import statistics

    import numpy as np
    from tqdm import tqdm

    from realcam.data.shards import FRAME_LOADERS, _npy_bytes, _png_bytes
    from realcam.data.video import encode_video_bytes

    x = frames.numpy()
    shape = tuple(x.shape)
    cases = [("npy", None, _npy_bytes), ("png", None, _png_bytes)]
    cases += [("mp4", crf, lambda a, crf=crf: encode_video_bytes(a, crf=crf)) for crf in crfs]
    raw = x.nbytes
    rows = []
    for fmt, crf, encode in tqdm(cases, desc="frame formats", unit="case", leave=False):
        enc, dec = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            data = encode(x)
            enc.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            back = FRAME_LOADERS[fmt](data, f"stream.{fmt}", shape)
            dec.append(time.perf_counter() - t0)
        mse = float(np.mean((back.astype(np.float64) - x) ** 2))       # over the whole stream
        psnr = 10 * np.log10(255.0**2 / mse) if mse > 0 else 100.0       # capped like realcam.metrics
        rows.append(dict(frame_format=fmt, frame_crf=crf, frames=shape[0], size=f"{shape[1]}x{shape[2]}",
                         mb=len(data) / 2**20, ratio_to_npy=raw / len(data), encode_s=statistics.median(enc),
                         decode_s=statistics.median(dec), psnr=psnr, lossless=bool(np.array_equal(back, x))))
    return rows


def run_bench(out: str | Path | None = None, height: int = 64, width: int = 64, length: int = 16,
              num_samples: int = 64, batch_size: int = 8, workers: Sequence[int] = (0, 2),
              render_repeats: int = 5, codec_video: str | Path | None = None,
              codec_size: tuple[int, int] | None = None, codec_frames: int = 81) -> dict[str, Any]:
    """The tables, printed; returns (and writes to ``out`` as JSON) ``{"machine", "render", "loader"}`` plus
    ``"frame_codecs"`` when ``codec_video`` is given."""
    from realcam.data.synthetic import benchmark_render

    render = benchmark_render(num_cameras=4, num_frames=length, height=height, width=width, repeats=render_repeats)
    print_table("synthetic renderer (SyntheticSource.clip: scene + rig + render, 4 cameras)", [render],
                ["num_cameras", "num_frames", "height", "width", "seconds_per_clip_median", "clips_per_second",
                 "frames_per_second"])
    loader = benchmark_loader(height, width, length, num_samples, batch_size, workers)
    print_table("shard loader (RealcamDataModule train stream)", loader,
                ["frame_format", "num_workers", "batch_size", "T", "size", "shards_mb", "first_epoch_s",
                 "samples_per_s"])
    result = {"machine": {"torch": torch.__version__, "cpu_count": os.cpu_count(), "threads": torch.get_num_threads()},
              "render": render, "loader": loader}
    if codec_video is not None:
        from realcam.data.video import read_video

        frames = read_video(codec_video, stop=codec_frames, size=codec_size)
        codecs = benchmark_frame_codecs(frames)
        print_table(f"shard frame formats on {Path(codec_video).name} ({len(frames)} frames, one stream)", codecs,
                    ["frame_format", "frame_crf", "size", "mb", "ratio_to_npy", "encode_s", "decode_s", "psnr",
                     "lossless"])
        result["frame_codecs"] = {"video": str(codec_video), "rows": codecs}
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"\nwrote {out}")
    return result
