"""Analytic ray casting of procedural dynamic scenes: spheres and rotated boxes on a textured ground.

World frame is OpenCV-like: y points *down*, so the ground is the plane y = 0 and objects live at y < 0.
Every pixel is shaded from its own ray with element-wise tensor ops only (no matmul, no reductions, no
transcendentals), so a pixel's value does not depend on which batch, chunk or position it was rendered in:
rendering the same (time, c2w, K) twice, alone or inside a batch, gives bit-identical uint8 frames.
Object motion is evaluated per time step with Python ``math`` for the same reason.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import Tensor

_EPS = 1e-4
_INF = float("inf")


@dataclass(frozen=True)
class Sphere:
    """A sphere resting on (and optionally bouncing off) the ground, drifting on a Lissajous path."""

    xz: tuple[float, float]          # rest position on the ground, metres
    radius: float
    amp: tuple[float, float]         # path amplitude along x and z, metres
    omega: tuple[float, float]       # path angular speed along x and z, rad/s
    phase: tuple[float, float]
    bounce: float                    # bounce height, metres (0 = rolls on the ground)
    bounce_omega: float
    spin_axis: tuple[float, float, float]
    spin_omega: float
    colors: tuple[tuple[float, float, float], tuple[float, float, float]]
    freq: float                      # checker cells per radius


@dataclass(frozen=True)
class Box:
    """A box (half extents in its own frame), spinning about the vertical axis, optionally tilted and floating."""

    xz: tuple[float, float]
    half: tuple[float, float, float]
    amp: tuple[float, float]
    omega: tuple[float, float]
    phase: tuple[float, float]
    lift: float                      # gap between the ground and the box centre's resting height, metres
    tilt: float                      # fixed tilt about the box x axis, radians
    yaw0: float
    yaw_omega: float
    colors: tuple[tuple[float, float, float], tuple[float, float, float]]
    freq: float                      # checker cells per metre


@dataclass(frozen=True)
class Scene:
    """A dynamic procedural scene; :meth:`render` draws it from any camera at any time (seconds)."""

    spheres: tuple[Sphere, ...]
    boxes: tuple[Box, ...]
    ground_colors: tuple[tuple[float, float, float], tuple[float, float, float]]
    ground_tint: tuple[float, float, float]
    tile: float                      # ground checker tile size, metres
    noise_seed: int
    sky_horizon: tuple[float, float, float]
    sky_zenith: tuple[float, float, float]
    light_dir: tuple[float, float, float]   # unit vector towards the sun (y < 0: above the ground)
    ambient: float = 0.35
    fog_distance: float = 20.0
    look_at: tuple[float, float, float] = (0.0, -0.5, 0.0)   # where rig cameras point, metres
    grain: float = 3.0               # ground grain noise, cells per metre
    scene_id: str = ""
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    # -- object motion (scalar math, exact and batch independent) ----------------------------------------
    def object_state(self, time: float) -> tuple[list, list]:
        """Per-object (centre [3], local-to-world rotation [3][3]) for spheres then boxes at ``time`` seconds."""
        key = float(time)
        if key not in self._cache:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = [_sphere_state(s, key) for s in self.spheres], [_box_state(b, key) for b in self.boxes]
        return self._cache[key]

    # -- rendering -------------------------------------------------------------------------------------
    @torch.no_grad()
    def render(self, c2w: Tensor, K: Tensor, times: Tensor, height: int, width: int,
               supersample: int = 1, chunk_rays: int = 1 << 16, num_threads: int | None = 1) -> Tensor:
        """Render N views. c2w [N, 4, 4] (OpenCV, metres), K [N, 3, 3] (pixels), times [N] seconds -> uint8 [N, H, W, 3].

        ``supersample`` s > 1 averages an s x s grid of rays per pixel (anti-aliasing, s^2 times the cost).
        ``num_threads`` caps torch's intra-op threads while rendering (None: leave as is). One thread is the
        default because the per-op tensors are small: on a shared CPU, intra-op threads were 5-10x slower
        (spinning OpenMP workers); parallelize across clips (DataLoader workers) instead.
        """
        with _intra_op_threads(num_threads):
            return self._render(c2w, K, times, height, width, supersample, chunk_rays)

    def _render(self, c2w, K, times, height, width, supersample, chunk_rays) -> Tensor:
        c2w = torch.as_tensor(c2w, dtype=torch.float32)
        K = torch.as_tensor(K, dtype=torch.float32)
        times = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
        N = times.shape[0]
        if c2w.shape != (N, 4, 4) or K.shape != (N, 3, 3):
            raise ValueError(
                f"render got c2w {tuple(c2w.shape)}, K {tuple(K.shape)}, times {tuple(times.shape)}: "
                f"expected c2w [N, 4, 4], K [N, 3, 3], times [N] with one N"
            )
        if height < 1 or width < 1 or supersample < 1:
            raise ValueError(f"render size {height}x{width} (supersample={supersample}) is empty: all must be >= 1")
        ii, jj = torch.meshgrid(torch.arange(height, dtype=torch.float32),
                                torch.arange(width, dtype=torch.float32), indexing="ij")
        # pixel centres at +0.5 (DESIGN §3); sub-samples spread evenly around each centre
        offsets = [(k + 0.5) / supersample for k in range(supersample)]
        samples = [(jj.reshape(-1) + ox, ii.reshape(-1) + oy) for oy in offsets for ox in offsets]
        P = height * width
        out = torch.empty(N, P, 3, dtype=torch.uint8)
        per = max(1, chunk_rays // P)                            # whole images per block when they fit
        step = P if per > 1 else chunk_rays
        for a in range(0, N, per):
            b = min(N, a + per)
            states = [self.object_state(float(t)) for t in times[a:b].tolist()]
            for p0 in range(0, P, step):
                p1 = min(P, p0 + step)
                color = sum(self._render_block(c2w[a:b], K[a:b], states, u[p0:p1], v[p0:p1]) for u, v in samples)
                color = color / len(samples)
                out[a:b, p0:p1] = (torch.sqrt(color.clamp(0.0, 1.0)) * 255.0).round().to(torch.uint8)  # gamma 2
        return out.reshape(N, height, width, 3)

    def _render_block(self, c2w: Tensor, K: Tensor, states: list, u: Tensor, v: Tensor) -> Tensor:
        """Shade rays of n images x p pixels -> linear colour [n, p, 3]."""
        fx, fy, cx, cy, skew = (K[:, 0, 0, None], K[:, 1, 1, None], K[:, 0, 2, None], K[:, 1, 2, None],
                                K[:, 0, 1, None])
        y_cam = (v[None] - cy) / fy
        x_cam = (u[None] - cx - skew * y_cam) / fx
        R = c2w[:, :3, :3]
        d = torch.stack([R[:, None, r, 0] * x_cam + R[:, None, r, 1] * y_cam + R[:, None, r, 2]
                         for r in range(3)], dim=-1)             # [n, p, 3], R @ K^-1 [u, v, 1]
        d = d / torch.sqrt(_dot(d, d))[..., None]
        o = c2w[:, None, :3, 3]                                  # [n, 1, 3]

        sc, srot, bc, brot = _stack_states(states, len(self.spheres), len(self.boxes))
        radius = torch.tensor([s.radius for s in self.spheres], dtype=torch.float32)
        half = torch.tensor([b.half for b in self.boxes], dtype=torch.float32).reshape(-1, 3)
        t_s = _hit_spheres(o, d, sc, radius)                     # [n, p, Ms]
        t_b, _ = _hit_boxes(o, d, bc, brot, half)                # [n, p, Mb]
        t_g = torch.where(d[..., 1] > 1e-6, -o[..., 1] / d[..., 1].clamp_min(1e-6), _INF)   # ground y = 0
        t_g = torch.where(t_g > _EPS, t_g, _INF)
        t_all = torch.cat([t_s, t_b, t_g[..., None]], dim=-1)
        t_hit, idx = t_all.min(dim=-1)                           # [n, p]
        hit = torch.isfinite(t_hit)
        t_safe = torch.where(hit, t_hit, 0.0)
        p = o + d * t_safe[..., None]

        normal, albedo = self._surface(p, idx, sc, srot, bc, brot, radius, half)
        L = torch.tensor(self.light_dir, dtype=torch.float32)
        lam = _dot(normal, L.expand_as(normal)).clamp_min(0.0)
        p_off = p + normal * 1e-3                                # leave the surface before casting the shadow ray
        dl = L.expand_as(p_off)
        shadow = (_hit_spheres(p_off, dl, sc, radius).isfinite().any(-1)
                  | _hit_boxes(p_off, dl, bc, brot, half)[0].isfinite().any(-1))
        sky_light = 0.5 - 0.5 * normal[..., 1]                   # normals facing up (-y) see more sky
        light = self.ambient * (0.6 + 0.4 * sky_light) + (1.0 - self.ambient) * lam * (~shadow).float()
        color = albedo * light[..., None]

        horizon = torch.tensor(self.sky_horizon, dtype=torch.float32)
        fog = t_safe * t_safe / (t_safe * t_safe + self.fog_distance ** 2)
        color = color * (1.0 - fog[..., None]) + horizon * fog[..., None]
        return torch.where(hit[..., None], color, self._sky(d, L))

    def _surface(self, p, idx, sc, srot, bc, brot, radius, half) -> tuple[Tensor, Tensor]:
        """World normal [n, p, 3] and albedo [n, p, 3] at hit points; idx picks sphere, box or ground (last)."""
        Ms, Mb = len(self.spheres), len(self.boxes)
        n_img = p.shape[0]
        eye = torch.eye(3).expand(n_img, 1, 3, 3)
        centres = torch.cat([sc, bc, torch.zeros(n_img, 1, 3)], dim=1)            # [n, M+1, 3]
        rots = torch.cat([srot, brot, eye], dim=1).reshape(n_img, Ms + Mb + 1, 9)  # [n, M+1, 9]
        size = torch.cat([radius[:, None].expand(Ms, 3), half, torch.ones(1, 3)])  # [M+1, 3]
        objs = [*self.spheres, *self.boxes]
        freq = torch.tensor([o.freq for o in objs] + [1.0])
        col = torch.tensor([o.colors for o in objs] + [self.ground_colors], dtype=torch.float32)   # [M+1, 2, 3]
        c = torch.gather(centres, 1, idx[..., None].expand(*idx.shape, 3))
        Rm = torch.gather(rots, 1, idx[..., None].expand(*idx.shape, 9)).reshape(*idx.shape, 3, 3)
        q = _rot_t(Rm, p - c) / size[idx]                                          # local coords / size
        is_sphere, is_ground = idx < Ms, idx == Ms + Mb
        # box: the face is the axis where |q| is largest
        aq = q.abs()
        ax = torch.where(aq[..., 0] >= aq[..., 1], 0, 1)
        ax = torch.where(aq[..., 2] > aq.gather(-1, ax[..., None])[..., 0], 2, ax)
        n_box = torch.nn.functional.one_hot(ax, 3).float() * torch.sign(q)
        n_loc = torch.where(is_sphere[..., None], q, n_box)
        normal = _rot(Rm, n_loc)
        normal = torch.where(is_ground[..., None], torch.tensor([0.0, -1.0, 0.0]), normal)
        # checker on the object's own (moving) surface, so texture moves and spins with the object
        scale = torch.where(is_sphere[..., None], 1.0, size[idx]) * freq[idx][..., None]   # sphere: per radius
        cells = torch.floor(q * scale)
        parity = (cells[..., 0] + cells[..., 1] + cells[..., 2]).remainder(2.0)
        obj_alb = torch.where(parity[..., None] > 0.5, col[idx, 0], col[idx, 1])
        gnd_alb = self._ground_albedo(p)
        return normal, torch.where(is_ground[..., None], gnd_alb, obj_alb)

    def _ground_albedo(self, p: Tensor) -> Tensor:
        x, z = p[..., 0], p[..., 2]
        checker = (torch.floor(x / self.tile) + torch.floor(z / self.tile)).remainder(2.0)
        ca, cb = (torch.tensor(c, dtype=torch.float32) for c in self.ground_colors)
        base = torch.where(checker[..., None] > 0.5, ca, cb)
        fine = _value_noise(x * self.grain, z * self.grain, self.noise_seed)      # grain, ~30 cm at 3/m
        coarse = _value_noise(x * 0.35, z * 0.35, self.noise_seed + 7)            # patches, ~3 m
        tint = torch.tensor(self.ground_tint, dtype=torch.float32)
        base = base * (1.0 - 0.6 * coarse[..., None]) + tint * (0.6 * coarse[..., None])
        return base * (0.75 + 0.5 * fine[..., None])

    def _sky(self, d: Tensor, L: Tensor) -> Tensor:
        up = (-d[..., 1]).clamp(0.0, 1.0)
        s = torch.sqrt(up)[..., None]
        sky = torch.tensor(self.sky_horizon) * (1.0 - s) + torch.tensor(self.sky_zenith) * s
        g = _dot(d, L.expand_as(d)).clamp(0.0, 1.0)
        for _ in range(6):                                        # g**64 by squaring: exact, no pow kernel
            g = g * g
        return sky + g[..., None] * 0.8


@contextmanager
def _intra_op_threads(n: int | None) -> Iterator[None]:
    old = torch.get_num_threads()
    if n is None or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# -- primitives ------------------------------------------------------------------------------------------
def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Explicit three-term dot product over the last dim (a fixed summation order, batch independent)."""
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def _rot(R: Tensor, x: Tensor) -> Tensor:
    """R @ x for R [..., 3, 3], x [..., 3], written out element-wise."""
    return torch.stack([_dot(R[..., r, :], x) for r in range(3)], dim=-1)


def _rot_t(R: Tensor, x: Tensor) -> Tensor:
    """R^T @ x for R [..., 3, 3], x [..., 3]."""
    return torch.stack([_dot(R[..., :, r], x) for r in range(3)], dim=-1)


def _hit_spheres(o: Tensor, d: Tensor, c: Tensor, r: Tensor) -> Tensor:
    """Nearest positive hit distance: o [n, p|1, 3], d [n, p, 3], c [n, M, 3], r [M] -> [n, p, M] (inf = miss)."""
    oc = o[:, :, None, :] - c[:, None, :, :]
    b = _dot(oc, d[:, :, None, :])
    disc = b * b - (_dot(oc, oc) - r * r)
    t = -b - torch.sqrt(disc.clamp_min(0.0))
    return torch.where((disc >= 0) & (t > _EPS), t, _INF)


def _hit_boxes(o: Tensor, d: Tensor, c: Tensor, R: Tensor, half: Tensor) -> tuple[Tensor, Tensor]:
    """Slab test in each box frame: -> (t [n, p, M] with inf = miss, exit distance [n, p, M])."""
    oc = o[:, :, None, :] - c[:, None, :, :]
    Rb = R[:, None]                                               # [n, 1, M, 3, 3]
    o_l = _rot_t(Rb, oc)
    d_l = _rot_t(Rb, d[:, :, None, :].expand(*d.shape[:2], c.shape[1], 3))
    d_l = torch.where(d_l.abs() < 1e-9, 1e-9, d_l)               # parallel to a slab: a huge but finite slope
    t1 = (-half - o_l) / d_l
    t2 = (half - o_l) / d_l
    lo, hi = torch.minimum(t1, t2), torch.maximum(t1, t2)
    near = torch.maximum(torch.maximum(lo[..., 0], lo[..., 1]), lo[..., 2])
    far = torch.minimum(torch.minimum(hi[..., 0], hi[..., 1]), hi[..., 2])
    return torch.where((near <= far) & (near > _EPS), near, _INF), far


def _stack_states(states: list, Ms: int, Mb: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    n = len(states)
    sc = torch.tensor([[c for c, _ in s] for s, _ in states], dtype=torch.float32).reshape(n, Ms, 3)
    srot = torch.tensor([[R for _, R in s] for s, _ in states], dtype=torch.float32).reshape(n, Ms, 3, 3)
    bc = torch.tensor([[c for c, _ in b] for _, b in states], dtype=torch.float32).reshape(n, Mb, 3)
    brot = torch.tensor([[R for _, R in b] for _, b in states], dtype=torch.float32).reshape(n, Mb, 3, 3)
    return sc, srot, bc, brot


def _value_noise(x: Tensor, z: Tensor, seed: int) -> Tensor:
    """Smooth 2-D value noise in [0, 1] from an integer lattice hash (exact integer ops, no trig)."""
    ix, iz = torch.floor(x), torch.floor(z)
    fx, fz = x - ix, z - iz
    ix, iz = ix.to(torch.int64), iz.to(torch.int64)

    def h(i: Tensor, j: Tensor) -> Tensor:
        k = ((i * 73856093) ^ (j * 19349663) ^ seed) & 0x7FFFFFFF
        k = ((k ^ (k >> 13)) * 1274126177) & 0x7FFFFFFF
        k = k ^ (k >> 16)
        return (k & 0xFFFF).to(torch.float32) / 65535.0

    sx, sz = fx * fx * (3.0 - 2.0 * fx), fz * fz * (3.0 - 2.0 * fz)
    a = h(ix, iz) * (1.0 - sx) + h(ix + 1, iz) * sx
    b = h(ix, iz + 1) * (1.0 - sx) + h(ix + 1, iz + 1) * sx
    return a * (1.0 - sz) + b * sz


def _axis_angle(axis: tuple[float, float, float], angle: float) -> list[list[float]]:
    """Rodrigues rotation matrix (row-major nested lists) for a unit axis and an angle in radians."""
    x, y, z = axis
    c, s, C = math.cos(angle), math.sin(angle), 1.0 - math.cos(angle)
    return [[c + x * x * C, x * y * C - z * s, x * z * C + y * s],
            [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
            [z * x * C - y * s, z * y * C + x * s, c + z * z * C]]


def _matmul3(a: list, b: list) -> list:
    return [[sum(a[i][k] * b[k][j] for k in range(3)) for j in range(3)] for i in range(3)]


def _sphere_state(s: Sphere, t: float) -> tuple[list, list]:
    x = s.xz[0] + s.amp[0] * math.sin(s.omega[0] * t + s.phase[0])
    z = s.xz[1] + s.amp[1] * math.sin(s.omega[1] * t + s.phase[1])
    y = -s.radius - s.bounce * 0.5 * (1.0 - math.cos(s.bounce_omega * t))      # smooth hop above y = 0
    return [x, y, z], _axis_angle(s.spin_axis, s.spin_omega * t)


def _box_state(b: Box, t: float) -> tuple[list, list]:
    x = b.xz[0] + b.amp[0] * math.sin(b.omega[0] * t + b.phase[0])
    z = b.xz[1] + b.amp[1] * math.sin(b.omega[1] * t + b.phase[1])
    R = _matmul3(_axis_angle((0.0, 1.0, 0.0), b.yaw0 + b.yaw_omega * t), _axis_angle((1.0, 0.0, 0.0), b.tilt))
    # lowest point of the (possibly tilted) box: its extent along world y
    extent = sum(abs(R[1][k]) * b.half[k] for k in range(3))
    return [x, -extent - b.lift, z], R
