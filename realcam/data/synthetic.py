"""The ``synthetic`` multiview source: random dynamic scenes seen by K synchronized cameras.

Scenes come from :mod:`realcam.data.render`; this module draws them from a seed, places a camera rig on
MultiCamVideo-style trajectory families, and renders clips. Because the scene object can render any camera
at any time, every novel view has exact ground truth (LoopAug relies on this).

Held-out scenes: the scene for ``index`` is drawn from ``blake2b(split, seed, index)``. Two sources with a
different ``split`` (or ``seed``) never share a scene, so use ``SyntheticSource(split="train")`` for training
and ``SyntheticSource(split="val")`` / ``"test"`` for evaluation; the scene ids (``synthetic-train-s0-000012``)
name the stream they came from.
"""
from __future__ import annotations

import colorsys
import hashlib
import math
import random
import statistics
import time as _time
from typing import Any, Sequence

import torch
from torch import Tensor

from realcam import geometry
from realcam.data.clip import MultiviewClip
from realcam.data.render import Box, Scene, Sphere
from realcam.registry import MULTIVIEW_SOURCES

TRAJECTORY_FAMILIES = ("static", "pan", "tilt", "dolly", "translate", "arc", "waypoints")
RIG_MODES = ("independent", "offset")


# -- scenes ------------------------------------------------------------------------------------------------
def scene_seed(seed: int, index: int, split: str = "train") -> int:
    """A 63-bit scene seed, stable across processes and platforms (unlike ``hash()``)."""
    digest = hashlib.blake2b(f"realcam-synthetic|{split}|{seed}|{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def make_scene(seed: int, num_spheres: tuple[int, int] = (2, 4), num_boxes: tuple[int, int] = (2, 3),
               scene_id: str = "", texture_scale: float = 1.0) -> Scene:
    """Draw a random dynamic scene (objects within ~3 m of the origin, on the ground plane y = 0).

    ``texture_scale`` stretches every texture (ground tiles and grain, object checkers) by that factor without
    changing anything else the seed draws: 2.0 gives cells twice as large, which low resolutions can resolve.
    """
    if not texture_scale > 0:
        raise ValueError(f"texture_scale={texture_scale} must be > 0 (1.0 = default texture size)")
    rng = random.Random(seed)
    n_s, n_b = rng.randint(*num_spheres), rng.randint(*num_boxes)
    placed: list[tuple[float, float, float]] = []

    def spot(size: float) -> tuple[float, float]:
        for _ in range(50):                                # rejection sampling keeps rest positions apart
            r, a = 2.6 * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
            x, z = r * math.cos(a), r * math.sin(a)
            if all(math.hypot(x - px, z - pz) > size + ps + 0.2 for px, pz, ps in placed):
                break
        placed.append((x, z, size))
        return x, z

    def colors() -> tuple:
        h, s, v = rng.random(), rng.uniform(0.45, 0.9), rng.uniform(0.6, 0.95)
        a = colorsys.hsv_to_rgb(h, s, v)
        b = colorsys.hsv_to_rgb((h + rng.uniform(0.08, 0.5)) % 1.0, s * rng.uniform(0.3, 1.0), v * rng.uniform(0.4, 0.8))
        return a, b

    def path() -> dict[str, Any]:
        return dict(amp=(rng.uniform(0.2, 0.9), rng.uniform(0.2, 0.9)),
                    omega=(rng.uniform(0.4, 1.6), rng.uniform(0.4, 1.6)),
                    phase=(rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)))

    spheres = []
    for _ in range(n_s):
        radius = rng.uniform(0.3, 0.7)
        axis = _unit((rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(-1, 1)))
        spheres.append(Sphere(xz=spot(radius), radius=radius, **path(),
                              bounce=rng.choice([0.0, rng.uniform(0.2, 0.8)]), bounce_omega=rng.uniform(2.0, 5.0),
                              spin_axis=axis, spin_omega=rng.uniform(-2.0, 2.0), colors=colors(),
                              freq=float(rng.randint(2, 3)) / texture_scale))
    boxes = []
    for _ in range(n_b):
        half = (rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.7), rng.uniform(0.2, 0.6))
        floating = rng.random() < 0.35
        boxes.append(Box(xz=spot(max(half)), half=half, **path(),
                         lift=rng.uniform(0.4, 1.2) if floating else 0.0,
                         tilt=rng.uniform(0.3, 0.8) if floating else 0.0,
                         yaw0=rng.uniform(0, 2 * math.pi), yaw_omega=rng.uniform(-1.5, 1.5), colors=colors(),
                         freq=rng.choice([2.0, 3.0, 4.0]) / texture_scale))
    elev, azim = rng.uniform(0.6, 1.1), rng.uniform(0, 2 * math.pi)
    g_h = rng.random()
    return Scene(
        spheres=tuple(spheres), boxes=tuple(boxes),
        ground_colors=(colorsys.hsv_to_rgb(g_h, 0.3, 0.8), colorsys.hsv_to_rgb(g_h, 0.4, 0.4)),
        ground_tint=colorsys.hsv_to_rgb((g_h + 0.3) % 1.0, 0.5, 0.6),
        tile=rng.choice([0.5, 0.75, 1.0]) * texture_scale, noise_seed=rng.randrange(1 << 30),
        grain=3.0 / texture_scale,
        sky_horizon=(0.85, 0.88, 0.92), sky_zenith=(0.35 + 0.1 * rng.random(), 0.55, 0.9),
        # y < 0 is up: the sun is above the ground
        light_dir=_unit((math.cos(elev) * math.cos(azim), -math.sin(elev), math.cos(elev) * math.sin(azim))),
        look_at=(0.0, -0.3, 0.0), scene_id=scene_id,
    )


# -- camera rig --------------------------------------------------------------------------------------------
def family_trajectory(family: str, num_frames: int, rng: random.Random, radius: float) -> tuple[Tensor, dict]:
    """Relative c2w [T, 4, 4] (starting at identity) for one trajectory family, with random magnitude.

    ``radius`` is the distance to the look-at point, so ``arc`` orbits the scene centre.
    """
    sign = rng.choice([-1.0, 1.0])
    T = num_frames
    if family == "static":
        return geometry.static(T), {}
    if family == "pan":
        deg = sign * rng.uniform(10, 30)
        return geometry.pan(T, deg), {"degrees": deg}
    if family == "tilt":
        deg = sign * rng.uniform(5, 15)
        return geometry.tilt(T, deg), {"degrees": deg}
    if family == "dolly":
        dist = rng.uniform(-1.5, 1.2)
        return geometry.dolly(T, dist), {"distance": dist}
    if family == "translate":
        off = (rng.uniform(-1.2, 1.2), rng.uniform(-0.5, 0.3), rng.uniform(-0.6, 0.6))
        return geometry.translate(T, off), {"offset": list(off)}
    if family == "arc":
        deg = sign * rng.uniform(15, 45)
        return geometry.arc(T, deg, radius), {"degrees": deg, "radius": radius}
    if family == "waypoints":
        keys = [torch.eye(4)]
        for _ in range(rng.randint(2, 3)):
            R = _yaw_pitch(math.radians(rng.uniform(-12, 12)), math.radians(rng.uniform(-6, 6)))
            key = torch.eye(4)
            key[:3, :3] = R
            key[:3, 3] = torch.tensor([rng.uniform(-0.8, 0.8), rng.uniform(-0.3, 0.2), rng.uniform(-0.8, 0.8)])
            keys.append(key)
        return geometry.waypoints(torch.stack(keys), T), {"num_keys": len(keys)}
    raise ValueError(f"unknown trajectory family {family!r}: expected one of {', '.join(TRAJECTORY_FAMILIES)}")


def make_rig(scene: Scene, num_cameras: int, num_frames: int, height: int, width: int, rng: random.Random,
             families: Sequence[str] = TRAJECTORY_FAMILIES, fov_deg: tuple[float, float] = (50.0, 70.0),
             centre: float | None = None, arc_deg: float = 90.0) -> tuple[Tensor, Tensor, list[str]]:
    """K cameras on an ``arc_deg`` arc around the scene, each on a random family: c2w [K, T, 4, 4], K [K, T, 3, 3].

    ``centre`` is the arc's azimuth in radians (drawn from ``rng`` when None).
    """
    centre = rng.uniform(0, 2 * math.pi) if centre is None else centre
    c2ws, Ks, names = [], [], []
    for k in range(num_cameras):
        azim = centre + math.radians(arc_deg) * ((k + 0.5) / num_cameras - 0.5) + rng.uniform(-0.1, 0.1)
        c2w, K, family = rig_camera(scene, azim, num_frames, height, width, rng, families, fov_deg)
        c2ws.append(c2w)
        Ks.append(K)
        names.append(family)
    return torch.stack(c2ws), torch.stack(Ks), names


def rig_camera(scene: Scene, azimuth: float, num_frames: int, height: int, width: int, rng: random.Random,
               families: Sequence[str] = TRAJECTORY_FAMILIES, fov_deg: tuple[float, float] = (50.0, 70.0),
               ) -> tuple[Tensor, Tensor, str]:
    """One camera 4.5-6 m from the scene at ``azimuth``, 1.6-3 m above the ground, looking at the scene centre
    and moving on a random family: c2w [T, 4, 4], K [T, 3, 3], family name."""
    dist, height_m = rng.uniform(4.5, 6.0), rng.uniform(1.6, 3.0)
    eye = (dist * math.cos(azimuth), -height_m, dist * math.sin(azimuth))   # y < 0: above the ground
    target = tuple(c + rng.uniform(-0.3, 0.3) for c in scene.look_at)
    base = geometry.look_at(eye, target)
    family = families[rng.randrange(len(families))]
    rel, _ = family_trajectory(family, num_frames, rng, math.dist(eye, target))
    K = geometry.fov_intrinsics(height, width, rng.uniform(*fov_deg))
    return base[None] @ rel.to(torch.float32), K.expand(num_frames, 3, 3).contiguous(), family


def _lookat_distance(scene: Scene, c2w: Tensor) -> float:
    """Distance from the first pose of ``c2w`` [T, 4, 4] to the scene's look-at point (the orbit radius)."""
    return float(torch.dist(c2w[0, :3, 3].double(), torch.tensor(scene.look_at, dtype=torch.float64)))


def offset_camera(base_c2w: Tensor, base_K: Tensor, rng: random.Random, spread_deg: float, radius: float,
                  families: Sequence[str] = TRAJECTORY_FAMILIES) -> tuple[Tensor, Tensor, str]:
    """A camera that moves relative to ``base_c2w`` [T, 4, 4]: a constant orbit of U(-spread, spread) degrees
    about the point ``radius`` metres ahead, then a random family's motion at half its usual magnitude, in the
    base camera's frame; same intrinsics. This is the view change a user makes when steering relative to the
    source (``realcam stream --trajectory arc:left:30``). Returns c2w [T, 4, 4], K [T, 3, 3], family."""
    T = base_c2w.shape[0]
    orbit = geometry.arc(2, rng.uniform(-spread_deg, spread_deg), radius)[-1]
    family = families[rng.randrange(len(families))]
    rel, _ = family_trajectory(family, T, rng, radius)
    rel = rel.to(torch.float64).clone()
    rel[:, :3, :3] = geometry.so3_exp(0.5 * geometry.so3_log(rel[:, :3, :3]))     # half the rotation, all frames
    rel[:, :3, 3] = 0.5 * rel[:, :3, 3]
    c2w = base_c2w.to(torch.float64) @ orbit.to(torch.float64) @ rel
    return c2w.to(torch.float32), base_K.clone(), family


# -- the source --------------------------------------------------------------------------------------------
@MULTIVIEW_SOURCES.register("synthetic")
class SyntheticSource:
    """Infinite stream of rendered multiview clips: ``source.clip(i)`` -> MultiviewClip [K, T, H, W, 3].

    Frame t of a clip is the scene at time t / fps seconds; ``source.scene(i).render(c2w, K, t / fps, H, W)``
    reproduces it bit for bit and renders any other camera. ``split`` salts the scene seeds (see module doc).
    """

    renders_novel_views = True

    def __init__(self, num_cameras: int = 4, num_frames: int = 16, height: int = 64, width: int = 64,
                 fps: float = 8.0, trajectories: Sequence[str] = TRAJECTORY_FAMILIES, seed: int = 0,
                 split: str = "train", num_spheres: tuple[int, int] = (2, 4), num_boxes: tuple[int, int] = (2, 3),
                 fov_deg: tuple[float, float] = (50.0, 70.0), rig_arc_deg: float = 90.0,
                 novel_spread_deg: float = 60.0, texture_scale: float = 1.0, rig_mode: str = "independent"):
        if not texture_scale > 0:
            raise ValueError(f"texture_scale={texture_scale} must be > 0 (1.0 = default texture size, 2.0 = cells "
                             f"twice as large)")
        self.texture_scale = float(texture_scale)
        if rig_mode not in RIG_MODES:
            raise ValueError(f"rig_mode={rig_mode!r}: choose one of {', '.join(RIG_MODES)} ('independent': cameras "
                             f"on an arc, each with its own height, distance, field of view and motion; 'offset': "
                             f"every camera moves relative to one base camera, same intrinsics)")
        self.rig_mode = rig_mode
        if not (0 <= rig_arc_deg <= 360 and 0 <= novel_spread_deg <= 180):
            raise ValueError(f"rig_arc_deg={rig_arc_deg} must be in [0, 360] and novel_spread_deg={novel_spread_deg} "
                             f"in [0, 180] (degrees of azimuth around the scene)")
        self.rig_arc_deg, self.novel_spread_deg = float(rig_arc_deg), float(novel_spread_deg)
        for name, value in (("num_cameras", num_cameras), ("num_frames", num_frames), ("height", height),
                            ("width", width)):
            if int(value) < 1:
                raise ValueError(f"{name}={value} must be >= 1")
        if not fps > 0:
            raise ValueError(f"fps={fps} must be > 0")
        bad = [t for t in trajectories if t not in TRAJECTORY_FAMILIES]
        if bad or not trajectories:
            raise ValueError(f"trajectories {list(trajectories)} has unknown or no families {bad}: "
                             f"choose from {', '.join(TRAJECTORY_FAMILIES)}")
        self.num_cameras, self.num_frames = int(num_cameras), int(num_frames)
        self.height, self.width, self.fps = int(height), int(width), float(fps)
        self.trajectories, self.seed, self.split = tuple(trajectories), int(seed), str(split)
        self.num_spheres, self.num_boxes, self.fov_deg = tuple(num_spheres), tuple(num_boxes), tuple(fov_deg)
        self._last_build: tuple[int, tuple] | None = None

    def scene_id(self, index: int) -> str:
        return f"synthetic-{self.split}-s{self.seed}-{int(index):06d}"

    def scene(self, index: int) -> Scene:
        """The renderable scene behind clip ``index``."""
        return self._build(index)[0]

    def cameras(self, index: int) -> tuple[Tensor, Tensor, list[str]]:
        """The rig of clip ``index`` without rendering: c2w [K, T, 4, 4], K [K, T, 3, 3], family per camera."""
        return self._build(index)[1:4]

    def novel_camera(self, index: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, str]:
        """An extra camera for clip ``index`` (not one of the rig's K), drawn from ``generator``: its azimuth is
        within ``novel_spread_deg`` of the rig's centre, on a random family. Returns c2w [T, 4, 4], K [T, 3, 3],
        family. Smaller spreads (and ``rig_arc_deg``) mean smaller source-to-target view changes."""
        scene, c2w, K, _, centre = self._build(index)
        seed = int(torch.randint(1 << 62, (1,), generator=generator))
        rng = random.Random(seed)
        if self.rig_mode == "offset":
            return offset_camera(c2w[0], K[0], rng, self.novel_spread_deg, _lookat_distance(scene, c2w[0]),
                                 self.trajectories)
        azim = centre + math.radians(rng.uniform(-self.novel_spread_deg, self.novel_spread_deg))
        return rig_camera(scene, azim, self.num_frames, self.height, self.width, rng, self.trajectories, self.fov_deg)

    def clip(self, index: int) -> MultiviewClip:
        scene, c2w, K, families, _ = self._build(index)
        n_cam, T = self.num_cameras, self.num_frames
        times = (torch.arange(T, dtype=torch.float64) / self.fps).repeat(n_cam)
        frames = scene.render(c2w.reshape(-1, 4, 4), K.reshape(-1, 3, 3), times, self.height, self.width)
        meta = {"source": "synthetic", "split": self.split, "seed": self.seed, "index": int(index),
                "trajectories": families, "camera_names": [f"cam{k + 1:02d}" for k in range(n_cam)]}
        return MultiviewClip(frames.reshape(n_cam, T, self.height, self.width, 3), c2w, K, self.fps,
                             scene.scene_id, meta)

    __getitem__ = clip

    def _build(self, index: int) -> tuple[Scene, Tensor, Tensor, list[str], float]:
        # LoopAug asks for the scene, the rig and novel cameras of one index in turn: build it once.
        if self._last_build is not None and self._last_build[0] == int(index):
            return self._last_build[1]
        built = self._build_uncached(index)
        self._last_build = (int(index), built)
        return built

    def _build_uncached(self, index: int) -> tuple[Scene, Tensor, Tensor, list[str], float]:
        if int(index) < 0:
            raise IndexError(f"index {index} must be >= 0 (the synthetic stream is infinite, not negative)")
        s = scene_seed(self.seed, int(index), self.split)
        scene = make_scene(s, self.num_spheres, self.num_boxes, scene_id=self.scene_id(index),
                           texture_scale=self.texture_scale)
        rng = random.Random(s ^ 0x5EED)
        centre = rng.uniform(0, 2 * math.pi)
        if self.rig_mode == "independent":
            c2w, K, families = make_rig(scene, self.num_cameras, self.num_frames, self.height, self.width, rng,
                                        self.trajectories, self.fov_deg, centre, self.rig_arc_deg)
            return scene, c2w, K, families, centre
        # offset: camera 0 is a rig camera; the others (and novel cameras) move relative to it
        base_c2w, base_K, family = rig_camera(scene, centre, self.num_frames, self.height, self.width, rng,
                                              self.trajectories, self.fov_deg)
        radius = _lookat_distance(scene, base_c2w)
        cams = [(base_c2w, base_K, family)] + [offset_camera(base_c2w, base_K, rng, self.novel_spread_deg, radius,
                                                             self.trajectories) for _ in range(self.num_cameras - 1)]
        return (scene, torch.stack([c[0] for c in cams]), torch.stack([c[1] for c in cams]), [c[2] for c in cams],
                centre)


def benchmark_render(num_cameras: int = 4, num_frames: int = 16, height: int = 64, width: int = 64,
                     repeats: int = 5, warmup: int = 1, seed: int = 0) -> dict[str, Any]:
    """Time ``SyntheticSource.clip`` (scene draw + rig + render) on distinct scenes; returns a summary dict."""
    src = SyntheticSource(num_cameras, num_frames, height, width, seed=seed, split="bench")
    for i in range(warmup):
        src.clip(i)
    secs = []
    for i in range(repeats):
        t0 = _time.perf_counter()
        src.clip(warmup + i)
        secs.append(_time.perf_counter() - t0)
    med = statistics.median(secs)
    frames = num_cameras * num_frames
    return {"num_cameras": num_cameras, "num_frames": num_frames, "height": height, "width": width,
            "repeats": repeats, "threads": torch.get_num_threads(),
            "seconds_per_clip_median": med, "seconds_per_clip_min": min(secs), "seconds_per_clip_max": max(secs),
            "clips_per_second": 1.0 / med, "frames_per_second": frames / med,
            "megapixels_per_second": frames * height * width / med / 1e6}


def _unit(v: Sequence[float]) -> tuple[float, float, float]:
    n = math.sqrt(sum(x * x for x in v)) or 1.0
    return tuple(x / n for x in v)  # type: ignore[return-value]


def _yaw_pitch(yaw: float, pitch: float) -> Tensor:
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    Ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float32)
    Rx = torch.tensor([[1, 0, 0], [0, cp, -sp], [0, sp, cp]], dtype=torch.float32)
    return Ry @ Rx
