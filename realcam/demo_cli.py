"""``realcam demo``: the bundled student on a held-out synthetic scene along a closed camera loop (side-by-side
mp4, latency plot, FPS, PSNR against the ground truth, loop closure), and ``--from-scratch``, the whole pipeline
from shards to the streamed demo on a reduced budget, each step a documented ``realcam`` command.

    realcam demo                                   # bundled student, held-out scene, closed camera loop
    realcam demo --from-scratch --dry-run          # the whole pipeline's commands, on a reduced budget
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from realcam import geometry
from realcam.data.cli import at_least
from realcam.stream_cli import (BUNDLE_NETWORK_ARGS, StreamWriters, add_model_args, load_generator, mean_or_none,
                                model_info, positive_float, psnr_u8, run_stream, write_report)
from realcam.stream_sources import TRAINING_SOURCE_ARGS, SourceClip


def demo_sequence(size: tuple[int, int], fps: float, index: int, seed: int, length: int, loop: str,
                  degrees: float, distance: float, laps: int):
    """A LoopAug ``orbit_return`` sequence on a held-out scene: the target leaves the source camera's pose,
    travels the closed ``loop`` path ``laps`` times over the frozen scene and comes back; revisits are exact."""
    from realcam.data.synthetic import SyntheticSource
    from realcam.registry import LOOPAUG_STRATEGIES

    source = SyntheticSource(num_cameras=1, num_frames=16, height=size[0], width=size[1], fps=fps, seed=seed,
                             split="test", **TRAINING_SOURCE_ARGS)
    strategy = LOOPAUG_STRATEGIES.build("orbit_return", length=length, path=loop, degrees=degrees,
                                        distance=distance, laps=laps, novel_target=False)
    return strategy(source, index, torch.Generator().manual_seed(index))


def plot_latency(latency_ms: list[float], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3), dpi=120)
    ax.plot(range(len(latency_ms)), latency_ms, marker=".", lw=1, label="push latency")
    mean = sum(latency_ms) / len(latency_ms)
    ax.axhline(mean, ls="--", c="gray", lw=1, label=f"mean {mean:.1f} ms")
    ax.set(xlabel="frame", ylabel="latency (ms)", title=title, ylim=(0, None))
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    gen, model_path = load_generator(args)
    seq = demo_sequence(gen.image_size, gen.fps, args.index, args.seed, args.length, args.loop, args.degrees,
                        args.distance, args.laps)
    clip = SourceClip(seq.source_frames, seq.source_K[0], gen.fps, list(range(seq.num_steps)), c2w=seq.source_c2w,
                      render=lambda c2w: seq.target_frames, target_K=seq.target_K[0],
                      info={"kind": "synthetic", "scene_id": seq.scene_id, "split": "test", "index": args.index})
    rel = geometry.relative_poses(seq.source_c2w, seq.target_c2w, "current_source")
    out = Path(args.out)
    writers = StreamWriters(gen.fps, side_by_side=out / "demo.mp4", scale=args.scale)
    result, paths = run_stream(gen, clip, rel, writers, keep=True, progress=not args.quiet, desc="demo",
                               target_world=seq.target_c2w)
    pairs = [(n, m) for n, m in sorted(seq.revisit.items()) if n < len(result["generated"])]
    loop_psnr = [psnr_u8(result["generated"][n:n + 1], result["generated"][m:m + 1])[0] for n, m in pairs]
    result["metrics"].update(loop_psnr_mean=mean_or_none(loop_psnr), loop_psnr=loop_psnr,
                             revisit_pairs=[[n, m] for n, m in pairs],
                             closure_psnr=loop_psnr[-1] if pairs and pairs[-1] == (len(rel) - 1, 0) else None)
    extra = {"command": "demo", **model_info(gen, model_path), "scene_id": seq.scene_id, "strategy": "orbit_return",
             "trajectory": {"loop": args.loop, "degrees": args.degrees, "distance": args.distance, "laps": args.laps,
                            "length": args.length, "start": "the source camera's pose at the frozen time"}}
    s = result["stats"]
    plot = plot_latency(s["latency_ms"], out / "latency.png",
                        f"realcam demo: {s['fps']:.1f} FPS, {gen.image_size[0]}x{gen.image_size[1]}")
    paths["report"] = write_report(out / "demo.json", result, gen.fps, paths, {**extra, "latency_plot": str(plot)})
    return {**result, "paths": {**paths, "latency_plot": str(plot)}}


# ---- the whole pipeline, on a reduced budget ------------------------------------------------------------
def shard_workers() -> int:
    """Processes for make-shards: the shards are the same for any count, so use the cores (up to 4)."""
    cores = os.cpu_count() or 1
    return min(4, cores) if cores > 1 else 0


def from_scratch_plan(workdir: Path, args: argparse.Namespace) -> list[list[str]]:
    """The documented commands (argv after ``realcam``) from shards to the streamed demo; ``*`` in a path is a
    checkpoint found when the step runs (the newest match)."""
    W = str(workdir)
    src = json.dumps(TRAINING_SOURCE_ARGS)
    shards = ["data", "make-shards", "--source", "synthetic", "--source-args", src, "--loopaug",
              "pingpong,orbit_return,none", "--height", "32", "--width", "32", "--seed", "0", "--overwrite",
              "--workers", str(shard_workers())]
    ckpt = lambda run: f"{W}/{run}/checkpoints/last.ckpt"  # noqa: E731
    data = lambda train: ["--data.init_args.train_shards", train, "--data.init_args.val_shards",  # noqa: E731
                          f"{W}/data/val", "--data.init_args.test_shards", f"{W}/data/val"]
    fit = lambda cfg, run, n: ["fit", "--config", cfg, "--trainer.max_steps", str(n),  # noqa: E731
                               "--trainer.val_check_interval", str(n), "--trainer.default_root_dir", f"{W}/{run}"]
    return [
        [*shards, "--split", "train", "--out", f"{W}/data/train", "--lengths", "4,8",
         "--num-sequences", str(args.num_sequences), "--samples-per-shard", "256"],
        [*shards, "--split", "val", "--out", f"{W}/data/val", "--lengths", "8", "--num-sequences", "8"],
        [*fit("configs/teacher/tiny.yaml", "teacher", args.teacher_steps), *data(f"{W}/data/train"),
         "--model.init_args.total_steps", str(args.teacher_steps)],
        ["data", "make-ode-pairs", "--config", "configs/teacher/tiny.yaml", "--teacher", ckpt("teacher"),
         "--shards", f"{W}/data/train", "--out", f"{W}/data/ode", "--steps", str(args.ode_pair_steps),
         "--num-samples", str(args.ode_pairs), "--overwrite"],
        [*fit("configs/student/tiny_ode.yaml", "student_ode", args.ode_steps), *data(f"{W}/data/ode"),
         "--model.init_args.generator_init", ckpt("teacher"), "--model.init_args.total_steps", str(args.ode_steps)],
        [*fit("configs/student/tiny_dmd.yaml", "student_dmd", args.dmd_steps), *data(f"{W}/data/train"),
         "--model.init_args.generator_init", ckpt("student_ode"), "--model.init_args.real_score_init",
         ckpt("teacher")],
        ["export", "--config", "configs/student/tiny_dmd.yaml", "--ckpt", ckpt("student_dmd"), "--out",
         f"{W}/bundle", "--role", "student", "--overwrite", "--commands-file", f"{W}/commands.txt",
         "--network-args", json.dumps(BUNDLE_NETWORK_ARGS)],
        ["demo", "--bundle", f"{W}/bundle", "--out", f"{W}/demo"],
    ]


FROM_SCRATCH_FILES = ("configs/teacher/tiny.yaml", "configs/student/tiny_ode.yaml", "configs/student/tiny_dmd.yaml")


def run_from_scratch(args: argparse.Namespace) -> int:
    repo = Path(args.repo).resolve()
    missing = [f for f in FROM_SCRATCH_FILES if not (repo / f).is_file()]
    if missing:
        raise FileNotFoundError(f"--from-scratch needs a realcam repository checkout for its configs, but {repo} has "
                                f"no {', '.join(missing)}: run it from the repository root or pass --repo PATH")
    plan = from_scratch_plan(Path(args.workdir), args)
    held = sorted((repo / args.workdir).glob("*/checkpoints/*.ckpt"))
    if held and not args.dry_run:       # `realcam fit` would refuse to mix a new run into an old one
        raise FileExistsError(f"--workdir {args.workdir} holds a previous pipeline ({held[0].relative_to(repo)}): "
                              f"remove it or pass --workdir NEW_FOLDER")
    if not args.dry_run:      # the bundle's provenance records the whole pipeline
        record = repo / args.workdir / "commands.txt"
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text("".join(f"realcam {shlex.join(step)}\n" for step in plan[:-2]))
    for i, step in enumerate(plan, 1):
        print(f"[{i}/{len(plan)}] realcam {shlex.join(step)}", flush=True)
        if args.dry_run:
            continue
        argv = []
        for a in step:
            if "*" in a:
                found = sorted(glob.glob(str(repo / a)), key=os.path.getmtime)
                if not found:
                    raise FileNotFoundError(f"step {i}: no checkpoint matches {a}; did the previous step fail?")
                a = found[-1]
            argv.append(a)
        done = subprocess.run([sys.executable, "-m", "realcam.cli", *argv], cwd=repo)
        if done.returncode:
            print(f"realcam demo --from-scratch: step {i} failed (exit {done.returncode}); outputs so far are in "
                  f"{args.workdir}", file=sys.stderr)
            return done.returncode
    return 0


def demo_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="realcam demo", description="Stream a held-out synthetic scene along a closed "
                                "camera loop with the bundled student; writes demo.mp4 (source | generated | ground "
                                "truth), latency.png and demo.json, and prints FPS, latency, PSNR and loop PSNR.")
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument("--index", type=at_least(0), default=0, help="held-out scene (split test)")
    p.add_argument("--length", type=at_least(2), default=17, help="frames (2 laps of 8 and the return to the start)")
    p.add_argument("--loop", default="orbit", help="closed path: orbit, circle, square, pingpong_<pan|arc|...>")
    p.add_argument("--degrees", type=positive_float, default=30.0, help="angular size of orbit/arc/pan loops")
    p.add_argument("--distance", type=positive_float, default=0.5, help="size in metres of circle/square/dolly loops")
    p.add_argument("--laps", type=at_least(1), default=2)
    p.add_argument("--scale", type=at_least(1), default=4, help="nearest-neighbour upscaling of demo.mp4")
    add_model_args(p)
    g = p.add_argument_group("from scratch (needs a repository checkout)")
    g.add_argument("--from-scratch", action="store_true", help="shards -> teacher -> ODE pairs -> ODE init -> DMD "
                   "-> export -> demo, each a documented `realcam` command")
    g.add_argument("--dry-run", action="store_true", help="print the commands only")
    g.add_argument("--workdir", default="runs/demo_from_scratch", help="everything it writes goes here")
    g.add_argument("--repo", default=".", help="repository root (configs/ lives there)")
    g.add_argument("--num-sequences", type=at_least(1), default=256, help="training LoopAug sequences")
    g.add_argument("--teacher-steps", type=at_least(1), default=300)
    g.add_argument("--ode-pairs", type=at_least(1), default=128, help="teacher ODE trajectories")
    g.add_argument("--ode-pair-steps", type=at_least(1), default=20, help="teacher Euler steps per trajectory")
    g.add_argument("--ode-steps", type=at_least(1), default=150)
    g.add_argument("--dmd-steps", type=at_least(1), default=60)
    return p


def demo_main(argv: list[str]) -> int:
    args = demo_parser().parse_args(argv)
    try:
        if args.from_scratch:
            return run_from_scratch(args)
        result = run_demo(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"realcam demo: error: {err}", file=sys.stderr)
        return 2
    s, m = result["stats"], result["metrics"]
    closure = "n/a" if m["closure_psnr"] is None else f"{m['closure_psnr']:.2f} dB"
    print(f"frames {s['frames']}  FPS {s['fps']:.1f}  latency mean {s['latency_ms_mean']:.1f} ms  p50 "
          f"{s['latency_ms_p50']:.1f}  p90 {s['latency_ms_p90']:.1f}  first frame {s['time_to_first_frame_ms']:.1f} ms")
    print(f"PSNR vs ground truth {m['psnr_mean']:.2f} dB (source copy {m['source_copy_psnr_mean']:.2f} dB)  loop PSNR "
          f"{m['loop_psnr_mean'] or float('nan'):.2f} dB over {len(m['loop_psnr'])} revisit pairs  closure "
          f"(last vs first) {closure}")
    print("wrote " + ", ".join(result["paths"].values()))
    if result["interrupted"]:
        print(f"realcam demo: interrupted after {s['frames']} of {result['frames_requested']} frames", file=sys.stderr)
        return 130
    return 0
