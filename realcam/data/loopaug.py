"""LoopAug: loop-closed training sequences built from multiview data (DESIGN §1.4).

A :class:`LoopSequence` pairs a source stream with a target stream, step by step, and records a
revisit map ``{n: m}`` (m < n): the ground-truth target frame at step n equals the one at step m,
because the (time, target pose) state at n was already visited at m.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from realcam import geometry
from realcam.registry import LOOPAUG_STRATEGIES

_FRAME_FIELDS = ("source_frames", "target_frames")
_POSE_FIELDS = ("source_c2w", "target_c2w")
_K_FIELDS = ("source_K", "target_K")


@dataclass
class LoopSequence:
    """One training sequence of T synchronized (source, target) steps.

    source_frames / target_frames: uint8 [T, H, W, 3]; source_c2w / target_c2w: float32 [T, 4, 4]
    (OpenCV camera-to-world, metres); source_K / target_K: float32 [T, 3, 3] (pixels).
    revisit: {n: m} with 0 <= m < n < T; target_frames[n] is the ground truth that equals target_frames[m].
    metadata: JSON-serializable extras; strategies store ``times`` (the scene time of every step, in source
    frame units) and camera indices there.
    Numpy arrays are accepted and converted to torch tensors.
    """

    source_frames: Tensor
    target_frames: Tensor
    source_c2w: Tensor
    target_c2w: Tensor
    source_K: Tensor
    target_K: Tensor
    revisit: dict[int, int] = field(default_factory=dict)
    strategy: str = "none"
    scene_id: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in _FRAME_FIELDS:
            x = torch.as_tensor(getattr(self, name))
            if x.dtype != torch.uint8:
                raise TypeError(f"{name} has dtype {x.dtype}: expected uint8 frames [T, H, W, 3] in 0..255")
            if x.ndim != 4 or x.shape[-1] != 3:
                raise ValueError(f"{name} has shape {tuple(x.shape)}: expected [T, H, W, 3]")
            setattr(self, name, x.contiguous())
        if self.source_frames.shape != self.target_frames.shape:
            raise ValueError(
                f"target_frames shape {tuple(self.target_frames.shape)} != source_frames shape "
                f"{tuple(self.source_frames.shape)}: source and target streams must have equal T, H, W"
            )
        T = self.source_frames.shape[0]
        if T < 1:
            raise ValueError("source_frames is empty: a LoopSequence needs at least one step")
        for name, tail, check in (
            *((n, (4, 4), geometry.validate_c2w) for n in _POSE_FIELDS),
            *((n, (3, 3), geometry.validate_intrinsics) for n in _K_FIELDS),
        ):
            x = torch.as_tensor(getattr(self, name))
            if not x.is_floating_point():
                raise TypeError(f"{name} has dtype {x.dtype}: expected a float tensor [T, {tail[0]}, {tail[1]}]")
            x = x.to(torch.float32)
            if tuple(x.shape) != (T, *tail):
                raise ValueError(f"{name} has shape {tuple(x.shape)}: expected [{T}, {tail[0]}, {tail[1]}] (T={T})")
            setattr(self, name, check(x.contiguous(), name=name))   # expanded views would save with 0 strides
        self.revisit = _check_revisit(self.revisit, T)
        if not isinstance(self.metadata, dict):
            raise TypeError(f"metadata is a {type(self.metadata).__name__}: expected a dict")

    # -- accessors ---------------------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        return int(self.source_frames.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.source_frames.shape[1]), int(self.source_frames.shape[2])

    def to_dict(self) -> dict[str, Any]:
        """Plain containers: numpy arrays for tensors, ``revisit`` with int keys, metadata as is."""
        out: dict[str, Any] = {n: getattr(self, n).numpy() for n in (*_FRAME_FIELDS, *_POSE_FIELDS, *_K_FIELDS)}
        out.update(revisit=dict(self.revisit), strategy=self.strategy, scene_id=self.scene_id,
                   metadata=dict(self.metadata))
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LoopSequence":
        """Inverse of :meth:`to_dict`; also accepts JSON-style revisit keys (``{"5": 3}``)."""
        kw = {n: torch.as_tensor(np.asarray(d[n])) for n in (*_FRAME_FIELDS, *_POSE_FIELDS, *_K_FIELDS)}
        return cls(**kw, revisit={int(k): int(v) for k, v in dict(d.get("revisit", {})).items()},
                   strategy=str(d.get("strategy", "none")), scene_id=str(d.get("scene_id", "")),
                   metadata=dict(d.get("metadata", {})))


def _check_revisit(revisit: dict, T: int) -> dict[int, int]:
    if not isinstance(revisit, dict):
        raise TypeError(f"revisit is a {type(revisit).__name__}: expected a dict {{n: m}} of step indices")
    out: dict[int, int] = {}
    for n, m in revisit.items():
        n, m = int(n), int(m)
        if not 0 <= m < n < T:
            raise ValueError(f"revisit[{n}] = {m} is invalid: need 0 <= m < n < T={T} (a revisit points back in time)")
        out[n] = m
    return dict(sorted(out.items()))


# ============================================================================================ scene access
class _SceneView:
    """What a strategy may read from one scene of a multiview source.

    Renderer-backed sources (``renders_novel_views = True``, with ``scene``/``cameras``/``novel_camera``) are
    rendered on demand, one render per distinct (time, pose) state. Clip-only sources are read from their
    ``clip(index)`` frames, so their targets are limited to the K recorded cameras at integer frames.
    """

    def __init__(self, source: Any, index: int):
        self.source, self.index = source, int(index)
        self.renderable = bool(getattr(source, "renders_novel_views", False))
        if self.renderable:
            self.scene = source.scene(index)
            self.c2w, self.K, _ = source.cameras(index)
            self.fps, self.scene_id = float(source.fps), self.scene.scene_id
            self.size = (int(source.height), int(source.width))
            self.clip = None
        else:
            self.clip = source.clip(index)
            self.c2w, self.K, self.fps, self.scene_id = self.clip.c2w, self.clip.K, self.clip.fps, self.clip.scene_id
            self.size = self.clip.image_size
        self.num_cameras, self.num_frames = int(self.c2w.shape[0]), int(self.c2w.shape[1])

    def frames(self, cams: list[int], times: list[int], c2w: Tensor, K: Tensor) -> Tensor:
        """uint8 [N, H, W, 3] for N states; ``cams[i] = -1`` marks a novel camera (renderer only)."""
        if not self.renderable:
            return self.clip.frames[torch.tensor(cams), torch.tensor(times)]
        keys = _state_keys(times, c2w, K)
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        uniq = sorted(set(first.values()))
        t_sec = torch.tensor([times[i] for i in uniq], dtype=torch.float64) / self.fps
        out = self.scene.render(c2w[uniq], K[uniq], t_sec, *self.size)
        pos = {i: j for j, i in enumerate(uniq)}
        return out[torch.tensor([pos[first[k]] for k in keys])]


def _state_keys(times: list[int], c2w: Tensor, K: Tensor) -> list[tuple]:
    """Exact (time, pose, intrinsics) identity of each step; equal keys render equal frames."""
    c, k = c2w.contiguous().numpy(), K.contiguous().numpy()
    return [(int(t), c[i].tobytes(), k[i].tobytes()) for i, t in enumerate(times)]


def revisit_map(times: list[int], c2w: Tensor, K: Tensor, cams: list[int] | None = None) -> dict[int, int]:
    """{n: m} where step n repeats the (time, target pose, intrinsics) state first seen at step m < n.

    ``cams`` adds the recorded camera to the state: for recorded video only the very same frame is known to
    be identical (two cameras at one pose, like MultiCamVideo's shared start, may still differ in encoding).
    """
    first: dict[tuple, int] = {}
    out: dict[int, int] = {}
    keys = _state_keys(times, c2w, K)
    if cams is not None:
        keys = [(c, *k) for c, k in zip(cams, keys)]
    for n, key in enumerate(keys):
        if key in first:
            out[n] = first[key]
        else:
            first[key] = n
    return out


def triangle(step: int, span: int) -> int:
    """0, 1, ..., span-1, span-2, ..., 0, 1, ... (a ping-pong over ``span`` positions; 0 when span is 1)."""
    if span <= 1:
        return 0
    r = step % (2 * (span - 1))
    return r if r < span else 2 * (span - 1) - r


def _randint(generator: torch.Generator, n: int) -> int:
    return int(torch.randint(n, (1,), generator=generator))


def _pick_cameras(view: _SceneView, generator: torch.Generator) -> tuple[int, int]:
    """A random source camera and a different target camera (the same one when K = 1)."""
    a = _randint(generator, view.num_cameras)
    if view.num_cameras == 1:
        return a, a
    return a, (a + 1 + _randint(generator, view.num_cameras - 1)) % view.num_cameras


def _check_length(name: str, length: int) -> int:
    if not isinstance(length, int) or length < 1:
        raise ValueError(f"{name}: length={length!r} must be an int >= 1 (steps per sequence)")
    return length


class _Strategy(ABC):
    """Shared assembly: the subclass plans per-step (camera, frame, pose) for source and target; this renders
    or gathers the frames, derives the revisit map from exact state equality and builds the LoopSequence."""

    name = "none"

    def __init__(self, length: int = 16):
        self.length = _check_length(type(self).__name__, length)

    def __call__(self, source: Any, index: int, generator: torch.Generator | None = None) -> LoopSequence:
        if generator is None:
            generator = torch.Generator().manual_seed(int(index))
        view = _SceneView(source, index)
        plan = self.plan(view, generator)
        src_frames = view.frames(plan["source_cams"], plan["source_times"], plan["source_c2w"], plan["source_K"])
        tgt_frames = view.frames(plan["target_cams"], plan["target_times"], plan["target_c2w"], plan["target_K"])
        cams = None if view.renderable else plan["target_cams"]   # recorded frames: same camera, not just same pose
        meta = {"source_index": int(index), "fps": view.fps, "times": list(plan["target_times"]),
                "source_times": list(plan["source_times"]), "source_cameras": list(plan["source_cams"]),
                "target_cameras": list(plan["target_cams"]), **plan.get("extra", {})}
        return LoopSequence(src_frames, tgt_frames, plan["source_c2w"], plan["target_c2w"], plan["source_K"],
                            plan["target_K"], revisit=revisit_map(plan["target_times"], plan["target_c2w"],
                                                                  plan["target_K"], cams),
                            strategy=self.name, scene_id=view.scene_id, metadata=meta)

    @abstractmethod
    def plan(self, view: _SceneView, generator: torch.Generator) -> dict[str, Any]:
        """Keys: source_/target_ cams (list[int], -1 = novel), times (list[int] frames), c2w [L, 4, 4], K [L, 3, 3];
        optional ``extra`` metadata."""

    @staticmethod
    def _rig(view: _SceneView, cams: list[int], times: list[int]) -> tuple[Tensor, Tensor]:
        c, t = torch.tensor(cams), torch.tensor(times)
        return view.c2w[c, t], view.K[c, t]

    def _target_track(self, view: _SceneView, cam: int, generator: torch.Generator,
                      novel: bool) -> tuple[Tensor, Tensor, int]:
        """Per-frame target c2w [T, 4, 4] and K [T, 3, 3]: rig camera ``cam``, or a fresh novel camera (-1)."""
        if novel and view.renderable:
            c2w, K, _ = view.source.novel_camera(view.index, generator)
            return c2w, K, -1
        return view.c2w[cam], view.K[cam], cam


def _max_span(view: _SceneView, stride: int, who: str) -> int:
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"{who}: stride={stride!r} must be an int >= 1")
    return (view.num_frames - 1) // stride + 1


def _time_window(view: _SceneView, span: int, stride: int, generator: torch.Generator) -> int:
    """A random start frame so that ``span`` frames at ``stride`` fit in the scene."""
    return _randint(generator, view.num_frames - (span - 1) * stride)


# ============================================================================================ strategies
@LOOPAUG_STRATEGIES.register("none")
class NoLoop(_Strategy):
    """Plain sequences: time runs forward ``length`` frames; the target follows its own camera. No revisits.

    novel_target: with a renderer-backed source, the target is a fresh camera (not one of the K); otherwise
    it is another of the K recorded cameras.
    """

    name = "none"

    def __init__(self, length: int = 16, stride: int = 1, novel_target: bool = True):
        super().__init__(length)
        self.stride, self.novel_target = stride, bool(novel_target)

    def plan(self, view: _SceneView, generator: torch.Generator) -> dict[str, Any]:
        if _max_span(view, self.stride, "none") < self.length:
            raise ValueError(f"none: length={self.length} at stride={self.stride} needs "
                             f"{(self.length - 1) * self.stride + 1} frames but the scene has {view.num_frames}; "
                             f"lower length/stride or raise the source's num_frames")
        start = _time_window(view, self.length, self.stride, generator)
        times = [start + i * self.stride for i in range(self.length)]
        return _forward_plan(self, view, generator, times)


@LOOPAUG_STRATEGIES.register("pingpong")
class PingPong(_Strategy):
    """Time runs forward over ``span`` frames, then back, then forward again ... (``length`` steps in all).

    Source and target cameras keep their own per-frame poses, so going back in time revisits (time, pose)
    states exactly: step n maps to the first step with the same frame. ``span`` defaults to one round trip,
    ``(length + 1) // 2``, capped by the clip's frames (longer sequences then make several laps).
    """

    name = "pingpong"

    def __init__(self, length: int = 16, span: int | None = None, stride: int = 1, novel_target: bool = True):
        super().__init__(length)
        if span is not None and (not isinstance(span, int) or span < 1):
            raise ValueError(f"pingpong: span={span!r} must be None or an int >= 1 (distinct frames per lap)")
        self.span, self.stride, self.novel_target = span, stride, bool(novel_target)

    def plan(self, view: _SceneView, generator: torch.Generator) -> dict[str, Any]:
        max_span = _max_span(view, self.stride, "pingpong")
        span = self.span or min((self.length + 1) // 2, max_span)
        if span > max_span:
            raise ValueError(f"pingpong: span={span} at stride={self.stride} needs {(span - 1) * self.stride + 1} "
                             f"frames but the scene has {view.num_frames}; lower span or raise num_frames")
        start = _time_window(view, span, self.stride, generator)
        times = [start + triangle(s, span) * self.stride for s in range(self.length)]
        return _forward_plan(self, view, generator, times, extra={"span": span})


def _forward_plan(strategy: Any, view: _SceneView, generator: torch.Generator, times: list[int],
                  extra: dict | None = None) -> dict[str, Any]:
    """Source = rig camera a at ``times``; target = another rig camera (or a novel one) at the same ``times``."""
    a, b = _pick_cameras(view, generator)
    track_c2w, track_K, b = strategy._target_track(view, b, generator, strategy.novel_target)
    src_c2w, src_K = strategy._rig(view, [a] * len(times), times)
    t = torch.tensor(times)
    return dict(source_cams=[a] * len(times), source_times=times, source_c2w=src_c2w, source_K=src_K,
                target_cams=[b] * len(times), target_times=times, target_c2w=track_c2w[t], target_K=track_K[t],
                extra=dict(extra or {}, stride=strategy.stride))


def _lookat_radius(view: _SceneView, c2w: Tensor) -> float:
    """Distance from a camera to the scene's look-at point (orbit radius); 4 m for sources without one."""
    if not view.renderable:
        return 4.0
    return float(torch.dist(c2w[:3, 3], torch.tensor(view.scene.look_at, dtype=c2w.dtype)))


# path name -> builder(P, degrees, distance, radius) of a closed relative path with c2w[-1] == c2w[0]
_PATHS = {
    "orbit": lambda P, deg, dist, r: geometry.loop("orbit", P, degrees=deg, radius=r),
    "circle": lambda P, deg, dist, r: geometry.loop("circle", P, radius=dist),
    "square": lambda P, deg, dist, r: geometry.loop("square", P, size=dist),
    "pingpong_arc": lambda P, deg, dist, r: geometry.loop("pingpong_arc", P, degrees=deg, radius=r),
    "pingpong_pan": lambda P, deg, dist, r: geometry.loop("pingpong_pan", P, degrees=deg),
    "pingpong_tilt": lambda P, deg, dist, r: geometry.loop("pingpong_tilt", P, degrees=deg),
    "pingpong_dolly": lambda P, deg, dist, r: geometry.loop("pingpong_dolly", P, distance=dist),
    "pingpong_translate": lambda P, deg, dist, r: geometry.loop("pingpong_translate", P, offset_xyz=(dist, 0.0, 0.0)),
}


@LOOPAUG_STRATEGIES.register("orbit_return")
class OrbitReturn(_Strategy):
    """Frozen time: the target camera travels a closed path and returns, ``laps`` times in ``length`` steps.

    Renderer-backed source: the scene is frozen at a random frame (a static scene); the target starts at a
    rig camera's pose (or a novel camera, ``novel_target``) and follows ``path`` (a geometry loop kind:
    orbit about the scene centre, circle, square, or pingpong_<pan|tilt|dolly|translate|arc>), sized by
    ``degrees`` / ``distance``; the source camera keeps moving along its own rig trajectory over the static
    scene. Revisits: every step whose pose repeats an earlier one (each new lap, mirrored pingpong steps).
    Clip-only source: time freezes, the source is a still of camera a, and the target walks the other
    recorded cameras out and back (the only poses with ground truth).
    """

    name = "orbit_return"

    def __init__(self, length: int = 16, path: str = "orbit", degrees: float = 30.0, distance: float = 0.5,
                 laps: int = 2, novel_target: bool = False):
        super().__init__(length)
        if path not in _PATHS:
            raise ValueError(f"orbit_return: path={path!r} is unknown; choose one of {', '.join(_PATHS)}")
        if not isinstance(laps, int) or laps < 1:
            raise ValueError(f"orbit_return: laps={laps!r} must be an int >= 1")
        self.path, self.degrees, self.distance, self.laps = path, float(degrees), float(distance), laps
        self.novel_target = bool(novel_target)

    def plan(self, view: _SceneView, generator: torch.Generator) -> dict[str, Any]:
        L, tau = self.length, _randint(generator, view.num_frames)
        a, b = _pick_cameras(view, generator)
        times = [tau] * L
        extra = {"frozen_time": tau, "path": self.path, "laps": self.laps}
        if not view.renderable:
            order = [c for c in range(view.num_cameras) if c != a] or [a]
            cams = [order[triangle(s, len(order))] for s in range(L)]
            src_c2w, src_K = self._rig(view, [a] * L, times)
            tgt_c2w, tgt_K = self._rig(view, cams, times)
            return dict(source_cams=[a] * L, source_times=times, source_c2w=src_c2w, source_K=src_K,
                        target_cams=cams, target_times=times, target_c2w=tgt_c2w, target_K=tgt_K, extra=extra)
        track_c2w, track_K, b = self._target_track(view, b, generator, self.novel_target)
        anchor = track_c2w[tau]
        per_lap = max(1, -(-(L - 1) // self.laps))             # steps per lap; pose index k = s mod per_lap
        rel = _PATHS[self.path](per_lap + 1, self.degrees, self.distance, _lookat_radius(view, anchor))
        ks = [s % per_lap for s in range(L)]
        # compose each distinct pose once, then index: repeated steps get bit-identical copies
        tgt_c2w = (anchor[None] @ rel[:per_lap])[torch.tensor(ks)]
        # the source keeps moving (ping-ponging along its own rig trajectory) over the frozen scene
        src_frames = [triangle(s, view.num_frames) for s in range(L)]
        src_c2w, src_K = self._rig(view, [a] * L, src_frames)
        return dict(source_cams=[a] * L, source_times=times, source_c2w=src_c2w, source_K=src_K,
                    target_cams=[b] * L, target_times=times, target_c2w=tgt_c2w, target_K=track_K[tau].expand(L, 3, 3),
                    extra=dict(extra, path_index=ks, source_pose_frames=src_frames))


@LOOPAUG_STRATEGIES.register("camera_cycle")
class CameraCycle(_Strategy):
    """The target hops across the K synchronized cameras and comes back; the source stays on camera a.

    time_mode="pingpong" (default): time runs forward over ``span`` frames and back, and the target camera
    is a function of the forward position u (it advances one camera every ``dwell`` frames), so the way
    back retraces the same (time, camera) states in reverse: step n revisits its mirror step.
    time_mode="frozen": time stops at a random frame; the target visits the cameras in order, ``dwell``
    steps each, then walks back; every repeated camera is a revisit (including consecutive dwell steps).
    Works the same for clip-only and renderer-backed sources (targets are always recorded cameras).
    """

    name = "camera_cycle"

    def __init__(self, length: int = 16, dwell: int = 2, time_mode: str = "pingpong", stride: int = 1):
        super().__init__(length)
        if time_mode not in ("pingpong", "frozen"):
            raise ValueError(f"camera_cycle: time_mode={time_mode!r} must be 'pingpong' or 'frozen'")
        if not isinstance(dwell, int) or dwell < 1:
            raise ValueError(f"camera_cycle: dwell={dwell!r} must be an int >= 1 (steps per camera)")
        self.dwell, self.time_mode, self.stride = dwell, time_mode, stride

    def plan(self, view: _SceneView, generator: torch.Generator) -> dict[str, Any]:
        L, K_ = self.length, view.num_cameras
        a = _randint(generator, K_)
        others = [c for c in range(K_) if c != a] or [a]
        shift = _randint(generator, len(others))
        order = others[shift:] + others[:shift]
        if self.time_mode == "pingpong":
            max_span = _max_span(view, self.stride, "camera_cycle")
            span = min((L + 1) // 2, max_span)
            start = _time_window(view, span, self.stride, generator)
            us = [triangle(s, span) for s in range(L)]
            times = [start + u * self.stride for u in us]
            cams = [order[(u // self.dwell) % len(order)] for u in us]
        else:
            tau = _randint(generator, view.num_frames)
            times = [tau] * L
            cams = [order[triangle(s // self.dwell, len(order))] for s in range(L)]
        src_c2w, src_K = self._rig(view, [a] * L, times)
        tgt_c2w, tgt_K = self._rig(view, cams, times)
        return dict(source_cams=[a] * L, source_times=times, source_c2w=src_c2w, source_K=src_K,
                    target_cams=cams, target_times=times, target_c2w=tgt_c2w, target_K=tgt_K,
                    extra={"time_mode": self.time_mode, "dwell": self.dwell, "camera_order": order})
