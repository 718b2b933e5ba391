"""A studio session without the server: determinism, pose timing, the worker thread, bounded queues, freeing."""
import asyncio
import gc
import io
import threading
import time
import weakref

import numpy as np
import pytest
import torch

from realcam import geometry
from realcam.data.video import decode_video_bytes
from realcam.streaming import StreamingGenerator, bundled_model
from realcam.studio.protocol import unpack
from realcam.studio.session import Outbox, Session
from realcam.studio.sources import SyntheticFeed


class Recorder:
    """The part of an Outbox a session uses, keeping everything."""

    def __init__(self):
        self.frames, self.texts, self.dropped = [], [], 0

    def put_frame(self, data):
        self.frames.append(unpack(data))

    def put_text(self, message):
        self.texts.append(message)


def make_generator(steps):
    return StreamingGenerator.from_checkpoint(bundled_model(), steps=steps, dtype="bf16")


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the session"
        time.sleep(0.01)


def tiles(payload: bytes, n: int = 3):
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(payload)).convert("RGB")).astype(int)
    return [image[:, i * 34:i * 34 + 32] for i in range(n)]


@pytest.fixture
def session(tmp_path, one_thread):
    out = Recorder()
    s = Session(make_generator, out, tmp_path / "s", steps=1)
    s.request(feed=SyntheticFeed((32, 32), 8.0, seed=3))
    yield s, out
    s.close()


def steps_of(s, out, n):
    have = len(out.frames)
    s.step(n)
    wait_for(lambda: len(out.frames) == have + n)
    return out.frames[have:]


def test_restart_reproduces_the_stream_and_a_pose_change_shows_in_the_next_frame(session):
    s, out = session
    plain = steps_of(s, out, 4)
    assert [h["index"] for h, _ in plain] == [0, 1, 2, 3] and plain[0][0]["tiles"] == ["source", "generated",
                                                                                         "ground_truth"]
    s.request(restart=True)
    again = steps_of(s, out, 3)
    assert [p for _, p in again] == [p for _, p in plain[:3]]          # same seed, same source: same bytes
    moved = geometry.pan(2, 12.0)[-1].double()
    s.camera.set_pose(moved)                     # while paused: applies to the next chunk (one frame here)
    (header, payload), = steps_of(s, out, 1)
    assert header["index"] == 3 and torch.allclose(torch.tensor(header["target_c2w"], dtype=torch.float64), moved,
                                                   atol=1e-5)
    src_a, gen_a, gt_a = tiles(plain[3][1])
    src_b, gen_b, gt_b = tiles(payload)
    assert np.abs(src_a - src_b).mean() < 1     # the same source frame (JPEG blocks straddle the tiles)
    assert np.abs(gen_a - gen_b).mean() > 4 and np.abs(gt_a - gt_b).mean() > 4


def test_generation_runs_on_the_session_thread_not_the_caller(tmp_path, one_thread):
    threads = []

    def spying(steps):
        gen = make_generator(steps)
        push = gen.push
        gen.push = lambda *a, **k: (threads.append(threading.get_ident()), push(*a, **k))[1]
        return gen

    out = Recorder()
    s = Session(spying, out, tmp_path / "s")
    try:
        s.request(feed=SyntheticFeed((32, 32), 8.0, seed=1))
        s.play(True)
        wait_for(lambda: len(out.frames) >= 3)
        s.play(False)
        assert threads and set(threads) == {s._thread.ident} and s._thread.ident != threading.get_ident()
    finally:
        s.close()


def test_close_frees_the_generator_the_thread_and_the_work_folder(tmp_path, one_thread):
    out = Recorder()
    s = Session(make_generator, out, tmp_path / "s")
    s.request(feed=SyntheticFeed((32, 32), 8.0, seed=1))
    s.play(True)
    wait_for(lambda: len(out.frames) >= 2)
    gen = weakref.ref(s.gen)
    s.close()
    gc.collect()
    assert gen() is None and not s._thread.is_alive() and not (tmp_path / "s").exists()


def test_steps_setting_rebuilds_the_generator_at_the_next_chunk(session):
    s, out = session
    steps_of(s, out, 1)
    s.request(steps=3)
    (header, _), = steps_of(s, out, 1)
    assert header["steps"] == 3 and header["index"] == 0 and len(s.gen.sigmas) == 3


def test_record_then_save_and_export(session):
    s, out = session
    s.request(export=True)
    wait_for(lambda: any(t.get("field") == "export" for t in out.texts if isinstance(t, dict)))
    s.request(record=True)
    s.camera.set_keys(["d"])
    recorded = steps_of(s, out, 5)
    s.request(record=False, save_trajectory=True, export=True)
    wait_for(lambda: any(isinstance(t, bytes) for t in out.texts))
    traj = next(t for t in out.texts if isinstance(t, dict) and t["type"] == "trajectory")
    path = s.workdir / "t.json"
    path.write_text(traj["text"])
    c2w = geometry.load_trajectory(path, dtype=torch.float64).c2w
    assert torch.allclose(c2w, torch.tensor([h["target_c2w"] for h, _ in recorded], dtype=torch.float64), atol=1e-5)
    header, mp4 = unpack(next(t for t in out.texts if isinstance(t, bytes)))
    assert header["type"] == "export" and header["frames"] == 5
    assert decode_video_bytes(mp4).shape == (5, 32, 32 * 3 + 4, 3)


def test_outbox_keeps_the_newest_frames_and_counts_the_dropped():
    loop = asyncio.new_event_loop()
    try:
        box = Outbox(loop, frames=2, texts=3)
        for i in range(10):
            box.put_frame(bytes([i]))
        for i in range(5):
            box.put_text({"i": i})
        assert box.sizes() == (2, 3) and box.dropped == 8 and box.dropped_texts == 2
        got = [loop.run_until_complete(box.get()) for _ in range(5)]
        assert got == [{"i": 2}, {"i": 3}, {"i": 4}, bytes([8]), bytes([9])]
    finally:
        loop.close()


def test_pose_reference_and_field_of_view_restart_the_stream_and_say_when_off_distribution(session):
    s, out = session
    steps_of(s, out, 2)
    s.request(pose_reference="first_source", fov_deg=40.0)
    (header, _), = steps_of(s, out, 1)
    notices = [t["message"] for t in out.texts if isinstance(t, dict) and t["type"] == "notice"]
    assert header["index"] == 0 and any("first_source" in n and "current_source" in n for n in notices)
    assert s.gen.pose_reference == "first_source"
    assert torch.allclose(s.gen.target_K.cpu(), geometry.fov_intrinsics(32, 32, 40.0))
