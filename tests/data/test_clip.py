"""MultiviewClip: validation names the field and the fix; select keeps everything consistent."""
import math

import numpy as np
import pytest
import torch

from realcam.data.clip import MultiviewClip


def _clip(K_=3, T=4, H=8, W=10, **kw) -> MultiviewClip:
    frames = torch.randint(0, 256, (K_, T, H, W, 3), dtype=torch.uint8)
    c2w = torch.eye(4).repeat(K_, T, 1, 1)
    c2w[..., 0, 3] = torch.arange(K_ * T, dtype=torch.float32).reshape(K_, T)   # distinct poses
    Kmat = torch.tensor([[20.0, 0, W / 2], [0, 20.0, H / 2], [0, 0, 1]]).repeat(K_, T, 1, 1)
    args = dict(frames=frames, c2w=c2w, K=Kmat, fps=10.0, scene_id="s", metadata={"camera_names": ["a", "b", "c"][:K_]})
    args.update(kw)
    return MultiviewClip(**args)


def test_valid_clip_and_accessors():
    clip = _clip()
    assert (clip.num_cameras, clip.num_frames, clip.image_size) == (3, 4, (8, 10))
    assert clip.c2w.dtype == torch.float32 and clip.K.dtype == torch.float32
    assert torch.allclose(clip.times, torch.tensor([0.0, 0.1, 0.2, 0.3], dtype=torch.float64))
    assert "cameras=3" in repr(clip)


def test_numpy_and_float64_inputs_are_converted():
    clip = _clip()
    again = MultiviewClip(clip.frames.numpy(), clip.c2w.double().numpy(), clip.K.double(), 10, "s")
    assert torch.equal(again.frames, clip.frames) and again.c2w.dtype == torch.float32 and again.fps == 10.0


@pytest.mark.parametrize("field, value, match", [
    ("frames", torch.zeros(3, 4, 8, 10, 3), "frames has dtype torch.float32: expected uint8"),
    ("frames", torch.zeros(4, 8, 10, 3, dtype=torch.uint8), r"frames has shape \(4, 8, 10, 3\): expected \[K, T, H, W, 3\]"),
    ("c2w", torch.eye(4).repeat(3, 5, 1, 1), r"c2w has shape \(3, 5, 4, 4\): expected \[3, 4, 4, 4\]"),
    ("K", torch.eye(3).repeat(2, 4, 1, 1), r"K has shape \(2, 4, 3, 3\): expected \[3, 4, 3, 3\]"),
    ("c2w", torch.eye(4, dtype=torch.int64).repeat(3, 4, 1, 1), "c2w has dtype torch.int64"),
    ("fps", 0.0, "fps is 0.0: expected a finite frame rate > 0"),
    ("fps", math.nan, "fps is nan"),
    ("metadata", [], "metadata is a list: expected a dict"),
])
def test_bad_fields_name_the_field(field, value, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _clip(**{field: value})


def test_non_rigid_and_non_finite_poses_are_rejected():
    c2w = torch.eye(4).repeat(3, 4, 1, 1)
    c2w[1, 2, 0, 0] = -1.0                                     # a reflection, det = -1
    with pytest.raises(ValueError, match=r"c2w\[1, 2\]|c2w\[1\]\[2\]|c2w\[6\]"):
        _clip(c2w=c2w)
    K = torch.tensor([[20.0, 0, 5], [0, 20.0, 4], [0, 0, 1]]).repeat(3, 4, 1, 1)
    K[0, 1, 0, 0] = math.nan
    with pytest.raises(ValueError, match=r"^K"):
        _clip(K=K)
    K = torch.tensor([[-20.0, 0, 5], [0, 20.0, 4], [0, 0, 1]]).repeat(3, 4, 1, 1)
    with pytest.raises(ValueError, match=r"^K"):
        _clip(K=K)


def test_select_cameras_and_times():
    clip = _clip(T=6)
    sub = clip.select(cameras=[2, 0], times=slice(1, None, 2))
    assert sub.frames.shape == (2, 3, 8, 10, 3)
    assert torch.equal(sub.frames[0, 1], clip.frames[2, 3]) and torch.equal(sub.c2w[1, 2], clip.c2w[0, 5])
    assert torch.equal(sub.K, clip.K[[2, 0]][:, 1::2])
    assert sub.fps == pytest.approx(5.0)                        # every 2nd frame: half the rate
    assert sub.metadata["camera_names"] == ["c", "a"] and sub.metadata["frame_indices"] == [1, 3, 5]
    one = clip.select(cameras=1, times=[0])
    assert one.frames.shape == (1, 1, 8, 10, 3) and one.fps == clip.fps
    assert clip.metadata["camera_names"] == ["a", "b", "c"]     # the original is untouched
    with pytest.raises(IndexError, match="cameras selection"):
        clip.select(cameras=[3])
    with pytest.raises(ValueError, match="times selection"):
        clip.select(times=[])
    assert np.array_equal(clip.select().frames.numpy(), clip.frames.numpy())
