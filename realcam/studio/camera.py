"""The studio's virtual camera: live steering (keys, drag, wheel), presets, replay and recording.

The camera is held as ``rel [4, 4]``, the target pose relative to the source camera of each frame (OpenCV
camera-to-world, metres; the ``current_source`` convention of ``realcam stream``). Inputs arrive on the event
loop at any time; the session's worker takes one pose per generated frame with :meth:`CameraControl.next_pose`,
so a change shows from the next chunk on. Motion is per frame, not per second: a key held for n frames moves the
camera n steps, whatever the frame rate, which keeps a stream reproducible.
"""
from __future__ import annotations

import math
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from realcam import geometry

# per frame at speed 1: metres for translation and dolly, degrees for pan/tilt
TRANSLATE_STEP_M = 0.02
ROTATE_STEP_DEG = 1.0
ORBIT_DEG_PER_PX = 0.25     # mouse drag
DOLLY_M_PER_WHEEL = 0.0005  # per wheel deltaY unit (one notch is about 100)
ORBIT_RADIUS_M = 2.0        # drag orbits a point this far in front of the source camera (geometry.arc's radius)
MAX_RECORD_FRAMES = 9000    # about five minutes at 30 FPS

# key -> (kind, axis, sign); documented on the page and in docs/studio.md
KEYS: dict[str, tuple[str, int, float]] = {
    "w": ("move", 2, 1.0), "s": ("move", 2, -1.0),           # dolly forward / back (camera z)
    "a": ("move", 0, -1.0), "d": ("move", 0, 1.0),           # truck left / right (camera x)
    "q": ("move", 1, 1.0), "e": ("move", 1, -1.0),           # pedestal down / up (camera y points down)
    "arrowleft": ("turn", 1, -1.0), "arrowright": ("turn", 1, 1.0),   # pan (yaw about camera y)
    "arrowup": ("turn", 0, 1.0), "arrowdown": ("turn", 0, -1.0),      # tilt (pitch about camera x)
}
KEY_HELP = {"w / s": "dolly forward / back", "a / d": "truck left / right", "q / e": "down / up",
            "arrow left / right": "pan", "arrow up / down": "tilt", "drag": "orbit", "wheel": "dolly"}


def _eye() -> Tensor:
    return torch.eye(4, dtype=torch.float64)


def _translation(xyz: Any) -> Tensor:
    m = _eye()
    m[:3, 3] = torch.as_tensor(xyz, dtype=torch.float64)
    return m


def _rotation(axis: int, degrees: float) -> Tensor:
    w = torch.zeros(3, dtype=torch.float64)
    w[axis] = math.radians(degrees)
    m = _eye()
    m[:3, :3] = geometry.so3_exp(w)
    return m


class CameraControl:
    """Thread-safe target camera state. Inputs: :meth:`set_keys`, :meth:`orbit`, :meth:`dolly`, :meth:`set_pose`,
    :meth:`play_path` (presets, replays), :meth:`reset`; output: :meth:`next_pose` once per frame."""

    def __init__(self, speed: float = 1.0):
        self._lock = threading.Lock()
        self.speed = float(speed)
        self._rel = _eye()
        self._held: set[str] = set()
        self._taps: set[str] = set()           # pressed since the last frame: a quick tap still moves one step
        self._path: Tensor | None = None       # [n, 4, 4] poses still to play, relative to _base
        self._base = _eye()
        self._record: list[Tensor] | None = None

    # ---- inputs (event loop) ---------------------------------------------------------------------------
    def set_keys(self, down: list[str]) -> None:
        """The full set of keys held now (names as in :data:`KEYS`); keys not held before count as a tap."""
        with self._lock:
            new = set(down)
            self._taps |= new - self._held
            self._held = new
            if new:
                self._path = None              # steering takes over from a preset or replay

    def orbit(self, dx: float, dy: float) -> None:
        """Drag by (dx, dy) pixels: orbit the point ``ORBIT_RADIUS_M`` in front of the source camera."""
        yaw, pitch = dx * ORBIT_DEG_PER_PX * self.speed, -dy * ORBIT_DEG_PER_PX * self.speed
        pivot = _translation([0.0, 0.0, ORBIT_RADIUS_M])
        turn = _rotation(1, -yaw) @ _rotation(0, pitch)
        with self._lock:
            self._path = None
            self._rel = pivot @ turn @ geometry.rigid_inverse(pivot) @ self._rel

    def dolly(self, amount: float) -> None:
        """Wheel ``deltaY`` units (negative = forward, as a page scrolls up)."""
        with self._lock:
            self._path = None
            self._rel = self._rel @ _translation([0.0, 0.0, -amount * DOLLY_M_PER_WHEEL * self.speed])

    def set_pose(self, rel: Tensor) -> None:
        """Jump to ``rel [4, 4]`` (already validated by the caller)."""
        with self._lock:
            self._path = None
            self._rel = rel.to(torch.float64).clone()

    def play_path(self, path: Tensor, from_current: bool = True) -> None:
        """Play ``path [n, 4, 4]`` one pose per frame, from the current pose (presets) or the source view
        (replays); the camera then holds the last pose."""
        with self._lock:
            self._base = self._rel.clone() if from_current else _eye()
            self._path = path.to(torch.float64).clone()
            self._held, self._taps = set(), set()

    def reset(self) -> None:
        """Back to the source view; presets, replays and held keys stop."""
        with self._lock:
            self._rel, self._path, self._held, self._taps = _eye(), None, set(), set()

    # ---- recording ---------------------------------------------------------------------------------------
    def start_recording(self) -> None:
        with self._lock:
            self._record = []

    def stop_recording(self) -> list[Tensor]:
        with self._lock:
            poses, self._record = self._record or [], None
            return poses

    @property
    def recording(self) -> bool:
        return self._record is not None

    # ---- output (worker) ------------------------------------------------------------------------------------
    @property
    def pose(self) -> Tensor:
        with self._lock:
            return self._rel.clone()

    @property
    def playing_path(self) -> bool:
        return self._path is not None

    def next_pose(self) -> tuple[Tensor, bool]:
        """The pose of the next frame ``[4, 4]`` (float64) and whether recording just hit its cap."""
        with self._lock:
            if self._path is not None:
                self._rel = self._base @ self._path[0]
                self._path = self._path[1:] if len(self._path) > 1 else None
            for key in sorted(self._held | self._taps):
                kind, axis, sign = KEYS[key]
                if kind == "move":
                    xyz = [0.0, 0.0, 0.0]
                    xyz[axis] = sign * TRANSLATE_STEP_M * self.speed
                    self._rel = self._rel @ _translation(xyz)
                else:
                    self._rel = self._rel @ _rotation(axis, sign * ROTATE_STEP_DEG * self.speed)
            self._taps = set()
            capped = False
            if self._record is not None:
                self._record.append(self._rel.clone())
                capped = len(self._record) >= MAX_RECORD_FRAMES
            return self._rel.clone(), capped


def trajectory_json(poses: list[Tensor], fps: float, K: Tensor, image_size: tuple[int, int],
                    metadata: dict[str, Any]) -> str:
    """Recorded poses -> the text of a realcam trajectory JSON (the format of :func:`geometry.save_trajectory`)."""
    if not poses:
        raise ValueError("nothing was recorded: press record, fly the camera, then stop and save")
    traj = geometry.Trajectory(torch.stack(poses), K=K.double(), image_size=image_size, fps=fps, metadata=metadata)
    with tempfile.TemporaryDirectory() as tmp:
        return geometry.save_trajectory(Path(tmp) / "trajectory.json", traj).read_text()


def replay_path(text: str, max_frames: int = MAX_RECORD_FRAMES) -> Tensor:
    """The text of a trajectory file (realcam JSON, nerfstudio or RealEstate10K) -> ``[n, 4, 4]`` poses relative
    to its first pose, the rule of ``realcam stream --trajectory FILE``; a clear ValueError otherwise."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trajectory"
        path.write_text(text)
        try:
            traj = geometry.load_any_trajectory(path)
        except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as err:
            raise ValueError(f"trajectory is not a trajectory file realcam reads ({str(err).replace(str(path), 'it')})"
                             ) from None
    if len(traj) > max_frames:
        raise ValueError(f"trajectory has {len(traj)} poses: the studio replays at most {max_frames}")
    c2w = traj.c2w.double()
    return geometry.rigid_inverse(c2w[0])[None] @ c2w
