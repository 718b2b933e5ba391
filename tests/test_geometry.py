"""Tests for realcam.geometry and realcam.geometry_io: validation, relative poses, intrinsics, Plücker rays,
trajectory builders, and every importer/exporter (round trips, real fixtures, clear errors)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from realcam import geometry as g

FIXTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures"
UNREAL = FIXTURES / "recammaster" / "camera_extrinsics.json"
RE10K = sorted((FIXTURES / "realestate10k").glob("*.txt")) if FIXTURES.is_dir() else []
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"shared fixtures folder {FIXTURES} is absent")


def random_c2w(*shape: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    c2w = torch.eye(4, dtype=torch.float64).repeat(*shape, 1, 1)
    c2w[..., :3, :3] = g.so3_exp(torch.randn(*shape, 3, generator=gen, dtype=torch.float64))
    c2w[..., :3, 3] = torch.randn(*shape, 3, generator=gen, dtype=torch.float64)
    return c2w


def pinhole(fx=50.0, fy=60.0, cx=16.0, cy=12.0) -> torch.Tensor:
    return g.make_intrinsics(fx, fy, cx, cy, dtype=torch.float64)


def project(K: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    x = K @ X
    return x[:2] / x[2]


# ------------------------------------------------------------------------------------------- validation
def test_validate_accepts_rigid_and_returns_input():
    c2w = random_c2w(2, 5)
    assert g.validate_c2w(c2w) is c2w
    K = pinhole().expand(5, 3, 3)
    assert torch.equal(g.validate_intrinsics(K), K)


@pytest.mark.parametrize("corrupt, expected", [
    (lambda m: m.__setitem__((0, 0), float("nan")), "target_c2w[3] contains NaN or inf"),
    (lambda m: m.__setitem__((slice(None), 0), -m[:, 0]), "target_c2w[3] is not a rigid transform (det=-1.0)"),
    (lambda m: m[:3, :3].mul_(2.0), "remove scale or shear"),
    (lambda m: m.__setitem__((3, 2), 0.5), "with last row [0, 0, 0, 1]"),
])
def test_validate_c2w_names_field_index_and_fix(corrupt, expected):
    c2w = random_c2w(6)
    corrupt(c2w[3])
    with pytest.raises(ValueError) as err:
        g.validate_c2w(c2w, name="target_c2w")
    message = str(err.value)
    assert expected in message and "target_c2w[3]" in message and "OpenCV camera-to-world" in message


def test_validate_c2w_shape_and_nested_index():
    with pytest.raises(ValueError, match=r"c2w has shape \(5, 3, 4\): expected \[\.\.\., 4, 4\]"):
        g.validate_c2w(torch.zeros(5, 3, 4))
    c2w = random_c2w(2, 4)
    c2w[1, 2, 1, 1] = float("inf")
    with pytest.raises(ValueError, match=r"source_c2w\[1, 2\] contains NaN"):
        g.validate_c2w(c2w, name="source_c2w")
    with pytest.raises(TypeError, match="floating-point"):
        g.validate_c2w(torch.eye(4, dtype=torch.int64))


@pytest.mark.parametrize("i, j, value, expected", [
    (0, 0, -5.0, "focal lengths must be positive"),
    (1, 2, float("nan"), "NaN"),
    (0, 1, 3.0, "zero-skew pinhole"),
    (2, 2, 2.0, "zero-skew pinhole"),
])
def test_validate_intrinsics_errors(i, j, value, expected):
    K = pinhole().repeat(4, 1, 1)
    K[2, i, j] = value
    with pytest.raises(ValueError) as err:
        g.validate_intrinsics(K, name="target_K")
    assert "target_K[2]" in str(err.value) and expected in str(err.value)
    with pytest.raises(ValueError, match=r"target_K has shape \(4, 4\)"):
        g.validate_intrinsics(torch.eye(4), name="target_K")


# ------------------------------------------------------------------------------------------- relative poses
def test_relative_poses_both_modes():
    src, tgt = random_c2w(2, 5, seed=1), random_c2w(2, 5, seed=2)
    first = g.relative_poses(src, tgt, "first_source")
    current = g.relative_poses(src, tgt, "current_source")
    for b in range(2):
        for t in range(5):
            assert torch.allclose(first[b, t], torch.linalg.inv(src[b, 0]) @ tgt[b, t], atol=1e-10)
            assert torch.allclose(current[b, t], torch.linalg.inv(src[b, t]) @ tgt[b, t], atol=1e-10)
    eye = torch.eye(4, dtype=torch.float64)
    assert torch.allclose(g.relative_poses(src, src, "current_source"), eye.expand(2, 5, 4, 4), atol=1e-10)
    assert torch.allclose(g.relative_poses(src, src)[:, 0], eye.expand(2, 4, 4), atol=1e-10)


def test_relative_poses_errors():
    src = random_c2w(5)
    with pytest.raises(ValueError, match="reference='world' is not a pose reference mode.*first_source"):
        g.relative_poses(src, src, "world")
    with pytest.raises(ValueError, match="current_source needs equal T"):
        g.relative_poses(src, random_c2w(3), "current_source")
    assert g.relative_poses(src, random_c2w(3), "first_source").shape == (3, 4, 4)


# ------------------------------------------------------------------------------------------- intrinsics
def test_resize_and_crop_intrinsics_move_projections_like_the_pixels():
    K = pinhole()                                     # a 32 x 24 image
    X = torch.tensor([0.3, -0.2, 2.0], dtype=torch.float64)
    uv = project(K, X)
    K2 = g.resize_intrinsics(K, (24, 32), (48, 80))   # H x2, W x2.5
    assert torch.allclose(project(K2, X), uv * torch.tensor([2.5, 2.0], dtype=torch.float64))
    assert torch.allclose(K2[0, 2], torch.tensor(40.0, dtype=torch.float64))  # image centre stays centre
    K3 = g.crop_intrinsics(K, top=5, left=7)
    assert torch.allclose(project(K3, X), uv - torch.tensor([7.0, 5.0], dtype=torch.float64))
    Kb = g.crop_intrinsics(K.expand(3, 3, 3), top=torch.tensor([0.0, 1.0, 2.0]).double(), left=0)
    assert torch.equal(Kb[:, 1, 2], torch.tensor([12.0, 11.0, 10.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="sizes must be positive"):
        g.resize_intrinsics(K, (0, 32), (24, 32))


# ------------------------------------------------------------------------------------------- Plücker
def test_plucker_matches_brute_force_and_invariants():
    c2w, K = random_c2w(2, 3, seed=3), pinhole(7.0, 9.0, 2.7, 2.2).expand(2, 3, 3, 3)
    rays = g.plucker_rays(c2w, K, 5, 6)
    assert rays.shape == (2, 3, 6, 5, 6) and rays.dtype == torch.float64
    m, d = rays[:, :, :3], rays[:, :, 3:]
    assert torch.allclose(d.norm(dim=2), torch.ones(2, 3, 5, 6, dtype=torch.float64))
    assert (m * d).sum(2).abs().max() < 1e-12
    Kinv = torch.linalg.inv(K[0, 0])
    for b, t, i, j in [(0, 0, 0, 0), (1, 2, 4, 5), (0, 1, 2, 3), (1, 0, 3, 1)]:
        R, o = c2w[b, t, :3, :3], c2w[b, t, :3, 3]
        dir_ = R @ Kinv @ torch.tensor([j + 0.5, i + 0.5, 1.0], dtype=torch.float64)
        dir_ = dir_ / dir_.norm()
        assert torch.allclose(rays[b, t, :, i, j], torch.cat([torch.linalg.cross(o, dir_), dir_]), atol=1e-12)


def test_plucker_centre_pixel_of_identity_camera_looks_along_z_and_broadcasts():
    K = g.make_intrinsics(4.0, 4.0, 2.5, 1.5)        # 3 x 5 image: pixel (1, 2) is the centre
    rays = g.plucker_rays(torch.eye(4).expand(2, 4, 4), K, 3, 5)
    assert rays.shape == (2, 6, 3, 5) and rays.dtype == torch.float32
    assert torch.allclose(rays[0, :, 1, 2], torch.tensor([0.0, 0, 0, 0, 0, 1]))
    assert rays[0, 3, 1, 4] > 0 and rays[0, 4, 2, 2] > 0        # right of centre -> +x, below -> +y


# ------------------------------------------------------------------------------------------- rotations
def test_so3_exp_log_round_trip_and_agree_with_kornia():
    gen = torch.Generator().manual_seed(0)
    axis = torch.nn.functional.normalize(torch.randn(64, 3, generator=gen, dtype=torch.float64), dim=-1)
    angle = torch.cat([torch.rand(60, generator=gen, dtype=torch.float64) * math.pi,
                       torch.tensor([0.0, 1e-9, math.pi - 1e-7, math.pi], dtype=torch.float64)])
    w = axis * angle[:, None]
    R = g.so3_exp(w)
    assert torch.allclose(g.so3_exp(g.so3_log(R)), R, atol=1e-9)
    assert torch.allclose(R.transpose(-1, -2) @ R, torch.eye(3, dtype=torch.float64).expand(64, 3, 3), atol=1e-12)
    kornia = pytest.importorskip("kornia")
    ref = kornia.geometry.conversions.axis_angle_to_rotation_matrix(w[:60].float())
    assert torch.allclose(R[:60].float(), ref, atol=1e-5)


# ------------------------------------------------------------------------------------------- builders
def forward(c2w):
    return c2w[..., :3, 2]


def position(c2w):
    return c2w[..., :3, 3]


def test_builders_start_at_identity_and_move_as_documented():
    T = 9
    for c2w in (g.static(T), g.pan(T, 20), g.tilt(T, 10), g.dolly(T, 0.5), g.arc(T, 30), g.translate(T, (1, 2, 3))):
        assert c2w.shape == (T, 4, 4) and c2w.dtype == torch.float32
        assert torch.equal(c2w[0], torch.eye(4))
        g.validate_c2w(c2w)
    assert torch.equal(g.static(T), torch.eye(4).expand(T, 4, 4))
    assert forward(g.pan(T, 20))[-1, 0] > 0.3 and forward(g.pan(T, -20))[-1, 0] < -0.3
    assert math.isclose(math.degrees(math.asin(forward(g.pan(T, 20))[-1, 0])), 20.0, abs_tol=1e-4)
    assert forward(g.tilt(T, 10))[-1, 1] < -0.15 and forward(g.tilt(T, -10))[-1, 1] > 0.15
    assert torch.allclose(position(g.dolly(T, 0.5))[-1], torch.tensor([0, 0, 0.5]))
    assert torch.allclose(position(g.translate(T, (0.1, -0.3, 0)))[4], torch.tensor([0.05, -0.15, 0]))
    c2w = g.arc(T, 30, radius=2.0)
    assert position(c2w)[-1, 0] < -0.5 and forward(c2w)[-1, 0] > 0.4        # arc left: moves -x, turns +x
    to_pivot = torch.tensor([0, 0, 2.0]) - position(c2w)                      # and keeps looking at the pivot
    assert torch.allclose(torch.nn.functional.normalize(to_pivot, dim=-1), forward(c2w), atol=1e-6)
    with pytest.raises(ValueError, match="int >= 1"):
        g.pan(0, 10)


def test_look_at_is_upright_and_faces_the_target():
    c2w = g.look_at((1.0, -2.0, -5.0), (1.0, -2.0, 0.0))              # world y down, looking along +z
    assert torch.allclose(c2w, torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, -2], [0, 0, 1, -5], [0, 0, 0, 1]]))
    c2w = g.look_at((4.0, -3.0, 2.0), (0.0, 0.0, 0.0))
    g.validate_c2w(c2w)
    assert torch.allclose(forward(c2w), -position(c2w) / position(c2w).norm(), atol=1e-6)
    assert c2w[1, 1] > 0 and abs(c2w[1, 0]) < 1e-6                   # image down points down, no roll
    with pytest.raises(ValueError, match="parallel to up"):
        g.look_at((0.0, 0.0, 0.0), (0.0, 5.0, 0.0))


def test_waypoints_pass_through_keys_smoothly():
    keys = torch.stack([torch.eye(4), g.pan(2, 40)[-1] @ g.dolly(2, 1.0)[-1],
                        g.tilt(2, 20)[-1] @ g.translate(2, (1.0, 0, 1.0))[-1], g.arc(2, -30)[-1]])
    T = 3 * 8 + 1
    c2w = g.waypoints(keys, T)
    g.validate_c2w(c2w)
    assert torch.allclose(c2w[::8], keys, atol=1e-5)
    step = position(c2w).diff(dim=0).norm(dim=-1)
    accel = position(c2w).diff(n=2, dim=0).norm(dim=-1)
    assert accel.max() < 0.5 * step.max()                     # no kinks at the keys
    angles = g.so3_log(c2w[:-1, :3, :3].transpose(-1, -2) @ c2w[1:, :3, :3]).norm(dim=-1)
    assert angles.max() < 2.5 * angles.mean()                 # rotation speed without jumps
    closed = g.waypoints(keys, T, closed=True)
    assert torch.equal(closed[-1], closed[0]) and torch.allclose(closed[0], keys[0])


LOOP_ARGS = {"pingpong_pan": {"degrees": 20}, "pingpong_tilt": {"degrees": 10}, "pingpong_dolly": {"distance": 0.4},
             "pingpong_translate": {"offset_xyz": (0.2, -0.1, 0)}, "pingpong_arc": {"degrees": 25}}


@pytest.mark.parametrize("kind", g.LOOP_KINDS)
@pytest.mark.parametrize("T", [16, 17])
def test_loops_return_exactly_to_start(kind, T):
    c2w = g.loop(kind, T, **LOOP_ARGS.get(kind, {}))
    assert c2w.shape == (T, 4, 4)
    g.validate_c2w(c2w)
    assert torch.equal(c2w[0], torch.eye(4)) and torch.equal(c2w[-1], c2w[0])
    assert (c2w - torch.eye(4)).abs().amax() > 0.05           # it really goes somewhere
    if kind.startswith("pingpong_"):                          # and comes back along the same poses
        assert torch.equal(c2w, c2w.flip(0))


def test_orbit_loop_circles_the_pivot():
    c2w = g.loop("orbit", 21, degrees=20, radius=2.0)
    to_pivot = torch.tensor([0, 0, 2.0]) - position(c2w)
    assert torch.allclose(torch.nn.functional.normalize(to_pivot, dim=-1), forward(c2w), atol=1e-6)
    assert position(c2w)[3, 0] < 0 and position(c2w)[10, 1] < -0.3    # left first, then above
    with pytest.raises(ValueError, match="loop kind 'figure8' is unknown"):
        g.loop("figure8", 10)


@pytest.mark.parametrize("spec, expected", [
    ("static", g.static(9)), ("pan:right:20", g.pan(9, 20)), ("pan:left:20", g.pan(9, -20)),
    ("tilt:up:10", g.tilt(9, 10)), ("tilt:-10", g.tilt(9, -10)), ("dolly:forward:0.5", g.dolly(9, 0.5)),
    ("dolly:0.5", g.dolly(9, 0.5)), ("zoom:out:0.5", g.dolly(9, -0.5)),
    ("translate:up:0.3", g.translate(9, (0, -0.3, 0))), ("translate:0.1,0,-0.2", g.translate(9, (0.1, 0, -0.2))),
    ("arc:left:30", g.arc(9, 30)), ("arc:right:30:4", g.arc(9, -30, 4.0)), ("loop:orbit:20", g.loop("orbit", 9)),
    ("loop:square:0.5", g.loop("square", 9, size=0.5)), (" Loop:PingPong_Pan:Right:20 ", g.loop("pingpong_pan", 9,
                                                                                               degrees=20)),
])
def test_parse_trajectory_spec(spec, expected):
    assert torch.allclose(g.parse_trajectory_spec(spec, 9), expected)


@pytest.mark.parametrize("spec, message", [
    ("spin:10", "is not understood"), ("pan:up:10", "direction 'up' is not one of"), ("pan:right", "not understood"),
    ("dolly:forward:far", "'far' is not a number"), ("translate:sideways:1", "translate direction"),
    ("loop:figure8:3", "loop kind 'figure8'"),
])
def test_parse_trajectory_spec_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        g.parse_trajectory_spec(spec, 5)


# ------------------------------------------------------------------------------------------- MultiCamVideo
# name -> (index into translation or forward axis, expected sign); "moves" = relative translation.
RECAM_MOTIONS = {
    "cam01": [("turns", 0, +1)], "cam02": [("turns", 0, -1)], "cam03": [("turns", 1, -1)],
    "cam04": [("turns", 1, +1)], "cam05": [("moves", 2, +1)], "cam06": [("moves", 2, -1)],
    "cam07": [("moves", 1, -1)], "cam08": [("moves", 1, +1)],
    "cam09": [("moves", 0, -1), ("turns", 0, +1)], "cam10": [("moves", 0, +1), ("turns", 0, -1)],
}


@needs_fixtures
@pytest.mark.parametrize("cam", sorted(RECAM_MOTIONS))
def test_recammaster_trajectories_move_as_named(cam):
    c2w = g.load_multicam_json(UNREAL)[cam]
    assert c2w.shape == (81, 4, 4)
    assert torch.allclose(torch.linalg.det(c2w[:, :3, :3]), torch.ones(81), atol=1e-4)   # proper rotations
    rel = g.relative_poses(c2w, c2w, "first_source")[-1]
    for what, axis, sign in RECAM_MOTIONS[cam]:
        vec = rel[:3, 3] if what == "moves" else rel[:3, 2]
        assert sign * vec[axis] > 0.15, (cam, what, vec)
        dominant = vec.abs().argmax() if what == "moves" else vec[:2].abs().argmax()  # forward z is always large
        assert dominant == axis, (cam, what, vec)
    if cam in ("cam01", "cam02", "cam03", "cam04"):                                      # pure rotations
        assert rel[:3, 3].abs().max() < 1e-5


@needs_fixtures
def test_recammaster_round_trip_reproduces_the_file(tmp_path):
    cams = g.load_multicam_json(UNREAL, dtype=torch.float64)
    out = g.save_multicam_json(tmp_path / "cams.json", cams)
    assert out.read_text() == UNREAL.read_text()          # byte-identical, signs of zeros included
    cams32 = g.load_multicam_json(g.save_multicam_json(tmp_path / "c32.json", g.load_multicam_json(UNREAL)))
    for cam, c2w in g.load_multicam_json(UNREAL).items():
        assert torch.allclose(cams32[cam], c2w, atol=1e-6)


def test_unreal_conversion_is_invertible_and_proper():
    c2w = random_c2w(7, seed=5)
    assert torch.allclose(g.unreal_to_opencv(g.opencv_to_unreal(c2w)), c2w, atol=1e-12)
    ue = torch.eye(4, dtype=torch.float64)
    ue[3, :3] = torch.tensor([100.0, 200.0, 300.0])                  # at (1, 2, 3) m: x fwd, y right, z up
    cv = g.unreal_to_opencv(ue)
    assert torch.allclose(cv, torch.tensor([[1.0, 0, 0, 2], [0, 1, 0, -3], [0, 0, 1, 1], [0, 0, 0, 1]]).double())


def write_unreal(path, strings):
    path.write_text(json.dumps({f"frame{t}": {"cam01": s, "cam02": s} for t, s in enumerate(strings)}))
    return path


@pytest.mark.parametrize("bad, message", [
    ("[-1 0 0 0] [0 1 0 0] [0 0 1 0] [0 0 0 1] ", "frame1 cam01 is not a rigid transform (det=-1.0)"),
    ("[nan 0 0 0] [0 1 0 0] [0 0 1 0] [0 0 0 1] ", "frame1 cam01 contains NaN"),
    ("[2 0 0 0] [0 2 0 0] [0 0 2 0] [0 0 0 1] ", "frame1 cam01 is not a rigid transform (det=8.0"),
    ("[1 0 0] [0 1 0 0] [0 0 1 0] [0 0 0 1] ", "frame1 cam01: '[1 0 0]"),
])
def test_multicam_importer_names_file_frame_and_camera(tmp_path, bad, message):
    path = write_unreal(tmp_path / "bad.json", ["[1 0 0 0] [0 1 0 0] [0 0 1 0] [0 0 0 1] ", bad])
    with pytest.raises(ValueError) as err:
        g.load_multicam_json(path)
    assert str(path) in str(err.value) and message in str(err.value)


# ------------------------------------------------------------------------------------------- RealEstate10K
@needs_fixtures
@pytest.mark.parametrize("path", RE10K, ids=lambda p: p.stem)
def test_realestate10k_fixture_loads_sane_and_round_trips(tmp_path, path):
    traj = g.load_realestate10k(path, image_size=(720, 1280))
    assert len(traj) == 16 and traj.metadata["url"].startswith("https://www.youtube.com/")
    assert 0.3 * 1280 < traj.K[0, 0, 0] < 0.6 * 1280 and torch.allclose(traj.K[:, 0, 2], torch.tensor(640.0))
    assert torch.all(traj.timestamps.diff() > 0) and 1.0 < traj.fps < 60.0
    steps = traj.c2w[:, :3, 3].diff(dim=0).norm(dim=-1)
    assert steps.max() < 1.0 and steps.sum() > 0.05                  # moves, smoothly
    bare = g.load_realestate10k(path, dtype=torch.float64)
    assert bare.K is None and bare.metadata["K_normalized"][0, 0, 2] == 0.5
    assert g.save_realestate10k(tmp_path / "a.txt", bare).read_text() == path.read_text()
    again = g.load_realestate10k(g.save_realestate10k(tmp_path / "b.txt", traj), image_size=(720, 1280))
    assert torch.allclose(again.c2w, traj.c2w, atol=1e-5) and torch.allclose(again.K, traj.K)
    assert torch.allclose(again.timestamps, traj.timestamps)


def test_realestate10k_errors_name_file_and_line(tmp_path):
    good = "0 0.5 0.9 0.5 0.5 0 0 " + " ".join(map(str, [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]))
    mirrored = "1 0.5 0.9 0.5 0.5 0 0 " + " ".join(map(str, [-1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]))
    path = tmp_path / "cam.txt"
    path.write_text(f"https://example.invalid/v\n{good}\n{mirrored}\n")
    with pytest.raises(ValueError, match=r"cam\.txt line 3 \(frame 1\) world-to-camera is not a rigid transform"):
        g.load_realestate10k(path)
    path.write_text(f"https://example.invalid/v\n{good}\n1 2 3\n")
    with pytest.raises(ValueError, match="line 3: expected 19 numbers"):
        g.load_realestate10k(path)


# ------------------------------------------------------------------------------------------- nerfstudio
def test_nerfstudio_opengl_flip_and_round_trip(tmp_path):
    gl_identity = torch.eye(4).tolist()
    data = {"camera_model": "OPENCV", "fl_x": 100.0, "fl_y": 110.0, "cx": 32.0, "cy": 24.0, "w": 64, "h": 48,
            "k1": 0.0, "applied_scale": 1.0,
            "frames": [{"file_path": "images/a.png", "transform_matrix": gl_identity, "colmap_im_id": 1},
                       {"file_path": "images/b.png", "transform_matrix": g.opencv_to_opengl(
                           g.dolly(2, 0.5)[-1].double()).tolist()}]}
    path = tmp_path / "transforms.json"
    path.write_text(json.dumps(data))
    traj = g.load_nerfstudio(path)
    assert torch.allclose(forward(traj.c2w[0]), torch.tensor([0.0, 0, -1]))    # GL cameras look down -z
    assert torch.allclose(traj.c2w[0, :3, 1], torch.tensor([0.0, -1, 0]))       # and their y is up
    assert torch.allclose(traj.c2w[1], g.dolly(2, 0.5)[-1])
    assert traj.image_size == (48, 64) and traj.K[0, 1, 1] == 110.0
    assert traj.metadata["file_paths"] == ["images/a.png", "images/b.png"]
    again = json.loads(g.save_nerfstudio(tmp_path / "out.json", traj).read_text())
    assert again == data                                                     # save(load(f)) == f
    assert torch.allclose(g.load_nerfstudio(tmp_path / "out.json").c2w, traj.c2w)
    data["frames"][1]["transform_matrix"][0][0] = 3.0
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"transforms\.json frames\[1\] \(images/b\.png\) is not a rigid"):
        g.load_nerfstudio(path)


def test_nerfstudio_per_frame_intrinsics_round_trip(tmp_path):
    K = g.make_intrinsics(torch.tensor([50.0, 60.0, 70.0]), 50.0, 16.0, 12.0)
    traj = g.Trajectory(g.pan(3, 10), K=K, image_size=(24, 32))
    back = g.load_nerfstudio(g.save_nerfstudio(tmp_path / "t.json", traj))
    assert torch.allclose(back.K, K) and torch.allclose(back.c2w, traj.c2w, atol=1e-6)


# ------------------------------------------------------------------------------------------- realcam JSON
def test_realcam_json_round_trip_and_schema_checks(tmp_path):
    traj = g.Trajectory(g.loop("orbit", 12), K=g.make_intrinsics(40.0, 40.0, 16.0, 12.0), image_size=(24, 32),
                        fps=30.0, timestamps=torch.arange(12) / 30.0, metadata={"note": "orbit"})
    path = g.save_trajectory(tmp_path / "traj.json", traj)
    back = g.load_trajectory(path)
    assert torch.allclose(back.c2w, traj.c2w) and torch.allclose(back.K, traj.K)
    assert (back.image_size, back.fps, back.metadata) == ((24, 32), 30.0, {"note": "orbit"})
    assert torch.allclose(back.timestamps, traj.timestamps)
    data = json.loads(path.read_text())
    assert (data["format"], data["version"], data["convention"]) == ("realcam-trajectory", 1, "opencv-c2w-metres")
    data["version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="schema version 99 is not supported"):
        g.load_trajectory(path)
    data["version"], data["c2w"][4][0][0] = 1, float("nan")
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"traj\.json c2w\[4\] contains NaN"):
        g.load_trajectory(path)


def test_trajectory_dataclass_checks():
    with pytest.raises(ValueError, match=r"Trajectory\.c2w\[1\] is not a rigid"):
        g.Trajectory(torch.stack([torch.eye(4), torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0]))]))
    with pytest.raises(ValueError, match=r"Trajectory\.K has shape"):
        g.Trajectory(g.static(3), K=g.make_intrinsics(torch.ones(2), 1.0, 0.5, 0.5))
    assert g.Trajectory(g.static(3), K=g.make_intrinsics(1.0, 1.0, 0.5, 0.5)).K.shape == (3, 3, 3)


# ------------------------------------------------------------------------------------------- dispatch
def test_load_any_trajectory_dispatches_on_content(tmp_path):
    traj = g.Trajectory(g.arc(5, 20), K=g.make_intrinsics(40.0, 40.0, 16.0, 12.0), image_size=(24, 32))
    files = {
        "realcam": g.save_trajectory(tmp_path / "a.json", traj),
        "nerfstudio": g.save_nerfstudio(tmp_path / "b.json", traj),
        "multicam": g.save_multicam_json(tmp_path / "c.json", {"cam01": g.static(5), "cam02": traj.c2w}),
        "realestate10k": g.save_realestate10k(tmp_path / "d.txt", traj),
    }
    for kind, path in files.items():
        got = g.load_any_trajectory(path, camera=2 if kind == "multicam" else None,
                                    image_size=(24, 32) if kind == "realestate10k" else None)
        assert torch.allclose(got.c2w, traj.c2w, atol=1e-5), kind
    assert g.load_any_trajectory(files["multicam"], camera="cam02").metadata["camera"] == "cam02"
    with pytest.raises(ValueError, match=r"holds 2 cameras \['cam01', 'cam02'\]: pass camera="):
        g.load_any_trajectory(files["multicam"])
    with pytest.raises(ValueError, match="camera=1 only applies to MultiCamVideo"):
        g.load_any_trajectory(files["realcam"], camera=1)
    (tmp_path / "e.json").write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="none of realcam-trajectory"):
        g.load_any_trajectory(tmp_path / "e.json")


@needs_fixtures
def test_load_any_trajectory_on_real_fixtures():
    arc_left = g.load_any_trajectory(UNREAL, camera="cam09")
    rel = g.relative_poses(arc_left.c2w, arc_left.c2w)
    assert rel[-1, 0, 3] < -1.0 and len(arc_left) == 81
    assert len(g.load_any_trajectory(RE10K[0])) == 16
