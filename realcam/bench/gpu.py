"""``realcam bench gpu`` (``scripts/gpu_check.sh``): the first check on a machine with a GPU, random weights.

On CUDA (profile ``full``; the items stop within ``--budget-s``, 420 s by default, to fit 8 minutes on one H100 /
H200 with the start-up):

1. ``stream_1step`` / ``stream_4step``: the ``wan2.1-t2v-1.3b`` transformer's streaming FPS at 480x832 (60x104
   latents), chunks of 3 latent frames (12 video frames), sink + window cache, a 512-token prompt whose K/V the
   cache keeps, bf16 autocast: :func:`~realcam.rollout.rollout_chunk` with the fused cache pass, as
   ``StreamingGenerator`` runs it; warm-up until the window is full, then timed chunks. Video FPS = 4 x latent FPS.
2. ``vae``: the ``wan`` codec's ``stream()`` (a random full-size ``AutoencoderKLWan``, diffusers' defaults = Wan2.1)
   encoding and decoding 480x832 video 12 frames per call.
3. ``train_teacher`` / ``train_ode_init`` / ``train_dmd``: 5 Lightning steps (bf16-mixed, one device) of each
   system at the 1.3B size on a small latent shape, from latent batches of the shared contract held in memory.
4. Peak GPU memory (``torch.cuda.max_memory_allocated``) of every item.

Each item runs guarded (a failure is recorded and the next item runs) and the JSON is rewritten after each, so a
run cut short still leaves its numbers. Without CUDA (profile ``tiny``) the same code runs at ``tiny-wan`` size
with the tiny random VAE of :mod:`realcam.tiny_wan`, in seconds: that is what CI runs.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch

from realcam.atomic import write_atomic
from realcam.bench._common import autocast, machine_info, random_cond, sync
from realcam.bench.gpu_profile import PROFILES, SHIFT, Budget, Profile, random_network
from realcam.device import checked_device
from realcam.modules.flow import FlowSchedule


VAE_SPATIAL = 8                                  # Wan2.1's VAE: 8x in space (4x in time, after a first frame)
ITEMS = ("stream_1step", "stream_4step", "vae", "train_teacher", "train_ode_init", "train_dmd")


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _text(batch: int, profile: Profile, model, device) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, profile.text_tokens, model.text_dim, generator=g).to(device)


# ---- 1. the transformer's streaming FPS --------------------------------------------------------------------------
@torch.no_grad()
def stream_fps(model, profile: Profile, steps: int, args, budget: Budget, device: torch.device) -> dict:
    """Chunks through ``rollout_chunk`` exactly as ``StreamingGenerator._generate`` runs them (fused cache pass)."""
    from realcam.bundle import evenly_spaced_steps
    from realcam.rollout import rollout_chunk, supports_fused_cache_pass

    c = model.chunk_frames
    _, cond = random_cond(model, c, profile.grid, device=str(device))
    H, W = (VAE_SPATIAL * v for v in profile.grid)                     # the video size the latents stand for
    K = torch.tensor([[float(W), 0, W / 2], [0, float(W), H / 2], [0, 0, 1]], device=device).expand(1, c, 3, 3)
    cond = replace(cond, image_size=(H, W), target_K=K, source_K=K, text=_text(1, profile, model, device))
    sigmas = FlowSchedule(shift=SHIFT, denoising_steps=evenly_spaced_steps(steps)).student_sigmas(device=device)
    cache, noise = model.new_cache(sink=args.sink, window=args.window), torch.Generator().manual_seed(0)
    fuse = supports_fused_cache_pass(model)
    warmup = args.sink + args.window + 1                      # the window is full from here on
    previous, times = None, []
    with autocast(str(device), profile.dtype):
        for i in range(warmup + profile.timed_chunks):
            if i >= warmup and budget.left() < 0:
                break
            sync(device)
            t0 = time.perf_counter()
            x0, _, _ = rollout_chunk(model, cond, sigmas, cache, noise, cond.source, previous=previous,
                                     defer_cache_pass=fuse)
            sync(device)
            previous = (x0, cond) if fuse else None
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    if not times:
        raise RuntimeError("the time budget ran out during the warm-up chunks")
    chunk_s = statistics.median(times)
    tokens = 2 * c * (profile.grid[0] // model.patch[1]) * (profile.grid[1] // model.patch[2])
    return {"steps": steps, "passes_per_chunk": steps + (0 if fuse else 1), "chunk_latent_frames": c,
            "precision": f"{profile.dtype} autocast, float32 weights (StreamingGenerator's dtype={profile.dtype!r})",
            "chunk_video_frames": 4 * c, "tokens_per_chunk": tokens, "text_tokens": profile.text_tokens,
            "warmup_chunks": warmup, "chunks_timed": len(times), "chunk_ms_p50": 1e3 * chunk_s,
            "chunk_ms_max": 1e3 * max(times), "latent_fps": c / chunk_s, "video_fps": 4 * c / chunk_s}


# ---- 2. the VAE's streaming encode and decode ---------------------------------------------------------------------
def make_vae_folder(profile: Profile, root: Path) -> Path:
    """A random Wan VAE saved as a diffusers ``vae/`` folder under ``root``: full size or tiny."""
    from diffusers import AutoencoderKLWan

    from realcam.tiny_wan import make_tiny_wan_vae

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = AutoencoderKLWan() if profile.vae == "full" else make_tiny_wan_vae(0)
    vae.save_pretrained(root / "vae")
    return root


@torch.no_grad()
def vae_fps(codec, profile: Profile, budget: Budget, device: torch.device) -> dict:
    """Encode then decode a stream of 1 + 8 frames, then 12 frames (3 latent frames) per call; the first call of
    each is warm-up, the later ones are timed."""
    h, w = (VAE_SPATIAL * v for v in profile.grid)
    g = torch.Generator().manual_seed(0)
    video = (torch.rand(1, 9 + 12 * profile.vae_chunks, 3, h, w, generator=g) * 2 - 1).to(device)
    pieces = [video[:, :9]] + list(video[:, 9:].split(12, dim=1))
    out = {}
    for kind in ("encode", "decode"):
        stream, times, latents = codec.stream(), [], []
        for i, piece in enumerate(pieces):
            if i and budget.left() < 0:
                break
            sync(device)
            t0 = time.perf_counter()
            if kind == "encode":
                latents.append(stream.encode_chunk(piece))
            else:
                stream.decode_chunk(encoded[:, 3 * i:3 * i + 3])
            sync(device)
            if i:
                times.append(time.perf_counter() - t0)
        if kind == "encode":
            encoded = torch.cat(latents, dim=1)
        if not times:
            raise RuntimeError(f"the time budget ran out before a timed {kind} call")
        out[f"{kind}_ms_per_12_frames"] = 1e3 * statistics.median(times)
        out[f"{kind}_fps"] = 12 / statistics.median(times)
        out[f"{kind}_calls_timed"] = len(times)
    out.update(size=[h, w], vae_dtype=codec.dtype_name, latent_frames_per_call=3)
    return out


# ---- the run ------------------------------------------------------------------------------------------------------
def _guarded(name: str, fn, result: dict, budget: Budget, device: torch.device, out: Path, need_s: float) -> None:
    """Run one item: record its numbers and peak memory, or why it failed or was skipped; then save the JSON."""
    if budget.left() < need_s:
        result["items"][name] = {"status": "skipped", "reason": f"time budget: {budget.left():.0f} s left, the item "
                                                                f"needs about {need_s:.0f} s (raise --budget-s)"}
    else:
        _free(device)
        t0 = time.perf_counter()
        try:
            entry = {"status": "ok", **fn()}
        except Exception as err:          # one failing item is reported; the others still run
            traceback.print_exc()
            first_line = str(err).splitlines()[0] if str(err) else ""
            entry = {"status": "failed", "error": f"{type(err).__name__}: {first_line}"}
        entry.update(wall_s=time.perf_counter() - t0, peak_gpu_mem_gib=_peak_gib(device))
        result["items"][name] = entry
        print(f"  {name}: {entry['status']} in {entry['wall_s']:.1f} s", flush=True)
    result["elapsed_s"] = budget.seconds - budget.left()
    write_atomic(out, json.dumps(result, indent=2))


def run(args: argparse.Namespace) -> dict:
    device = checked_device(args.device, "--device")
    profile = PROFILES[args.profile or ("full" if device.type == "cuda" else "tiny")]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    budget = Budget(args.budget_s)
    result = {"benchmark": "gpu_check", "profile": args.profile or ("full" if device.type == "cuda" else "tiny"),
              "device": str(device), "preset": profile.preset, "weights": "random", "machine": machine_info(),
              "budget_s": args.budget_s, "sink": args.sink, "window": args.window, "shift": SHIFT,
              "profile_sizes": {k: v for k, v in vars(profile).items()}, "items": {}}
    print(f"realcam bench gpu — profile {result['profile']} ({profile.preset}) on {device}, budget "
          f"{args.budget_s:.0f} s", flush=True)
    items = [i for i in ITEMS if not args.only or i in args.only]
    with tempfile.TemporaryDirectory(prefix="realcam_gpu_check_") as tmp:
        if any(i.startswith("stream") for i in items):
            holder = {}

            def stream(steps: int):
                def item():
                    if "model" not in holder:
                        holder["model"] = random_network(profile, device, attention_mode="causal",
                                                         sink_chunks=args.sink, window_chunks=args.window).eval()
                    return stream_fps(holder["model"], profile, steps, args, budget, device)
                return item

            for steps in (1, 4):
                if f"stream_{steps}step" in items:
                    _guarded(f"stream_{steps}step", stream(steps), result, budget, device, args.out,
                             profile.item_s)
            holder.clear()
        if set(items) & {"vae", "train_teacher", "train_ode_init", "train_dmd"}:
            from realcam.bench import gpu_train
            from realcam.modules.wan_vae import WanCodec

            codecs = {}

            def codec(dtype: str):
                if dtype not in codecs:
                    root = Path(tmp) if codecs else make_vae_folder(profile, Path(tmp))
                    codecs[dtype] = WanCodec(str(root), dtype=dtype)
                return codecs[dtype].to(device)

            vae_dtype = "bf16" if profile.dtype == "bf16" and device.type == "cuda" else "float32"
            if "vae" in items:
                _guarded("vae", lambda: vae_fps(codec(vae_dtype), profile, budget, device), result, budget, device,
                         args.out, profile.item_s)
            def train(kind: str):
                return lambda: gpu_train.train_steps(kind, profile, codec("float32"), args, budget, device)

            for kind in ("teacher", "ode_init", "dmd"):
                if f"train_{kind}" in items:
                    need = (3 if kind == "dmd" else 2) * profile.item_s       # DMD builds three networks
                    _guarded(f"train_{kind}", train(kind), result, budget, device, args.out, need)
    result["failed"] = [k for k, v in result["items"].items() if v["status"] == "failed"]
    write_atomic(args.out, json.dumps(result, indent=2))
    print_table(result)
    print(f"wrote {args.out}")
    return result


def _headline(name: str, entry: dict) -> str:
    if entry["status"] != "ok":
        return entry.get("error") or entry.get("reason", "")
    if name.startswith("stream"):
        return (f"{entry['video_fps']:.1f} video FPS ({entry['chunk_ms_p50']:.0f} ms per {entry['chunk_video_frames']}"
                f"-frame chunk, {entry['tokens_per_chunk']} tokens)")
    if name == "vae":
        return f"encode {entry['encode_fps']:.1f} FPS, decode {entry['decode_fps']:.1f} FPS"
    return (f"{entry['step_s_median_after_first']:.2f} s per step ({entry['steps']} steps, first "
            f"{entry['first_step_s']:.2f} s)")


def print_table(result: dict) -> None:
    from realcam.bench._common import markdown_table

    rows = []
    for name, entry in result["items"].items():
        peak = entry.get("peak_gpu_mem_gib")
        rows.append([name, entry["status"], _headline(name, entry), f"{entry.get('wall_s', 0):.1f}",
                     "-" if peak is None else f"{peak:.1f}"])
    print(f"\nrealcam bench gpu — {result['preset']} on {result['machine']['cuda'] or result['machine']['cpu']} "
          f"({result['profile']} profile, random weights, {result['elapsed_s']:.0f} s)")
    print(markdown_table(["item", "status", "result", "wall (s)", "peak GPU mem (GiB)"], rows))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON (rewritten after each item)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--profile", choices=sorted(PROFILES), default=None,
                   help="full: wan2.1-t2v-1.3b at 480x832 (default on CUDA); tiny: tiny-wan (default on a CPU)")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="wall-clock budget of the items; one that cannot start is skipped (default 420)")
    p.add_argument("--sink", type=int, default=1, help="sink chunks of the streaming cache (default 1)")
    p.add_argument("--window", type=int, default=3,
                   help="rolling window chunks (default 3: sink + window + current = 15 latent frames)")
    p.add_argument("--train-steps", type=int, default=5, help="Lightning steps per training item (default 5)")
    p.add_argument("--only", nargs="+", choices=ITEMS, default=None, help="run only these items")


def main(args: argparse.Namespace) -> dict:
    if args.train_steps < 1 or args.budget_s <= 0 or args.sink < 0 or args.window < 1:
        raise ValueError(f"--train-steps {args.train_steps}, --budget-s {args.budget_s}, --sink {args.sink}, "
                         f"--window {args.window}: expected steps >= 1, budget > 0, sink >= 0, window >= 1")
    return run(args)
