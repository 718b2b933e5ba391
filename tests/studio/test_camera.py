"""Steering, presets, recording and replay of the studio camera, and the message checks (no server)."""
import json
import math

import pytest
import torch

from realcam import geometry
from realcam.studio import camera as cam
from realcam.studio.camera import CameraControl, replay_path, trajectory_json
from realcam.studio.protocol import ProtocolError, pack, parse_message, unpack


def test_a_key_tap_moves_one_step_and_a_held_key_one_step_per_frame():
    c = CameraControl()
    c.set_keys(["d"])
    c.set_keys([])                              # released before the next frame: still one step
    pose, _ = c.next_pose()
    assert torch.allclose(pose[:3, 3], torch.tensor([cam.TRANSLATE_STEP_M, 0, 0], dtype=torch.float64))
    assert torch.equal(c.next_pose()[0], pose)  # nothing held: the camera stays
    c.speed = 2.0
    c.set_keys(["w"])
    for _ in range(3):
        pose, _ = c.next_pose()
    assert pose[2, 3] == pytest.approx(3 * 2 * cam.TRANSLATE_STEP_M)


def test_arrow_keys_pan_by_the_documented_angle_and_reset_returns_to_the_source_view():
    c = CameraControl()
    c.set_keys(["arrowright"])
    pose, _ = c.next_pose()
    yaw = math.degrees(math.atan2(pose[0, 2], pose[2, 2]))
    assert yaw == pytest.approx(cam.ROTATE_STEP_DEG) and torch.allclose(pose[:3, 3], torch.zeros(3, dtype=torch.float64))
    c.reset()
    assert torch.equal(c.next_pose()[0], torch.eye(4, dtype=torch.float64))


def test_drag_orbits_the_pivot_and_the_opposite_drag_undoes_it():
    c = CameraControl()
    c.orbit(40, -12)
    pose = c.pose
    pivot = torch.tensor([0, 0, cam.ORBIT_RADIUS_M], dtype=torch.float64)
    assert torch.linalg.norm(pose[:3, 3] - pivot) == pytest.approx(cam.ORBIT_RADIUS_M)
    assert not torch.allclose(pose, torch.eye(4, dtype=torch.float64))
    c.orbit(-40, 0)                             # orbit(dx, dy) is yaw after pitch: undo yaw first
    c.orbit(0, 12)
    assert torch.allclose(c.pose, torch.eye(4, dtype=torch.float64), atol=1e-12)
    c.dolly(-100)
    assert c.pose[2, 3] == pytest.approx(100 * cam.DOLLY_M_PER_WHEEL)


def test_a_preset_plays_its_builder_poses_from_the_current_pose_then_holds():
    c = CameraControl()
    c.set_pose(geometry.translate(2, [0.1, 0, 0])[-1].double())
    start = c.pose
    path = geometry.parse_trajectory_spec("arc:left:30", 5).double()
    c.play_path(path)
    got = [c.next_pose()[0] for _ in range(7)]
    for k in range(5):
        assert torch.allclose(got[k], start @ path[k])
    assert torch.equal(got[5], got[4]) and torch.equal(got[6], got[4]) and not c.playing_path
    c.play_path(path)
    c.set_keys(["a"])                           # steering takes over
    assert not c.playing_path


def test_recording_saves_a_realcam_trajectory_that_replays_the_same_poses(tmp_path):
    c = CameraControl()
    c.start_recording()
    c.set_keys(["d", "arrowup"])
    flown = [c.next_pose()[0] for _ in range(6)]
    poses = c.stop_recording()
    assert len(poses) == 6 and all(torch.equal(a, b) for a, b in zip(poses, flown))
    K = geometry.fov_intrinsics(32, 32, 60.0)
    text = trajectory_json(poses, 8.0, K, (32, 32), {"source": "test"})
    (tmp_path / "t.json").write_text(text)
    traj = geometry.load_trajectory(tmp_path / "t.json", dtype=torch.float64)
    assert torch.allclose(traj.c2w, torch.stack(flown)) and traj.fps == 8.0 and traj.image_size == (32, 32)
    replay = replay_path(text)                  # relative to its first pose, like `realcam stream --trajectory`
    assert torch.allclose(replay, geometry.rigid_inverse(flown[0])[None] @ torch.stack(flown), atol=1e-9)
    with pytest.raises(ValueError, match="not a trajectory file"):
        replay_path('{"format": "something else"}')
    with pytest.raises(ValueError, match="nothing was recorded"):
        trajectory_json([], 8.0, K, (32, 32), {})


def test_record_stops_at_its_cap(monkeypatch):
    monkeypatch.setattr(cam, "MAX_RECORD_FRAMES", 3)
    c = CameraControl()
    c.start_recording()
    assert [c.next_pose()[1] for _ in range(3)] == [False, False, True]


@pytest.mark.parametrize("text, field", [
    ("not json", "message"), ("[1, 2]", "type"), ('{"type": "fly"}', "type"),
    ('{"type": "pose", "c2w": [[NaN, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]}', "c2w"),
    ('{"type": "pose", "c2w": [[-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]}', "c2w"),
    ('{"type": "pose", "c2w": [[1, 0], [0, 1]]}', "c2w"), ('{"type": "pose", "c2w": "eye"}', "c2w"),
    ('{"type": "keys", "down": ["x"]}', "down"), ('{"type": "keys", "down": "w"}', "down"),
    ('{"type": "settings", "steps": 5}', "steps"), ('{"type": "settings", "steps": 1.5}', "steps"),
    ('{"type": "settings", "fov_deg": Infinity}', "fov_deg"), ('{"type": "settings", "zoom": 2}', "zoom"),
    ('{"type": "settings", "pose_reference": "world"}', "pose_reference"),
    ('{"type": "settings", "format": "gif"}', "format"), ('{"type": "orbit", "dx": "a", "dy": 0}', "dx"),
    ('{"type": "preset", "spec": "spin:9"}', "spec"), ('{"type": "source", "kind": "tv"}', "kind"),
    ('{"type": "record"}', "on"), ('{"type": "replay", "trajectory": 3}', "trajectory"),
])
def test_bad_messages_are_refused_naming_the_field(text, field):
    with pytest.raises(ProtocolError) as err:
        parse_message(text)
    assert err.value.field == field and err.value.reply()["type"] == "error" and len(str(err.value)) > 20


def test_good_messages_parse_to_typed_values():
    pose = parse_message(json.dumps({"type": "pose", "c2w": torch.eye(4).tolist()}))
    assert torch.equal(pose["c2w"], torch.eye(4, dtype=torch.float64))
    assert parse_message('{"type": "keys", "down": ["W", "ArrowLeft"]}')["down"] == ["arrowleft", "w"]
    assert parse_message('{"type": "settings", "steps": 2, "speed": 0.5}') == {"type": "settings", "steps": 2,
                                                                               "speed": 0.5}
    preset = parse_message('{"type": "preset", "spec": "loop:orbit:20", "frames": 9}')
    assert torch.equal(preset["path"], geometry.parse_trajectory_spec("loop:orbit:20", 9))
    header, payload = unpack(pack({"type": "frame", "index": 3}, b"\xff\xd8jpeg"))
    assert header == {"type": "frame", "index": 3} and payload == b"\xff\xd8jpeg"
