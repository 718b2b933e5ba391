"""``realcam eval camera``: how well did a generated video follow the requested camera?

    realcam eval camera --video gen.mp4 --trajectory arc:left:30 --fov 60
    realcam eval camera --video gen.mp4 --trajectory camera_extrinsics.json --camera cam09 --fov 60
    realcam eval camera --video gen.mp4 --trajectory arc:left:30 --fov 60 --source src.mp4   # + matched pixels
    realcam eval camera --video clip.mp4 --estimate-only --fov 60          # the video's own camera path

Writes ``OUT.json`` (RotErr, TransErr, CamMC, per-frame curves, both paths) and ``OUT.png`` (paths seen from above,
per-frame errors). Protocol and formulas: docs/metrics.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from realcam import geometry
from realcam.data.cli import at_least
from realcam.eval.camera import SCALE_MODES
from realcam.eval.estimators import CAMERA_ESTIMATORS
from realcam.registry import UnknownNameError

NO_INTRINSICS = ("missing intrinsics: the video's camera is unknown; pass --fov DEGREES (horizontal field of view) "
                 "or --intrinsics fx,fy,cx,cy (pixels of the video), or a trajectory file that carries K")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="realcam eval camera", description="Estimate a video's camera path and score "
                                "it against the requested trajectory: RotErr, TransErr, CamMC (docs/metrics.md).")
    p.add_argument("--video", required=True, help="the generated video (mp4)")
    p.add_argument("--trajectory", help="what was requested: a builder spec (arc:left:30, pan:right:20, ...) or a "
                   "file realcam stream accepts (realcam JSON, MultiCamVideo/ReCamMaster JSON with --camera, "
                   "RealEstate10K txt, nerfstudio transforms.json)")
    p.add_argument("--camera", help="camera of a MultiCamVideo JSON, e.g. cam01")
    p.add_argument("--estimate-only", action="store_true", help="only estimate and write the video's camera path")
    p.add_argument("--source", help="the source video the generated one was made from: adds the matched pixels "
                   "between each source and generated frame (ReCamMaster's view synchronisation)")
    k = p.add_mutually_exclusive_group()
    k.add_argument("--fov", type=float, help="the video's horizontal field of view, degrees")
    k.add_argument("--intrinsics", help="fx,fy,cx,cy in pixels of the video, or a JSON file with 'K' (3x3) and "
                   "optionally 'image_size' [H, W]")
    p.add_argument("--start", type=at_least(0), default=0, help="first video frame")
    p.add_argument("--stride", type=at_least(1), default=1, help="video frame stride")
    p.add_argument("--frames", type=at_least(2), default=None, help="frames to evaluate (default: all)")
    p.add_argument("--trajectory-start", type=at_least(0), default=0, help="pose of the first evaluated frame")
    p.add_argument("--trajectory-stride", type=at_least(1), default=1, help="poses per video frame (realcam stream "
                   "at stride s keeps every s-th pose of a file)")
    p.add_argument("--max-size", type=at_least(16), default=512, help="decode so the longer side is at most this "
                   "(K follows)")
    p.add_argument("--estimator", default="opencv", help=f"one of {', '.join(CAMERA_ESTIMATORS.list())}")
    p.add_argument("--max-features", type=at_least(8), default=2000, help="SIFT features per frame (opencv)")
    p.add_argument("--runs", type=at_least(1), default=3, help="estimates averaged (RANSAC is random)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", choices=SCALE_MODES, default="max_norm", help="how translations are made comparable")
    p.add_argument("--out", type=Path, default=None, help="output prefix: OUT.json and OUT.png "
                   "(default: the video's name + _camera)")
    return p


def parse_intrinsics(text: str) -> tuple[Tensor, tuple[int, int] | None]:
    """``fx,fy,cx,cy`` or a JSON file -> (K [3, 3], the image size it is in pixels of, if the file says)."""
    path = Path(text)
    if path.is_file():
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or "K" not in data:
            raise ValueError(f"--intrinsics {path}: expected a JSON object with 'K' [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]")
        K = geometry.validate_intrinsics(torch.tensor(data["K"], dtype=torch.float64), name=f"--intrinsics {path} K")
        size = data.get("image_size")
        return K, tuple(int(v) for v in size) if size else None
    try:
        fx, fy, cx, cy = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--intrinsics {text!r}: expected fx,fy,cx,cy in pixels (e.g. 1100,1100,640,360) or a JSON "
                         f"file with 'K'") from None
    K = geometry.make_intrinsics(fx, fy, cx, cy, dtype=torch.float64)
    return geometry.validate_intrinsics(K, name="--intrinsics"), None


def read_frames(args: argparse.Namespace, video: str, flag: str = "--video",
                size: tuple[int, int] | None = None) -> tuple[Tensor, tuple[int, int], dict[str, Any]]:
    """The evaluated frames uint8 [T, h, w, 3] (aspect kept, longer side <= --max-size, or ``size``) and the
    video's own size."""
    from realcam.data.video import probe_video, read_video

    if not Path(video).is_file():
        raise FileNotFoundError(f"{flag} {video} does not exist")
    info = probe_video(video)
    s = min(1.0, args.max_size / max(info.height, info.width))
    size = size or (max(1, round(info.height * s)), max(1, round(info.width * s)))
    stop = None if args.frames is None else args.start + (args.frames - 1) * args.stride + 1
    frames = read_video(video, args.start, stop, args.stride, size)
    if len(frames) < 2:
        raise ValueError(f"{flag} {video}: {len(frames)} frame selected; a camera path needs at least 2")
    return frames, (info.height, info.width), {"path": str(video), "video_size": [info.height, info.width],
                                              "evaluated_size": list(size), "fps": info.fps, "start": args.start,
                                              "stride": args.stride, "frames": len(frames)}


def source_matches(args: argparse.Namespace, generated: Tensor) -> dict[str, Any]:
    """Matched pixels per frame between --source and the generated frames (read at the generated size)."""
    from realcam.eval.features import matched_pixels

    source = read_frames(args, args.source, "--source", tuple(generated.shape[1:3]))[0]
    if len(source) != len(generated):
        raise ValueError(f"mismatched frame counts: --source {args.source} gives {len(source)} frames but --video "
                         f"gives {len(generated)}: trim one (--frames) so that frame t of each is the same instant")
    pixels = matched_pixels(source, generated, args.max_features, seed=args.seed)
    return {"matched_pixels": sum(pixels) / len(pixels), "matched_pixels_per_frame": pixels}


def requested_path(args: argparse.Namespace, T: int, size: tuple[int, int]) -> tuple[Tensor, Tensor | None, dict]:
    """The requested c2w [T, 4, 4] (one pose per evaluated frame) and the file's K in pixels of ``size``."""
    if not Path(args.trajectory).is_file():
        if args.camera is not None:
            raise ValueError(f"--camera only applies to a MultiCamVideo JSON file; {args.trajectory!r} is not a file")
        return geometry.parse_trajectory_spec(args.trajectory, T), None, {"kind": "spec", "spec": args.trajectory}
    traj = geometry.load_any_trajectory(args.trajectory, camera=args.camera, image_size=size)
    picks = list(range(args.trajectory_start, len(traj), args.trajectory_stride))
    if len(picks) != T:
        raise ValueError(f"mismatched frame counts: the video gives {T} frames but --trajectory {args.trajectory} "
                         f"gives {len(picks)} poses (of {len(traj)}, from pose {args.trajectory_start} every "
                         f"{args.trajectory_stride}): make them equal with --frames, --stride, --trajectory-start "
                         f"or --trajectory-stride")
    K = None
    if traj.K is not None:
        K = traj.K[args.trajectory_start].double()
        if traj.image_size is not None and tuple(traj.image_size) != tuple(size):
            K = geometry.resize_intrinsics(K, traj.image_size, size)
    info = {"kind": "file", "path": str(args.trajectory), "camera": traj.metadata.get("camera", args.camera),
            "poses_in_file": len(traj), "start": args.trajectory_start, "stride": args.trajectory_stride}
    return traj.c2w[picks].double(), K, info


def intrinsics(args: argparse.Namespace, video_hw: tuple[int, int], size: tuple[int, int],
               from_file: Tensor | None) -> tuple[Tensor, str]:
    if args.fov is not None:
        if not 0 < args.fov < 180:
            raise ValueError(f"--fov {args.fov}: a pinhole field of view is in (0, 180) degrees")
        return geometry.fov_intrinsics(*size, args.fov).double(), f"--fov {args.fov}"
    if args.intrinsics is not None:
        K, in_size = parse_intrinsics(args.intrinsics)
        return geometry.resize_intrinsics(K, in_size or video_hw, size), f"--intrinsics {args.intrinsics}"
    if from_file is not None:
        return from_file, f"K of --trajectory {args.trajectory}"
    raise ValueError(NO_INTRINSICS)


def output_prefix(args: argparse.Namespace) -> Path:
    out = args.out or Path(args.video).with_name(Path(args.video).stem + "_camera")
    inputs = {Path(p).resolve() for p in (args.video, args.source, args.trajectory, args.intrinsics)
              if p and Path(p).is_file()}
    for suffix in (".json", ".png"):
        if Path(f"{out}{suffix}").resolve() in inputs:
            raise ValueError(f"--out {out} would overwrite the input {out}{suffix}: pick another output prefix")
    return out


def run(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    from realcam.eval.features import check_size
    from realcam.eval.report import evaluate_camera, plot_camera
    from realcam.metrics import write_report

    if args.trajectory is None and not args.estimate_only:
        raise ValueError("--trajectory is required (the requested camera path), or pass --estimate-only")
    out = output_prefix(args)
    CAMERA_ESTIMATORS.get(args.estimator)                     # an unknown name fails before decoding
    frames, video_hw, video_info = read_frames(args, args.video)
    size = tuple(frames.shape[1:3])
    check_size(*size, what=f"--video {args.video} (evaluated at {size[0]}x{size[1]}, --max-size {args.max_size})")
    requested, K_file, traj_info = (None, None, None) if args.estimate_only else \
        requested_path(args, len(frames), size)
    K, K_from = intrinsics(args, video_hw, size, K_file)
    est_args = {"max_features": args.max_features} if args.estimator == "opencv" else {}
    result = evaluate_camera(frames, K, requested, args.estimator, est_args, args.runs, args.scale, args.seed)
    if args.source is not None:
        matches = source_matches(args, frames)
        result["summary"]["matched_pixels"] = matches["matched_pixels"]
        result["curves"]["matched_pixels"] = matches["matched_pixels_per_frame"]
    extra = {"command": "eval camera", "video": video_info, "trajectory": traj_info, "intrinsics": K.tolist(),
             "intrinsics_from": K_from, "estimator": args.estimator, "estimator_args": est_args,
             "lost_frames": result["lost_frames"], "curves": result["curves"],
             "estimated_c2w": result["estimated_c2w"], "per_run": result.get("per_run"),
             "estimator_frames": result["estimator_info"].get("frames")}
    if requested is not None:
        extra["requested_c2w"] = result["requested_c2w"]
    paths = {"json": str(write_report(f"{out}.json", result["summary"], extra)),
             "png": str(plot_camera(f"{out}.png", result, title=Path(args.video).name))}
    return result, paths


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        result, paths = run(args)
    except (ValueError, FileNotFoundError, ImportError, UnknownNameError) as err:
        print(f"realcam eval camera: error: {err}", file=sys.stderr)
        return 2
    s = result["summary"]
    if "RotErr" in s:
        print(f"{result['frames']} frames, {s['runs']} run(s): RotErr {s['RotErr']:.3f} rad "
              f"({s['rot_err_deg_mean']:.2f} deg/frame), TransErr {s['TransErr']:.3f}, CamMC {s['CamMC']:.3f}, "
              f"lost {s['lost_frames']:.0f} frame(s)")
    else:
        print(f"{result['frames']} frames: rotation from frame 0 up to {s['rotation_deg_max']:.2f} deg, "
              f"lost {s['lost_frames']} frame(s)")
    if "matched_pixels" in s:
        print(f"matched pixels with --source: {s['matched_pixels']:.1f} per frame")
    print("wrote " + ", ".join(paths.values()))
    return 0
