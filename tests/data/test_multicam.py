"""multicam_folder on a tiny MultiCamVideo-layout folder built from the ReCamMaster fixtures."""
import shutil
from pathlib import Path

import pytest
import torch

from realcam import geometry
from realcam.data.multicam import MulticamFolderSource, find_scenes, focal_from_path
from realcam.data.video import read_video, write_video
from realcam.registry import LOOPAUG_STRATEGIES, MULTIVIEW_SOURCES

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures"
RECAM = FIXTURES / "recammaster"
CAMS = ("cam01", "cam02", "cam03")


@pytest.fixture(scope="module")
def real_frames():
    if not (RECAM / "videos" / "10.mp4").is_file() or not (RECAM / "camera_extrinsics.json").is_file():
        pytest.skip(f"ReCamMaster fixtures not found at {RECAM.resolve()} (expected ../shared/fixtures beside the repo)")
    return read_video(RECAM / "videos" / "10.mp4", stop=9, size=(36, 64))    # 9 real frames, 64x36


def _layout(root: Path, frames: torch.Tensor, scene: str = "scene1") -> Path:
    """root/<scene>/videos/camXX.mp4 (6 frames each, a different cut per camera) + cameras/camera_extrinsics.json."""
    d = root / scene
    (d / "cameras").mkdir(parents=True)
    shutil.copy(RECAM / "camera_extrinsics.json", d / "cameras" / "camera_extrinsics.json")
    for i, cam in enumerate(CAMS):
        write_video(d / "videos" / f"{cam}.mp4", frames[i:i + 6], fps=30, crf=10)
    return d


def test_loads_real_poses_frames_and_intrinsics(tmp_path, real_frames):
    scene_dir = _layout(tmp_path, real_frames)
    src = MULTIVIEW_SOURCES.build("multicam_folder", root=tmp_path, focal_length_mm=24.0)
    assert len(src) == 1 and src.scene_id(0) == "scene1"
    clip = src.clip(0)
    assert clip.frames.shape == (3, 6, 36, 64, 3)                 # 6 pictures; the JSON's 81 poses are trimmed
    assert clip.fps == pytest.approx(30.0)
    poses = geometry.load_multicam_json(scene_dir / "cameras" / "camera_extrinsics.json")
    for k, cam in enumerate(CAMS):
        assert torch.equal(clip.c2w[k], poses[cam][:6]), cam
        err = (clip.frames[k].float() - real_frames[k:k + 6].float()).abs().mean()
        assert err < 6, f"{cam}: decoded frames differ from what was written (mean abs {err:.1f})"
    f = 24.0 / 23.76 * 64
    assert torch.allclose(clip.K[0, 0], torch.tensor([[f, 0, 32.0], [0, f, 18.0], [0, 0, 1]]), atol=1e-4)
    assert clip.metadata["camera_names"] == list(CAMS)


def test_selection_resize_and_focal_from_folder_name(tmp_path, real_frames):
    _layout(tmp_path / "f35_aperture10", real_frames, "scene2")
    _layout(tmp_path / "f35_aperture10", real_frames, "scene10")
    assert [p.name for p in find_scenes(tmp_path)] == ["scene2", "scene10"]      # natural order
    assert focal_from_path(Path("train/f35_aperture10/scene2")) == 35.0 and focal_from_path(Path("scene2")) is None
    src = MulticamFolderSource(tmp_path, num_frames=3, frame_stride=2, height=18, cameras=["cam03", "cam01"])
    clip = src.clip(1)
    assert clip.scene_id == "f35_aperture10/scene10"
    assert clip.frames.shape == (2, 3, 18, 32, 3) and clip.fps == pytest.approx(15.0)
    assert clip.metadata["frame_indices"] == [0, 2, 4]
    poses = geometry.load_multicam_json(src.scenes[1] / "cameras" / "camera_extrinsics.json")
    assert torch.equal(clip.c2w[0], poses["cam03"][[0, 2, 4]])
    assert clip.K[0, 0, 0, 0] == pytest.approx(35.0 / 23.76 * 32, rel=1e-5)
    fov = MulticamFolderSource(tmp_path, fov_deg=90.0).clip(0)
    assert fov.K[0, 0, 0, 0] == pytest.approx(32.0, rel=1e-5)      # W/2 / tan(45 deg)


def test_clear_errors(tmp_path, real_frames):
    _layout(tmp_path, real_frames)
    with pytest.raises(ValueError, match="pass focal_length_mm"):
        MulticamFolderSource(tmp_path).clip(0)
    with pytest.raises(ValueError, match=r"cameras \['cam09'\] lack a video"):
        MulticamFolderSource(tmp_path, focal_length_mm=24, cameras=["cam09"]).clip(0)
    with pytest.raises(ValueError, match="fewer than num_frames=10"):
        MulticamFolderSource(tmp_path, focal_length_mm=24, num_frames=10).clip(0)
    with pytest.raises(FileNotFoundError, match="no scene under"):
        MulticamFolderSource(tmp_path / "scene1" / "videos")


def test_loopaug_on_recorded_cameras(tmp_path, real_frames):
    _layout(tmp_path, real_frames)
    src = MulticamFolderSource(tmp_path, focal_length_mm=24)
    clip = src.clip(0)
    for name, seed in [(n, s) for n in ("pingpong", "camera_cycle", "orbit_return") for s in range(3)]:
        seq = LOOPAUG_STRATEGIES.build(name, length=7)(src, 0, torch.Generator().manual_seed(seed))
        assert seq.revisit, name
        for n, m in seq.revisit.items():
            assert torch.equal(seq.target_frames[n], seq.target_frames[m])
            assert torch.equal(seq.target_c2w[n], seq.target_c2w[m])
        for n in range(7):                                          # frames are the recorded ones
            cam, t = seq.metadata["target_cameras"][n], seq.metadata["times"][n]
            assert torch.equal(seq.target_frames[n], clip.frames[cam, t])
