"""``realcam stream`` and ``realcam export``: parse, prepare frames and poses, call the library (``realcam demo``
builds on the pieces here: :mod:`realcam.demo_cli`).

    realcam stream --source synthetic:seed=3 --trajectory arc:left:30 --out out.mp4 --side-by-side sbs.mp4
    realcam stream --video in.mp4 --trajectory camera_extrinsics.json --camera cam01 --out out.mp4
    realcam export --config configs/student/tiny_dmd.yaml --ckpt RUN/checkpoints/last.ckpt --out DIR

Pose and frame-rate conventions: docs/streaming.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from realcam.atomic import check_outputs, write_atomic
from realcam.data.cli import at_least, crf_value
from realcam.stream_sources import TRAINING_SOURCE_ARGS, SourceClip, open_synthetic, open_video, target_trajectory

# The inference options the tiny student bundle is exported with (scripts/student_tiny.sh: export --network-args).
BUNDLE_NETWORK_ARGS = {"reproject_copy_gate": 4.0}

# ================================================================================================ streaming
def psnr_u8(a: Tensor, b: Tensor) -> list[float]:
    """uint8 [T, H, W, 3] x2 -> per-frame PSNR (dB)."""
    from realcam.metrics import frame_psnr

    unit = lambda x: x.permute(0, 3, 1, 2).float() / 255.0  # noqa: E731
    return frame_psnr(unit(a), unit(b)).tolist()


def mean_or_none(x: list[float]) -> float | None:
    return sum(x) / len(x) if x else None


class StreamWriters:
    """The mp4s of a stream, written as its frames come (constant memory): the generated video and the side by
    side (source | generated [| ground truth]), each upscaled ``scale`` times, H.264 at ``crf``; atomic (see
    VideoWriter)."""

    def __init__(self, fps: float, out: Path | None = None, side_by_side: Path | None = None, scale: int = 1,
                 crf: int = 18):
        from realcam.data.video import VideoWriter

        self.scale = scale
        self.writers = {name: VideoWriter(path, fps, crf=crf) for name, path in
                        (("video", out), ("side_by_side", side_by_side)) if path is not None}

    def add(self, source: Tensor, generated: Tensor, ground_truth: Tensor | None = None) -> None:
        """uint8 [n, H, W, 3] each."""
        from realcam.data.video import side_by_side as stack

        if "video" in self.writers:
            self.writers["video"].write(_upscale(generated, self.scale))
        if "side_by_side" in self.writers:
            panels = [source, generated] + ([ground_truth] if ground_truth is not None else [])
            self.writers["side_by_side"].write(_upscale(stack(panels), self.scale))

    def close(self) -> dict[str, str]:
        return {name: str(w.close()) for name, w in self.writers.items()}

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()


def stream_clip(gen, clip: SourceClip, rel: Tensor, progress: bool = True, desc: str = "stream",
                target_world: Tensor | None = None, writers: StreamWriters | None = None,
                keep: bool = True) -> dict[str, Any]:
    """Push the frames of ``clip`` with their target poses (``len(rel)`` of them at most), handing every
    generated chunk to ``writers`` as it comes. Returns stats, per-frame PSNR (synthetic) and, with ``keep``,
    the generated uint8 [T, H, W, 3] with its source and ground truth (otherwise nothing grows with T).

    ``rel`` is relative to each frame's source camera; with the source's world poses known (synthetic), world
    poses are pushed along with ``source_c2w`` (``target_world`` if given). Ctrl-C ends the stream early
    (``interrupted``); what was generated is kept and written."""
    from tqdm import tqdm

    available = min(len(rel), len(clip.frames))
    T = gen.whole_chunk_frames(available)       # frames past the last whole chunk would never come out
    if clip.c2w is not None and target_world is None:
        target_world = clip.c2w[:T] @ rel[:T]
    gt = clip.render(target_world) if clip.render is not None else None
    gen.reset(K=clip.K, target_K=clip.target_K)
    kept: dict[str, list[Tensor]] = {"generated": [], "source": [], "ground_truth": []}
    psnr: list[float] = []
    base: list[float] = []
    pending: list[Tensor] = []          # source frames of the chunk being filled
    done, interrupted, ended_early = 0, False, None
    source = iter(clip.frames)
    bar = tqdm(total=T, desc=desc, unit="frame", disable=not progress)
    try:
        for t in range(T):
            try:
                frame = next(source)
            except StopIteration:       # a truncated file: fewer frames than its container says
                ended_early = f"the source ended after {t} of {T} frames"
                break
            except (ValueError, OSError, RuntimeError) as err:    # PyAV decode errors (a corrupt frame)
                ended_early = f"source frame {clip.indices[t]} could not be decoded ({type(err).__name__}: {err})"
                break
            pending.append(frame)
            if target_world is not None:
                y = gen.push(frame, target_world[t], source_c2w=clip.c2w[t])
            else:
                y = gen.push(frame, rel[t])
            bar.update(1)
            if y is None:
                continue
            y = torch.from_numpy(gen.to_uint8(y[None] if y.ndim == 3 else y))
            src, pending = torch.stack(pending), []
            truth = None if gt is None else gt[done:done + len(y)]
            done += len(y)
            if writers is not None:
                writers.add(src, y, truth)
            if keep:
                kept["generated"].append(y)
                kept["source"].append(src)
                if truth is not None:
                    kept["ground_truth"].append(truth)
            if truth is not None:
                psnr += psnr_u8(y, truth)
                base += psnr_u8(src, truth)       # the source-copy floor
                bar.set_postfix(psnr=f"{psnr[-1]:.2f}", ms=f"{gen.stats.latency_ms[-1]:.1f}")
    except KeyboardInterrupt:       # Ctrl-C: keep what was generated (the outputs are still written)
        interrupted = True
    finally:
        bar.close()
    result = {"stats": gen.close().as_dict(), "metrics": {}, "frames": done, "frames_requested": T,
              "frames_past_last_chunk": available - T, "interrupted": interrupted, "source_ended_early": ended_early}
    if keep:
        empty = torch.zeros(0, *gen.image_size, 3, dtype=torch.uint8)
        result.update({k: torch.cat(v) if v else empty for k, v in kept.items()})
        result["ground_truth"] = result["ground_truth"] if gt is not None else None
    if gt is not None:
        result["metrics"] = {"psnr_mean": mean_or_none(psnr), "psnr": psnr,
                             "source_copy_psnr_mean": mean_or_none(base)}
    return result


def _upscale(x: Tensor, s: int) -> Tensor:
    return x if s == 1 else x.repeat_interleave(s, 1).repeat_interleave(s, 2)


def write_report(path: Path, result: dict[str, Any], fps: float, outputs: dict[str, str],
                 extra: dict[str, Any]) -> str:
    """The JSON report of a stream: arguments and details (``extra``), outputs, stats and metrics, machine."""
    body = {**extra, "outputs": {**outputs, "report": str(path)}, "fps_video": fps,
            "interrupted": result["interrupted"], "source_ended_early": result["source_ended_early"],
            "frames_past_last_chunk": result.get("frames_past_last_chunk", 0),
            "stats": result["stats"], "metrics": result["metrics"],
            "machine": {"python": platform.python_version(), "torch": torch.__version__,
                        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}}
    return str(write_atomic(path, json.dumps(body, indent=2)))


def run_stream(gen, clip: SourceClip, rel: Tensor, writers: StreamWriters, keep: bool = False, **kw) -> tuple:
    """stream_clip into ``writers``, then close them (or remove their files if nothing came out or it failed)."""
    try:
        result = stream_clip(gen, clip, rel, writers=writers, keep=keep, **kw)
        if result["frames"] == 0:
            raise ValueError(f"no frame was generated: the stream is shorter than one chunk ({gen.chunk_frames_at(0)} "
                             f"source frames): stream more frames (--frames)")
        return result, writers.close()
    except BaseException:
        writers.abort()
        raise


def load_generator(args: argparse.Namespace):
    """A StreamingGenerator from --bundle (default: the bundled tiny student) or --ckpt + --config."""
    from realcam.bundle import bundled_model
    from realcam.streaming import StreamingGenerator

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    opts = dict(steps=args.steps, sink=args.sink, window=args.window, dtype=args.dtype, device=args.device,
                seed=args.seed, fuse_cache_pass=None if getattr(args, "fuse", True) else False)
    if args.text is not None:
        opts["text"] = Path(args.text)
    if args.ckpt is not None:
        return StreamingGenerator.from_checkpoint(args.ckpt, args.config, **opts), str(args.ckpt)
    path = Path(args.bundle) if args.bundle else bundled_model("tiny_student")
    return StreamingGenerator.from_checkpoint(path, **opts), str(path)


def model_info(gen, model_path: str) -> dict[str, Any]:
    """What a report records about the weights: the bundle or checkpoint streamed, and the training checkpoint
    and global step they come from (a bundle's provenance; None for bundles exported before it was recorded)."""
    provenance = (getattr(gen, "config", None) or {}).get("provenance") or {}
    return {"model": model_path, "checkpoint": provenance.get("source_ckpt"),
            "global_step": provenance.get("global_step")}


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{value} must be a positive number")
    return value


def mp4_path(text: str) -> Path:
    """An output video path: the writer always makes an H.264 mp4, so the name has to say so."""
    path = Path(text)
    if path.suffix.lower() != ".mp4":
        raise argparse.ArgumentTypeError(f"{text!r}: the video is written as an H.264 mp4; give a name ending "
                                         f"in .mp4 (for example {path.with_suffix('.mp4').name})")
    return path


def fov_degrees(text: str) -> float:
    value = positive_float(text)
    if value >= 180:
        raise argparse.ArgumentTypeError(f"{value} degrees: a pinhole field of view must be in (0, 180)")
    return value


def _window(text: str) -> int | None | str:
    if text in ("none", "default"):
        return None if text == "none" else text
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of chunks, 'none' (unbounded) or 'default'")
    return int(text)


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--bundle", help="bundle folder (default: the bundled realcam/assets/tiny_student)")
    g.add_argument("--ckpt", help="a Lightning .ckpt of `realcam fit` instead of a bundle (it describes its run)")
    g.add_argument("--config", help="the training YAML of --ckpt: only for what the checkpoint lacks (a bare "
                   ".safetensors, an old checkpoint); a value contradicting the checkpoint is an error")
    g.add_argument("--steps", type=at_least(1), default=None, help="denoising steps per chunk (default: the bundle's list)")
    g.add_argument("--sink", type=at_least(0), default=None, help="sink chunks of the KV cache (default: the model's)")
    g.add_argument("--window", type=_window, default="default", help="rolling window chunks, or 'none' for unbounded "
                   "(default: the model's)")
    g.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="bf16 = torch.autocast")
    g.add_argument("--device", default="cpu")
    g.add_argument("--threads", type=at_least(0), default=1, help="torch CPU threads (0: torch's default); tiny models "
                   "are fastest on one, since idle OpenMP workers spin on a shared CPU")
    g.add_argument("--seed", type=int, default=0, help="noise seed (the stream is deterministic given it)")
    g.add_argument("--no-fuse", dest="fuse", action="store_false",
                   help="run each chunk's cache pass on its own instead of inside the next chunk's first pass "
                        "(one transformer pass more per frame; the stream then equals the offline rollout bit for bit)")
    g.add_argument("--text", default=None, help="prompt embedding .npy [L, D] (umT5 outputs, e.g. `realcam data "
                   "encode`'s OUT/text_empty.npy) for a model that reads text (Wan); default: the bundle's text.npy")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def stream_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="realcam stream", description="Stream a source video through the causal "
                                "student along a target camera trajectory (docs/streaming.md).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", help="source mp4; resized to cover the model size and centre-cropped")
    src.add_argument("--source", help="synthetic:seed=N[,index=I][,split=S]: a rendered scene with ground truth")
    p.add_argument("--source-args", type=json.loads, default=None,
                   help=f"JSON overrides of the synthetic source (default {json.dumps(TRAINING_SOURCE_ARGS)})")
    p.add_argument("--trajectory", default="arc:left:30",
                   help="builder spec (arc:left:30, pan:right:20, loop:orbit:20, ...) or a file: realcam JSON, "
                        "MultiCamVideo/ReCamMaster JSON (with --camera), RealEstate10K txt")
    p.add_argument("--camera", default=None, help="camera of a MultiCamVideo JSON, e.g. cam01")
    p.add_argument("--frames", type=at_least(1), default=None, help="frames to stream (synthetic default 16; video: "
                   "all), at most: only whole chunks are streamed (Wan's VAE: 1 + 4k frames)")
    p.add_argument("--start", type=at_least(0), default=0, help="first video frame")
    p.add_argument("--fps", type=positive_float, default=None, help="source rate to stream at (default: the model's fps); "
                   "the video is subsampled by the nearest integer stride")
    p.add_argument("--stride", type=at_least(1), default=None, help="explicit video frame stride (overrides --fps)")
    p.add_argument("--fov", type=fov_degrees, default=60.0, help="the video's horizontal field of view, degrees")
    p.add_argument("--out", type=mp4_path, required=True, help="generated video (.mp4)")
    p.add_argument("--side-by-side", type=mp4_path, default=None, help="source | generated [| ground truth] mp4")
    p.add_argument("--json", type=Path, default=None, help="timings and metrics (default: OUT with .json)")
    p.add_argument("--scale", type=at_least(1), default=1, help="nearest-neighbour upscaling of the written videos")
    p.add_argument("--crf", type=crf_value, default=18,
                   help="H.264 quality of the written videos: 0 (luma lossless) to 51, lower is better (default 18)")
    add_model_args(p)
    return p


def stream_outputs_ok(args: argparse.Namespace) -> None:
    """The outputs of a stream (its mp4s and the JSON report, which defaults to OUT with .json) must not be any of
    its inputs or each other: checked before the model loads, so a mistake costs nothing."""
    args.json = args.json or args.out.with_suffix(".json")
    trajectory = args.trajectory if Path(args.trajectory).is_file() else None
    check_outputs({"--out": args.out, "--side-by-side": args.side_by_side, "--json": args.json},
                  {"--video": args.video, "--trajectory": trajectory, "--ckpt": args.ckpt, "--config": args.config,
                   "--bundle": args.bundle, "--text": args.text})


def print_dropped(gen, frames: int) -> None:
    """Say how many trailing source frames did not fill a whole chunk, and why."""
    if frames:
        print(f"realcam stream: dropped the last {frames} source frames: they do not fill a whole chunk "
              f"({gen.chunk_frames} latent frames = {gen.next_chunk_frames()} video frames at that point; with Wan's "
              f"VAE a stream takes 1 + 4 (c - 1) frames, then 4 c per chunk: docs/streaming.md)")


def stream_main(argv: list[str]) -> int:
    args = stream_parser().parse_args(argv)
    try:
        stream_outputs_ok(args)
        gen, model_path = load_generator(args)
        size = gen.image_size
        if args.video:
            clip = open_video(args.video, size, args.fov, args.fps or gen.fps, args.stride, args.start, args.frames)
        else:
            clip = open_synthetic(args.source, size, args.fps or gen.fps, args.frames or 16, args.source_args)
        rel, traj_info = target_trajectory(args.trajectory, clip, args.camera)
        writers = StreamWriters(clip.fps, args.out, args.side_by_side, args.scale, args.crf)
        result, paths = run_stream(gen, clip, rel, writers, progress=not args.quiet)
        print_dropped(gen, result["frames_past_last_chunk"])
        extra = {"command": "stream", "argv": argv, **model_info(gen, model_path), "source": clip.info,
                 "trajectory": traj_info, "frames": result["frames"], "image_size": list(size)}
        paths["report"] = write_report(args.json, result, clip.fps, paths, extra)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"realcam stream: error: {err}", file=sys.stderr)
        return 2
    s, m = result["stats"], result["metrics"]
    line = (f"{s['frames']} frames at {size[0]}x{size[1]}: {s['fps']:.1f} FPS, latency mean {s['latency_ms_mean']:.1f} "
            f"ms, p90 {s['latency_ms_p90']:.1f} ms, first frame {s['time_to_first_frame_ms']:.1f} ms")
    if m:
        line += f"; PSNR {m['psnr_mean']:.2f} dB (source copy {m['source_copy_psnr_mean']:.2f} dB)"
    print(line)
    print("wrote " + ", ".join(paths.values()))
    if result["source_ended_early"]:
        print(f"realcam stream: warning: {result['source_ended_early']}; the outputs hold the {result['frames']} "
              f"frames generated before that", file=sys.stderr)
    if result["interrupted"]:
        print(f"realcam stream: interrupted after {result['frames']} of {result['frames_requested']} frames; "
              f"the outputs hold the frames generated so far", file=sys.stderr)
        return 130
    return 0


# ================================================================================================ export
def export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="realcam export", description="Write a bundle folder (model.safetensors + "
                                "config.yaml) from a training run, for `realcam stream` and StreamingGenerator.")
    p.add_argument("--ckpt", required=True, help="a Lightning .ckpt of `realcam fit` (it carries the run's config), "
                   "or a bare .safetensors")
    p.add_argument("--config", default=None, help="the run's training YAML: only for what the checkpoint lacks "
                   "(needed with a .safetensors); a value that contradicts the checkpoint is an error naming the key")
    p.add_argument("--out", required=True, help="bundle folder")
    p.add_argument("--role", choices=("student", "teacher"), default=None, help="default: from the config")
    p.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA")
    p.add_argument("--fps", type=positive_float, default=None, help="frame rate the model was trained at (default 8)")
    p.add_argument("--image-size", default=None, help="H,W (default: the config's data.init_args.image_size)")
    p.add_argument("--commands-file", default=None, help="a text file of the commands that made the run (one a "
                   "line), recorded in the bundle's provenance before this export command")
    p.add_argument("--network-args", type=json.loads, default=None, help="JSON overrides of the network's init_args "
                   "for inference, e.g. '{\"reproject_copy_gate\": 0.4}'")
    p.add_argument("--text", default=None, help="a prompt embedding .npy [L, D] (umT5 outputs, e.g. `realcam data "
                   "encode`'s OUT/text_empty.npy) stored as the bundle's text.npy: a network that reads text (Wan) "
                   "then streams with no --text")
    p.add_argument("--overwrite", action="store_true")
    return p


def export_main(argv: list[str]) -> int:
    from realcam.bundle import export_checkpoint

    args = export_parser().parse_args(argv)
    try:
        check_outputs({"--out": args.out}, {"--ckpt": args.ckpt, "--config": args.config,
                                             "--commands-file": args.commands_file, "--text": args.text},
                      folders=("--out",))
        size = None if args.image_size is None else [int(v) for v in args.image_size.split(",")]
        commands = [] if args.commands_file is None else Path(args.commands_file).read_text().splitlines()
        commands = [c for c in commands if c.strip()] + [shlex.join(["realcam", "export", *argv])]
        out = export_checkpoint(args.config, args.ckpt, args.out, role=args.role, prefer="raw" if args.raw else "ema",
                                fps=args.fps, image_size=size, overwrite=args.overwrite,
                                provenance={"commands": commands}, network_args=args.network_args, text=args.text)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"realcam export: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote bundle {out}")
    return 0
