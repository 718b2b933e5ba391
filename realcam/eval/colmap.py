"""The ``pycolmap`` and ``glomap`` camera estimators: COLMAP's incremental mapper (Python package) and GLOMAP's
global mapper (the ``colmap`` and ``glomap`` executables, as in CamI2V's evaluation). Neither ships with realcam;
each is used when installed and otherwise fails with what to install.

Both run on the frames written as PNGs, with one shared PINHOLE camera fixed to the given K (COLMAP, like
realcam, puts pixel centres at +0.5), and read the result from COLMAP's text model (``images.txt``).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from realcam.eval import features as F
from realcam.eval.estimators import CAMERA_ESTIMATORS, EstimatedPath, hold_lost

NO_PYCOLMAP = "the 'pycolmap' estimator needs the pycolmap package ({err}): pip install pycolmap, or use --estimator opencv"
NO_GLOMAP = ("the 'glomap' estimator needs the {exe!r} executable on PATH (not found): install COLMAP and GLOMAP "
             "(https://github.com/colmap/glomap), or use --estimator opencv")


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """COLMAP's (qw, qx, qy, qz) -> R [3, 3]."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def read_images_txt(path: str | Path) -> dict[str, np.ndarray]:
    """COLMAP ``images.txt`` -> {image name: world-to-camera [4, 4]}. Each image has two lines: ``IMAGE_ID QW QX
    QY QZ TX TY TZ CAMERA_ID NAME`` and its 2-D points (skipped)."""
    lines = [ln for ln in Path(path).read_text().splitlines() if not ln.startswith("#")]
    poses = {}
    for n, line in enumerate(lines[::2]):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 10:
            raise ValueError(f"{path}: image line {n} has {len(parts)} fields, expected IMAGE_ID QW QX QY QZ TX TY TZ "
                             f"CAMERA_ID NAME")
        w2c = np.eye(4)
        w2c[:3, :3] = quaternion_to_matrix([float(v) for v in parts[1:5]])
        w2c[:3, 3] = [float(v) for v in parts[5:8]]
        poses[" ".join(parts[9:])] = w2c
    return poses


def frame_names(T: int) -> list[str]:
    return [f"{t:05d}.png" for t in range(T)]


def path_from_model(w2c_by_name: dict[str, np.ndarray], T: int, estimator: str) -> EstimatedPath:
    """Registered images -> the path relative to frame 0; unregistered frames are lost (they hold)."""
    names = frame_names(T)
    if names[0] not in w2c_by_name:
        raise ValueError(f"{estimator}: frame 0 was not registered ({len(w2c_by_name)} of {T} frames were), so no "
                         f"path relative to it exists; try --estimator opencv or a longer, more textured video")
    valid = np.array([n in w2c_by_name for n in names])
    c2w = np.tile(np.eye(4), (T, 1, 1))
    first = w2c_by_name[names[0]]
    for t, name in enumerate(names):
        if valid[t]:
            c2w[t] = first @ np.linalg.inv(w2c_by_name[name])     # inv(c2w_0) @ c2w_t
    return EstimatedPath(torch.from_numpy(hold_lost(c2w, valid)), torch.from_numpy(valid),
                         {"estimator": estimator, "registered": int(valid.sum())})


def write_frames(frames: Any, folder: Path) -> tuple[int, int]:
    cv2 = F.cv2_module()
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in zip(frame_names(len(frames)), frames):
        cv2.imwrite(str(folder / name), F.as_uint8(frame)[..., ::-1])
    return F.as_uint8(frames[0]).shape[:2]


def _camera_params(K: Tensor) -> str:
    K = torch.as_tensor(K, dtype=torch.float64)
    return ",".join(f"{float(v):.6f}" for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))


@CAMERA_ESTIMATORS.register("pycolmap")
class PycolmapEstimator:
    """COLMAP's incremental mapper through pycolmap, intrinsics fixed, sequential matching."""

    def __init__(self, overlap: int = 10):
        self.overlap = overlap

    def __call__(self, frames: Any, K: Tensor, seed: int = 0) -> EstimatedPath:
        try:
            import pycolmap
        except ImportError as err:
            raise ImportError(NO_PYCOLMAP.format(err=err)) from None
        with tempfile.TemporaryDirectory(prefix="realcam-pycolmap-") as tmp:
            root = Path(tmp)
            H, W = write_frames(frames, root / "images")
            F.check_size(H, W)
            db = root / "database.db"
            reader = pycolmap.ImageReaderOptions()
            reader.camera_model, reader.camera_params = "PINHOLE", _camera_params(K)
            pycolmap.extract_features(db, root / "images", camera_mode=pycolmap.CameraMode.SINGLE,
                                      reader_options=reader)
            pairing = pycolmap.SequentialPairingOptions()
            pairing.overlap = self.overlap
            pycolmap.match_sequential(db, pairing_options=pairing)
            options = pycolmap.IncrementalPipelineOptions()
            options.ba_refine_focal_length = options.ba_refine_principal_point = False
            options.ba_refine_extra_params = False
            if hasattr(options, "random_seed"):
                options.random_seed = seed
            models = pycolmap.incremental_mapping(db, root / "images", root / "sparse", options=options)
            if not models:
                raise ValueError("pycolmap registered no frames: the video has too little texture or motion overlap")
            best = max(models.values(), key=lambda rec: rec.num_reg_images())
            (root / "text").mkdir()
            best.write_text(str(root / "text"))
            return path_from_model(read_images_txt(root / "text" / "images.txt"), len(frames), "pycolmap")


@CAMERA_ESTIMATORS.register("glomap")
class GlomapEstimator:
    """CamI2V's set-up: ``colmap feature_extractor`` (one PINHOLE camera, K fixed), ``colmap sequential_matcher``,
    ``glomap mapper`` with a text output."""

    def __init__(self, colmap: str = "colmap", glomap: str = "glomap", timeout_s: float = 3600.0):
        self.colmap, self.glomap, self.timeout_s = colmap, glomap, timeout_s

    def __call__(self, frames: Any, K: Tensor, seed: int = 0) -> EstimatedPath:
        exes = {}
        for exe in (self.colmap, self.glomap):
            exes[exe] = shutil.which(exe)
            if exes[exe] is None:
                raise ImportError(NO_GLOMAP.format(exe=exe))
        with tempfile.TemporaryDirectory(prefix="realcam-glomap-") as tmp:
            root = Path(tmp)
            H, W = write_frames(frames, root / "images")
            F.check_size(H, W)
            db, out = str(root / "database.db"), root / "sparse"
            out.mkdir()
            self._run([exes[self.colmap], "feature_extractor", "--database_path", db, "--image_path",
                       str(root / "images"), "--ImageReader.single_camera", "1", "--ImageReader.camera_model",
                       "PINHOLE", "--ImageReader.camera_params", _camera_params(K)])
            self._run([exes[self.colmap], "sequential_matcher", "--database_path", db])
            self._run([exes[self.glomap], "mapper", "--database_path", db, "--image_path", str(root / "images"),
                       "--output_path", str(out), "--output_format", "txt"])
            models = sorted(out.glob("*/images.txt"), key=lambda p: p.stat().st_size, reverse=True)
            if not models:
                raise ValueError(f"glomap wrote no model under {out}: it registered no frames")
            return path_from_model(read_images_txt(models[0]), len(frames), "glomap")

    def _run(self, cmd: list[str]) -> None:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout_s)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise ValueError(f"{Path(cmd[0]).name} {cmd[1]} failed (exit {done.returncode}): " + " | ".join(tail))
