"""Estimate a video's camera path, score it against a requested path over several runs, and write the JSON and
the plot of ``realcam eval camera``.

``evaluate_camera(frames, K, requested_c2w)`` is the Python entry point; ``requested_c2w=None`` only estimates.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from realcam.atomic import write_atomic
from realcam.geometry import so3_log
from realcam.eval.camera import SCALE_MODES, average_summaries, camera_errors, relative_to_first, rotation_angles
from realcam.eval.estimators import EstimatedPath, build_estimator


def evaluate_camera(frames: Any, K: Tensor, requested_c2w: Tensor | None = None, estimator: str = "opencv",
                    estimator_args: dict[str, Any] | None = None, runs: int = 1, scale: str = "max_norm",
                    seed: int = 0) -> dict[str, Any]:
    """Estimate the camera path of ``frames`` (uint8 ``[T, H, W, 3]``, intrinsics ``K [3, 3]`` in their pixels)
    ``runs`` times (seeds ``seed, seed + 1, ...``) and, with ``requested_c2w [T, 4, 4]``, score it.

    Returns ``{"estimated_c2w": [T, 4, 4] (run 0), "lost_frames", "runs", "summary" (RotErr, TransErr, CamMC
    averaged over runs), "curves" (per-frame errors averaged over runs), "per_run"}``; without a request, the
    summary holds the path's own rotation and translation and the curves its per-frame rotation angle.
    """
    if runs < 1:
        raise ValueError(f"runs={runs}: estimate at least once")
    if scale not in SCALE_MODES:
        raise ValueError(f"scale={scale!r}: choose one of {', '.join(SCALE_MODES)}")
    T = len(frames)
    if requested_c2w is not None and len(requested_c2w) != T:
        raise ValueError(f"the video has {T} frames but the requested trajectory has {len(requested_c2w)} poses: "
                         f"give one pose per frame")
    est = build_estimator(estimator, **(estimator_args or {}))
    runs = runs if requested_c2w is not None else 1         # nothing to average without a request
    paths: list[EstimatedPath] = [est(frames, K, seed=seed + r) for r in range(runs)]
    out: dict[str, Any] = {"estimator": estimator, "estimator_args": dict(estimator_args or {}), "runs": runs,
                           "frames": T, "estimated_c2w": paths[0].c2w, "lost_frames": paths[0].lost,
                           "estimator_info": paths[0].info}
    if requested_c2w is None:
        rel = relative_to_first(paths[0].c2w)
        angle = torch.rad2deg(rotation_angles(rel[:1, :3, :3], rel[:, :3, :3]))
        axes = torch.rad2deg(so3_log(rel[:, :3, :3]))        # about the frame-0 camera's x (tilt), y (pan), z (roll)
        out["summary"] = {"rotation_deg_last": float(angle[-1]), "rotation_deg_max": float(angle.max()),
                          "lost_frames": len(paths[0].lost), "runs": runs}
        out["curves"] = {"rotation_from_first_deg": angle.tolist(), "pan_deg": axes[:, 1].tolist(),
                         "tilt_deg": axes[:, 0].tolist(), "roll_deg": axes[:, 2].tolist(),
                         "position": rel[:, :3, 3].tolist()}
        return out
    errors = [camera_errors(requested_c2w, p.c2w, scale) for p in paths]
    summaries = [dict(e.summary(), lost_frames=len(p.lost)) for e, p in zip(errors, paths)]
    out["summary"] = average_summaries(summaries)
    out["per_run"] = summaries
    out["curves"] = {k: torch.tensor([e.curves()[k] for e in errors]).mean(0).tolist()
                     for k in ("rot_err_deg", "trans_err", "cammc")}
    out["requested_c2w"] = relative_to_first(torch.as_tensor(requested_c2w))
    return out


def plot_camera(path: str | os.PathLike, result: dict[str, Any], title: str = "") -> Path:
    """A PNG: the camera paths seen from above (x right, z forward of frame 0, each path scaled to its largest
    distance from frame 0) and, with a request, the per-frame RotErr and TransErr curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    requested = result.get("requested_c2w")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    top = axes[0]
    for name, c2w, style in (("requested", requested, "-o"), ("estimated", result["estimated_c2w"], "-x")):
        if c2w is None:
            continue
        pos = relative_to_first(torch.as_tensor(c2w))[:, :3, 3]
        if not pos.abs().amax() > 0:
            top.text(0.5, 0.6, f"{name}: no measurable translation\n(rotation only)", ha="center",
                     transform=top.transAxes)
        pos = pos / (pos.norm(dim=-1).amax() + 1e-9)
        top.plot(pos[:, 0].tolist(), pos[:, 2].tolist(), style, ms=3, label=name)
        top.plot([float(pos[0, 0])], [float(pos[0, 2])], "ks", ms=5)
    top.set(xlabel="x (right of frame 0)", ylabel="z (forward of frame 0)", title="camera path from above, "
            "scaled to 1")
    top.axis("equal")
    top.legend()
    curves = axes[1]
    frames = range(result["frames"])
    if requested is None:
        for key, sign in (("pan_deg", "right"), ("tilt_deg", "up"), ("roll_deg", "clockwise")):
            curves.plot(frames, result["curves"][key], "-", label=f"{key[:-4]} (+ = {sign})")
        curves.set(xlabel="frame", ylabel="degrees", title="rotation from frame 0")
        curves.legend()
    else:
        curves.plot(frames, result["curves"]["rot_err_deg"], "-o", ms=3, label="RotErr per frame (deg)")
        twin = curves.twinx()
        twin.plot(frames, result["curves"]["trans_err"], "-x", ms=3, color="tab:orange", label="TransErr per frame")
        twin.set_ylabel("TransErr (unitless)")
        curves.set(xlabel="frame", ylabel="degrees", title="errors per frame")
        lines = curves.get_lines() + twin.get_lines()
        curves.legend(lines, [line.get_label() for line in lines], loc="upper left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return write_atomic(path, buf.getvalue())
