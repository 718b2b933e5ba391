"""Latency of a stream through Wan's VAE, in frames and in ms: ``realcam stream`` on the ReCamMaster fixture video
with a tiny-wan bundle (random weights) on the tiny random Wan VAE of the tests, 3 latent frames per chunk (the
wan1.3b recipe's chunk). Prints a table per chunk (video frames in, compute ms) and
the stream's latency summary, and writes JSON (docs/streaming.md, "Wan bundles").

Usage, from the repository root:
    python scripts/diagnostics/wan_stream_latency.py --out runs/wan_stream_latency.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from realcam.atomic import write_atomic
from realcam.bundle import export_bundle
from realcam.registry import BACKBONES

VIDEO = Path("../shared/fixtures/recammaster/videos/10.mp4")


def tiny_wan_bundle(folder: Path, vae_dir: Path, chunk_frames: int, size: int, fps: float) -> Path:
    """A tiny-wan student with every weight drawn at random (0.3 std) on the tiny VAE, with a random prompt."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))     # the repository root, for tests/
    from realcam.tiny_wan import make_tiny_wan_vae

    make_tiny_wan_vae().save_pretrained(vae_dir / "vae")
    args = dict(attention_mode="causal", chunk_frames=chunk_frames, window_chunks=2)
    network = BACKBONES.build("tiny-wan", **args)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in network.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    config = {"network": "tiny-wan", "network_args": args, "shift": 5.0, "denoising_steps": [1000, 750, 500, 250],
              "codec": {"class_path": "realcam.modules.wan_vae.WanCodec", "init_args": {"path": str(vae_dir)}},
              "pose_reference": "current_source", "image_size": [size, size], "fps": fps, "role": "student",
              "provenance": {"commands": ["scripts/diagnostics/wan_stream_latency.py: random tiny-wan"]}}
    return export_bundle(network, folder, config, text=torch.randn(8, network.text_dim, generator=g))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--video", type=Path, default=VIDEO)
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--chunk-frames", type=int, default=3)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--out", type=Path, default=Path("runs/wan_stream_latency.json"))
    args = p.parse_args()
    from realcam.cli import main as realcam

    with tempfile.TemporaryDirectory() as tmp:
        bundle = tiny_wan_bundle(Path(tmp) / "bundle", Path(tmp) / "vae", args.chunk_frames, args.size, 30.0)
        report = Path(tmp) / "stream.json"
        rc = realcam(["stream", "--bundle", str(bundle), "--video", str(args.video), "--trajectory", "arc:left:20",
                      "--frames", str(args.frames), "--steps", str(args.steps), "--out", str(Path(tmp) / "o.mp4"),
                      "--json", str(report), "--quiet"])
        if rc:
            raise SystemExit(rc)
        result = json.loads(report.read_text())
    s = result["stats"]
    sizes = [1 + 4 * (args.chunk_frames - 1)] + [4 * args.chunk_frames] * (s["chunks"] - 1)
    print("| chunk | video frames | compute ms |\n|---|---|---|")
    for i, (n, ms) in enumerate(zip(sizes, s["chunk_ms"])):
        print(f"| {i} | {n} | {ms:.1f} |")
    keys = ("frames", "chunks", "frames_past_last_chunk", "buffer_latency_frames", "buffer_latency_ms",
            "chunk_compute_ms_mean", "chunk_compute_ms_max", "frame_latency_ms_max", "time_to_first_frame_ms")
    summary = {k: result.get(k, s.get(k)) for k in keys}
    print("\n".join(f"{k}: {v:.1f}" if isinstance(v, float) else f"{k}: {v}" for k, v in summary.items()))
    body = {"command": "scripts/diagnostics/wan_stream_latency.py", "args": {k: str(v) for k, v in vars(args).items()},
            "summary": summary, "chunk_video_frames": sizes, "chunk_ms": s["chunk_ms"], "machine": result["machine"]}
    print("wrote", write_atomic(args.out, json.dumps(body, indent=2)))


if __name__ == "__main__":
    main()
