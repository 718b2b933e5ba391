"""The synthetic source: deterministic, batch-independent rendering with real 3-D structure."""
import random

import pytest
import torch

from realcam import geometry
from realcam.data.render import Box, Scene, Sphere
from realcam.data.synthetic import (TRAJECTORY_FAMILIES, SyntheticSource, benchmark_render, family_trajectory,
                                    make_scene)
from realcam.registry import MULTIVIEW_SOURCES

SMALL = dict(num_cameras=3, num_frames=5, height=24, width=32)


@pytest.fixture(scope="module")
def source():
    return SyntheticSource(**SMALL, seed=3)


@pytest.fixture(scope="module")
def clip(source):
    return source.clip(1)


def test_registered_and_builds():
    assert "synthetic" in MULTIVIEW_SOURCES
    src = MULTIVIEW_SOURCES.build("synthetic", **SMALL)
    assert isinstance(src, SyntheticSource)


def test_clip_shapes_and_metadata(clip):
    assert clip.frames.shape == (3, 5, 24, 32, 3) and clip.frames.dtype == torch.uint8
    assert clip.c2w.shape == (3, 5, 4, 4) and clip.K.shape == (3, 5, 3, 3)
    assert clip.scene_id == "synthetic-train-s3-000001"
    assert set(clip.metadata["trajectories"]) <= set(TRAJECTORY_FAMILIES)
    assert clip.frames.float().std() > 10                        # not a blank image


def test_deterministic_per_seed_and_distinct_per_index_split(source, clip):
    again = SyntheticSource(**SMALL, seed=3).clip(1)
    assert torch.equal(again.frames, clip.frames) and torch.equal(again.c2w, clip.c2w)
    assert not torch.equal(source.clip(2).frames, clip.frames)
    held_out = SyntheticSource(**SMALL, seed=3, split="val")
    assert held_out.scene(1) != source.scene(1) and held_out.scene_id(1) != source.scene_id(1)
    assert SyntheticSource(**SMALL, seed=4).scene(1) != source.scene(1)


def test_render_reproduces_clip_bit_for_bit_in_any_batch(source, clip):
    """LoopAug relies on this: one (time, pose) renders the same alone, in a batch, or in another order."""
    scene = source.scene(1)
    k, t = torch.tensor([2, 0, 1, 2]), torch.tensor([4, 0, 3, 1])
    times = t.double() / source.fps
    batch = scene.render(clip.c2w[k, t], clip.K[k, t], times, 24, 32)
    assert torch.equal(batch, clip.frames[k, t])
    alone = scene.render(clip.c2w[2, 4][None], clip.K[2, 4][None], times[:1], 24, 32, chunk_rays=100)
    assert torch.equal(alone[0], clip.frames[2, 4])


def test_cameras_sit_above_the_ground_looking_down_at_the_scene(clip):
    c2w = clip.c2w
    assert (c2w[..., 1, 3] < -0.5).all()                         # y is down: the camera is above the ground
    assert (c2w[..., 1, 1] > 0.5).all()                          # image y axis roughly along world down
    assert (c2w[..., 1, 2] > 0).all()                            # optical axis points slightly down
    look = -c2w[..., :3, 3]                                      # towards the scene centre near the origin
    cos = (look * c2w[..., :3, 2]).sum(-1) / look.norm(dim=-1)
    assert (cos > 0.7).all()


def test_parallax_motion_and_novel_views(source, clip):
    assert not torch.equal(clip.frames[0, 0], clip.frames[1, 0])        # different viewpoints at one instant
    assert (clip.frames[:, 0].float() - clip.frames[:, -1].float()).abs().mean() > 1   # the scene moves
    c2w, K, family = source.novel_camera(1, torch.Generator().manual_seed(0))
    assert c2w.shape == (5, 4, 4) and family in TRAJECTORY_FAMILIES
    geometry.validate_c2w(c2w)
    novel = source.scene(1).render(c2w, K, torch.arange(5) / source.fps, 24, 32)
    assert novel.shape == (5, 24, 32, 3) and novel.float().std() > 10


def _camera():
    c2w = torch.eye(4)
    c2w[1, 3] = -1.0                                             # eye 1 m above the ground, looking along +z
    K = torch.tensor([[40.0, 0.0, 16.0], [0.0, 40.0, 16.0], [0.0, 0.0, 1.0]])
    return c2w[None], K[None]


def _scene(spheres=(), boxes=()):
    return Scene(spheres=tuple(spheres), boxes=tuple(boxes), ground_colors=((0.5, 0.5, 0.5), (0.4, 0.4, 0.4)),
                 ground_tint=(0.5, 0.5, 0.5), tile=1.0, noise_seed=1, sky_horizon=(0.8, 0.8, 0.9),
                 sky_zenith=(0.3, 0.5, 0.9), light_dir=(0.0, -1.0, 0.0))


RED = ((1.0, 0.0, 0.0), (1.0, 0.0, 0.0))
GREEN = ((0.0, 1.0, 0.0), (0.0, 1.0, 0.0))
STILL = dict(amp=(0.0, 0.0), omega=(0.0, 0.0), phase=(0.0, 0.0))


def test_analytic_projection_and_occlusion():
    """A sphere straight ahead covers the image centre; a box placed in front of it occludes it."""
    ball = Sphere(xz=(0.0, 6.0), radius=1.0, **STILL, bounce=0.0, bounce_omega=0.0, spin_axis=(0.0, 1.0, 0.0),
                  spin_omega=0.0, colors=RED, freq=2.0)
    c2w, K = _camera()
    img = _scene([ball]).render(c2w, K, torch.zeros(1), 32, 32)[0].int()
    centre, top, bottom = img[16, 16], img[1, 16], img[31, 16]
    assert centre[0] > centre[1] + 50                             # red sphere at the projected centre
    assert top[2] > top[0]                                        # sky above (blue-ish)
    assert abs(int(bottom[0]) - int(bottom[1])) < 10              # grey ground below
    wall = Box(xz=(0.0, 3.0), half=(0.2, 0.5, 0.1), **STILL, lift=0.5, tilt=0.0, yaw0=0.0, yaw_omega=0.0,
               colors=GREEN, freq=2.0)
    img2 = _scene([ball], [wall]).render(c2w, K, torch.zeros(1), 32, 32)[0].int()
    assert img2[16, 16, 1] > img2[16, 16, 0] + 50                 # the green box is in front
    assert img2[16, 22, 0] > img2[16, 22, 1] + 50                 # the sphere still shows beside it
    assert torch.equal(img2[:, :8], img[:, :8])                   # far from the box nothing changed


def test_every_family_starts_at_identity():
    for family in TRAJECTORY_FAMILIES:
        rel, _ = family_trajectory(family, 6, random.Random(0), radius=5.0)
        assert rel.shape == (6, 4, 4)
        assert torch.allclose(rel[0], torch.eye(4), atol=1e-5), family
        geometry.validate_c2w(rel)
    with pytest.raises(ValueError, match="unknown trajectory family"):
        family_trajectory("zigzag", 4, random.Random(0), 1.0)
    with pytest.raises(ValueError, match="trajectories"):
        SyntheticSource(trajectories=("pan", "zigzag"))


def test_supersample_and_scene_seed():
    scene = make_scene(5)
    c2w, K = _camera()
    a = scene.render(c2w, K, torch.zeros(1), 32, 32, supersample=2)
    assert a.shape == (1, 32, 32, 3) and torch.equal(a, scene.render(c2w, K, torch.zeros(1), 32, 32, supersample=2))
    assert make_scene(5) == scene and make_scene(6) != scene
    with pytest.raises(ValueError, match="expected c2w"):
        scene.render(c2w, K, torch.zeros(2), 8, 8)


def test_benchmark_render_reports_numbers():
    out = benchmark_render(num_cameras=1, num_frames=2, height=8, width=8, repeats=2, warmup=0)
    assert out["clips_per_second"] > 0 and out["seconds_per_clip_min"] <= out["seconds_per_clip_median"]
    assert out["frames_per_second"] == pytest.approx(2 * out["clips_per_second"])


def test_offset_rig_moves_relative_to_one_base_camera():
    """rig_mode='offset': every camera (and every novel camera) keeps the base camera's intrinsics and stays
    within novel_spread_deg of orbit (plus half a family motion) of it; LoopAug revisits still equal their frame."""
    from realcam.registry import LOOPAUG_STRATEGIES

    src = SyntheticSource(num_cameras=3, num_frames=4, height=16, width=16, rig_mode="offset", novel_spread_deg=20)
    c2w, K, _ = src.cameras(0)
    assert torch.equal(K[1], K[0]) and torch.equal(K[2], K[0])
    novel, novel_K, _ = src.novel_camera(0, torch.Generator().manual_seed(1))
    assert torch.equal(novel_K, K[0])
    for cam in (c2w[1], c2w[2], novel):
        rel = torch.linalg.inv(c2w[0, 0].double()) @ cam[0].double()
        angle = torch.rad2deg(torch.arccos(((rel[:3, :3].trace() - 1) / 2).clamp(-1, 1)))
        assert angle < 20 + 0.5 * 45 + 1e-3     # orbit + half of the largest family rotation
    seq = LOOPAUG_STRATEGIES.build("pingpong", length=4)(src, 0, torch.Generator().manual_seed(0))
    for n, m in seq.revisit.items():
        assert torch.equal(seq.target_frames[n], seq.target_frames[m])
    with pytest.raises(ValueError, match="rig_mode"):
        SyntheticSource(rig_mode="orbit")
