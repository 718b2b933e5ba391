"""The wan codec at Wan2.1's real size, random weights: load from both checkpoint layouts, then stream.

    python scripts/wan_vae_check.py --out docs/benchmarks/wan_vae.json

1. Builds a random real-size ``AutoencoderKLWan`` (126.9 M parameters) and saves it twice into a temporary
   folder: as a diffusers ``vae/`` folder (save_pretrained) and as an original-layout ``Wan2.1_VAE.pth``
   (renamed by the reverse of the loader's mapping).
2. Loads each through ``WanCodec`` in a fresh process and reports the load time, the process's peak RSS and a
   checksum of the loaded weights (the two layouts must agree).
3. Streams a clip of 1 + 4 * chunks frames at --size through ``codec.stream()``: seconds per encode and decode
   call, and the largest difference to the offline encode / decode.

Prints a table and writes the numbers as JSON with --out.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _rss_gib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, from /proc (Linux)."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1]) / 2**20


def _load(path: str) -> dict:
    """In a fresh process: load the codec; its time, the RSS before, the peak during the load (the peak is reset
    after the imports, which peak on their own) and after touching every weight, and a weight checksum."""
    from diffusers import AutoencoderKLWan  # noqa: F401  (imported before the clock and the baseline)

    from realcam.modules.wan_vae import WanCodec

    Path("/proc/self/clear_refs").write_text("5")               # reset VmHWM to the current RSS
    before = _rss_gib("VmRSS")
    start = time.perf_counter()
    codec = WanCodec(path)
    seconds = time.perf_counter() - start
    peak = _rss_gib("VmHWM")
    state = codec.vae.state_dict()
    checksum = sum(float(t.double().sum()) * (i + 1) for i, (_, t) in enumerate(sorted(state.items())))
    return dict(seconds=seconds, rss_before_gib=before, peak_rss_during_load_gib=peak, rss_after_gib=_rss_gib("VmRSS"),
                tensors=len(state), params=sum(t.numel() for t in state.values()), checksum=checksum)


def _stream(codec, size: tuple[int, int], chunks: int) -> dict:
    video = torch.rand(1, 1 + 4 * chunks, 3, *size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    stream, enc_s, dec_s, latents, frames = codec.stream(), [], [], [], []
    with torch.no_grad():
        for piece in [video[:, :1]] + list(video[:, 1:].split(4, dim=1)):
            start = time.perf_counter()
            latents.append(stream.encode_chunk(piece))
            enc_s.append(time.perf_counter() - start)
        for z in latents:
            start = time.perf_counter()
            frames.append(stream.decode_chunk(z))
            dec_s.append(time.perf_counter() - start)
        offline = codec.encode(video)
        enc_err = float((torch.cat(latents, 1) - offline).abs().max())
        dec_err = float((torch.cat(frames, 1) - codec.decode(offline)).abs().max())
    return dict(size=list(size), frames=video.shape[1], encode_first_s=enc_s[0],
                encode_chunk_s=sum(enc_s[1:]) / chunks,
                decode_first_s=dec_s[0], decode_chunk_s=sum(dec_s[1:]) / chunks, encode_max_abs_diff=enc_err,
                decode_max_abs_diff=dec_err)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--size", default="64x64", help="HxW of the streamed clip (multiples of 8)")
    parser.add_argument("--chunks", type=int, default=2, help="4-frame chunks after the first frame")
    parser.add_argument("--load", help=argparse.SUPPRESS)           # internal: the child process
    args = parser.parse_args()
    if args.load:
        print(json.dumps(_load(args.load)))
        return
    from diffusers import AutoencoderKLWan

    from realcam.modules.wan_vae import WanCodec, diffusers_to_original

    torch.manual_seed(0)
    vae = AutoencoderKLWan().eval()
    results: dict = {"params": sum(p.numel() for p in vae.parameters())}
    with tempfile.TemporaryDirectory() as tmp:
        vae.save_pretrained(Path(tmp) / "vae")
        torch.save({diffusers_to_original(k, 2): v for k, v in vae.state_dict().items()}, Path(tmp) / "Wan2.1_VAE.pth")
        del vae
        for name, path in (("diffusers folder", Path(tmp)), ("original .pth", Path(tmp) / "Wan2.1_VAE.pth")):
            child = subprocess.run([sys.executable, __file__, "--load", str(path)], capture_output=True, text=True,
                                   check=True)
            results[name] = json.loads(child.stdout.strip().splitlines()[-1])
        h, w = (int(v) for v in args.size.lower().split("x"))
        results["stream"] = _stream(WanCodec(str(Path(tmp) / "Wan2.1_VAE.pth")), (h, w), args.chunks)
    results["layouts_agree"] = results["diffusers folder"]["checksum"] == results["original .pth"]["checksum"]
    print(f"random real-size Wan2.1 VAE: {results['params']:,} parameters "
          f"({results['params'] * 4 / 2**30:.2f} GiB in float32); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print("| load from | tensors | seconds | RSS before (GiB) | peak during load | after, weights touched |\n"
          "|---|---|---|---|---|---|")
    for name in ("diffusers folder", "original .pth"):
        r = results[name]
        print(f"| {name} | {r['tensors']} | {r['seconds']:.1f} | {r['rss_before_gib']:.2f} | "
              f"{r['peak_rss_during_load_gib']:.2f} | {r['rss_after_gib']:.2f} |")
    print(f"layouts load to the same weights: {results['layouts_agree']}")
    s = results["stream"]
    print(f"\nstreaming {s['frames']} frames at {s['size'][0]}x{s['size'][1]} (float32, CPU):")
    print("| call | seconds |\n|---|---|")
    for key in ("encode_first_s", "encode_chunk_s", "decode_first_s", "decode_chunk_s"):
        print(f"| {key[:-2].replace('_', ' ')} | {s[key]:.2f} |")
    print(f"chunked vs offline, max abs diff: encode {s['encode_max_abs_diff']:.2g}, "
          f"decode {s['decode_max_abs_diff']:.2g}")
    if args.out:
        from realcam.atomic import write_atomic

        write_atomic(args.out, json.dumps(results, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
