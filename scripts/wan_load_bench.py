"""Load a random real-size Wan2.1-T2V-1.3B saved in diffusers layout (bf16) with realcam.load_pretrained and run
one forward at a small latent with 512 text tokens; prints load time, peak RSS against the weights' size, and the
forward time, and writes JSON (docs/wan.md).

    python scripts/wan_load_bench.py --workdir /tmp/wan13b --out docs/benchmarks/wan_load.json

The random checkpoint is written once, tensor by tensor (never whole in memory), with the shapes and key names
of the real one; the load and the forward then run in a fresh process, so its peak RSS is the loader's own.
"""
from __future__ import annotations

import argparse
import json
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path

import torch

PRESET = "wan2.1-t2v-1.3b"


def write_random_checkpoint(folder: Path, seed: int = 0) -> int:
    """A diffusers folder (config.json + one bf16 safetensors) of random weights with Wan2.1-T2V-1.3B's keys and
    shapes, written tensor by tensor. Returns the weights' size in bytes."""
    from realcam.pretrained import diffusers_config, from_realcam, key_table
    from realcam.registry import BACKBONES

    with torch.device("meta"):
        model = BACKBONES.build(PRESET)
    own = model.state_dict()
    shapes = {theirs: tuple(from_realcam(ours, own[ours], model).shape)
              for ours, theirs in key_table(model.depth, "diffusers").items()}
    header, offset = {}, 0
    for key, shape in shapes.items():
        size = 2 * int(torch.Size(shape).numel())
        header[key] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    tmp = folder / "diffusion_pytorch_model.safetensors.partial"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for key, shape in shapes.items():
            t = (torch.randn(shape, generator=g) * 0.02).to(torch.bfloat16)
            f.write(t.view(-1).view(torch.uint8).numpy().tobytes())
    tmp.rename(folder / "diffusion_pytorch_model.safetensors")
    (folder / "config.json").write_text(json.dumps(diffusers_config(model), indent=2))
    return offset


def measure(folder: Path, latent: int, text_tokens: int, threads: int) -> dict:
    """In this (fresh) process: load, then one forward; peak RSS from the kernel."""
    import realcam
    from realcam.modules.cond import Cond

    torch.set_num_threads(threads)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    model = realcam.load_pretrained(folder, dtype=torch.bfloat16, chunk_frames=1).eval()
    load_s = time.perf_counter() - t0
    load_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    x = torch.randn(1, 1, 16, latent, latent)
    cond = Cond(torch.randn_like(x), torch.eye(4).expand(1, 1, 4, 4), torch.eye(3).expand(1, 1, 3, 3),
                (8 * latent, 8 * latent), text=torch.randn(1, text_tokens, 4096))
    t0 = time.perf_counter()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, torch.full((1, 1), 0.7), cond)
    forward_s = time.perf_counter() - t0
    return {"load_s": load_s, "forward_s": forward_s, "rss_before_load_mib": base / 1024,
            "peak_rss_after_load_mib": load_rss / 1024,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "finite": bool(torch.isfinite(out).all()), "layout": model.pretrained_report["layout"],
            "tokens_per_stream": (latent // 2) ** 2, "text_tokens": text_tokens}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/realcam_wan13b"))
    p.add_argument("--latent", type=int, default=8, help="latent height = width (8: 16 tokens per stream)")
    p.add_argument("--text-tokens", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks/wan_load.json"))
    p.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)    # the child process
    args = p.parse_args()
    folder = args.workdir / "transformer"
    if args.measure:
        print(json.dumps(measure(folder, args.latent, args.text_tokens, args.threads)))
        return
    if not (folder / "config.json").is_file():
        t0 = time.perf_counter()
        write_random_checkpoint(folder)
        print(f"wrote a random {PRESET} to {folder} in {time.perf_counter() - t0:.1f} s")
    weights = (folder / "diffusion_pytorch_model.safetensors").stat().st_size
    child = subprocess.run([sys.executable, __file__, "--measure", "--workdir", str(args.workdir), "--latent",
                            str(args.latent), "--text-tokens", str(args.text_tokens), "--threads", str(args.threads)],
                           check=True, capture_output=True, text=True)
    result = {**json.loads(child.stdout.strip().splitlines()[-1]), "weights_mib": weights / 2 ** 20}
    result["peak_rss_over_weights"] = result["peak_rss_mib"] / result["weights_mib"]
    print("| weights (bf16) | load | peak RSS | peak RSS / weights | forward (16 tokens/stream, 512 text) |")
    print("|---|---|---|---|---|")
    print(f"| {result['weights_mib']:.0f} MiB | {result['load_s']:.1f} s | {result['peak_rss_mib']:.0f} MiB | "
          f"{result['peak_rss_over_weights']:.2f}x | {result['forward_s']:.1f} s |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"preset": PRESET, "threads": args.threads, **result}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
