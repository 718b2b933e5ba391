"""One studio session: a browser tab's own :class:`StreamingGenerator`, run on a worker thread.

The event loop never generates: it hands inputs to the session (camera moves at once, everything that touches
the generator as *pending* state that the worker applies between chunks) and sends what the worker leaves in the
session's :class:`Outbox`. Every buffer is bounded: the outbox keeps the newest two frames (a slow client drops
frames, counted in ``dropped``) and at most ``texts`` replies; pending settings are merged, not queued.
"""
from __future__ import annotations

import asyncio
import shutil
import threading
import time
import warnings
import zlib
from collections import deque
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from realcam import geometry
from realcam.data.video import VideoWriter, side_by_side
from realcam.stream_cli import psnr_u8
from realcam.studio.camera import CameraControl, trajectory_json
from realcam.studio.protocol import IMAGE_FORMATS, pack

JPEG_QUALITY = 90


class Outbox:
    """Thread-safe, bounded outgoing messages of one connection, read by one async sender."""

    def __init__(self, loop: asyncio.AbstractEventLoop, frames: int = 2, texts: int = 256):
        self._loop, self._lock = loop, threading.Lock()
        self._frames: deque[bytes] = deque(maxlen=frames)
        self._texts: deque[dict | bytes] = deque(maxlen=texts)
        self._event = asyncio.Event()
        self.dropped = self.dropped_texts = 0

    def _notify(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._event.set)
        except RuntimeError:        # the loop is closed: the connection is gone
            pass

    def put_frame(self, data: bytes) -> None:
        with self._lock:
            self.dropped += len(self._frames) == self._frames.maxlen
            self._frames.append(data)
        self._notify()

    def put_text(self, message: dict | bytes) -> None:
        """A JSON reply (dict) or a binary non-frame message (bytes: an export)."""
        with self._lock:
            self.dropped_texts += len(self._texts) == self._texts.maxlen
            self._texts.append(message)
        self._notify()

    def sizes(self) -> tuple[int, int]:
        with self._lock:
            return len(self._frames), len(self._texts)

    async def get(self) -> dict | bytes:
        """The next message: replies first, then the oldest kept frame."""
        while True:
            self._event.clear()
            with self._lock:
                if self._texts:
                    return self._texts.popleft()
                if self._frames:
                    return self._frames.popleft()
            await self._event.wait()


def encode_image(frame: np.ndarray, fmt: str) -> bytes:
    """uint8 [H, W, 3] -> JPEG or WebP bytes."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG" if fmt == "jpeg" else "WEBP", quality=JPEG_QUALITY)
    return buf.getvalue()


def _rounded(m: torch.Tensor) -> list[list[float]]:
    return [[round(float(v), 6) for v in row] for row in m]


class Session:
    """A tab's stream. ``make_generator(steps)`` builds a fresh :class:`StreamingGenerator` (from the bundle);
    ``workdir`` (removed by :meth:`close`) holds uploads and the recording."""

    def __init__(self, make_generator: Callable[[int], Any], outbox: Outbox, workdir: Path, *, steps: int = 1,
                 max_fps: float = 30.0, fov_deg: float | None = None, image_format: str = "jpeg"):
        self.make_generator, self.outbox, self.workdir = make_generator, outbox, Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.camera = CameraControl()
        self.gen = make_generator(steps)
        self.steps, self.max_fps, self.fov_deg, self.format = steps, max_fps, fov_deg, image_format
        self.pose_reference = self.gen.trained_pose_reference
        self.ground_truth = True
        self.feed = self.chosen_feed = None        # the worker's source; the newest one asked for
        self.index = 0
        self._lock, self._wake, self._closed = threading.Lock(), threading.Event(), threading.Event()
        self.playing, self._budget = False, 0
        self._pending: dict[str, Any] = {}          # merged: the newest value of each change wins
        self._chunk: list[tuple] = []
        self._times: deque[float] = deque(maxlen=64)
        self._writer: VideoWriter | None = None
        self._recorded: list[torch.Tensor] = []
        self._recorded_frames = 0
        self._thread = threading.Thread(target=self._run, name="realcam-studio-session", daemon=True)
        self._thread.start()

    # ---- inputs (event loop) ----------------------------------------------------------------------------
    def request(self, **changes: Any) -> None:
        """Changes the worker applies before the next chunk: ``feed``, ``restart``, ``steps``, ``fov_deg``,
        ``pose_reference``, ``record`` (bool), ``save_trajectory``, ``export``."""
        with self._lock:
            self._pending.update(changes)
            self.chosen_feed = changes.get("feed", self.chosen_feed)
        self._wake.set()

    def play(self, on: bool) -> None:
        with self._lock:
            self.playing, self._budget = on, 0
        self._wake.set()

    def step(self, frames: int) -> None:
        with self._lock:
            self.playing, self._budget = False, self._budget + frames
        self._wake.set()

    def close(self) -> None:
        """Stop the worker and free the generator, the recording and the work folder."""
        self._closed.set()
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        if self.gen is not None:
            self.gen.close()
            self.gen = None
        self.feed = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def state(self) -> dict[str, Any]:
        return {"type": "state", "playing": self.playing, "steps": self.steps, "max_fps": self.max_fps,
                "fov_deg": self.fov_deg, "pose_reference": self.pose_reference, "format": self.format,
                "speed": self.camera.speed, "ground_truth": self.ground_truth,
                "recording": self.camera.recording, "recorded_frames": len(self._recorded),
                "source": None if self.feed is None else self.feed.info(), "target_c2w": _rounded(self.camera.pose)}

    # ---- worker ---------------------------------------------------------------------------------------
    def _run(self) -> None:
        next_tick = time.perf_counter()
        while not self._closed.is_set():
            self._wake.clear()
            try:
                self._apply_pending()
                with self._lock:
                    runnable = self.feed is not None and (self.playing or self._budget > 0)
                if not runnable:
                    self._wake.wait(0.5)
                    continue
                if not self._one_frame():
                    self._wake.wait(0.02)            # the webcam has sent no new frame yet
                    continue
            except Exception as err:              # a failed chunk leaves the generator as it was (its contract)
                with self._lock:
                    self.playing, self._budget = False, 0
                self.outbox.put_text({"type": "error", "field": "stream", "message": f"{err}; the stream is "
                                      f"paused: press play to go on"})
                self.outbox.put_text(self.state())
                continue
            if self.playing and self.max_fps:
                next_tick = max(next_tick + 1.0 / self.max_fps, time.perf_counter() - 0.1)
                self._closed.wait(max(0.0, next_tick - time.perf_counter()))

    def _apply_pending(self) -> None:
        with self._lock:
            todo, self._pending = self._pending, {}
        if not todo:
            return
        reset = False
        if "steps" in todo and todo["steps"] != self.steps:
            self.gen.close()
            self.gen, self.steps, reset = None, todo["steps"], True
            self.gen = self.make_generator(self.steps)
        if "feed" in todo:
            self.feed, reset = todo["feed"], True
        if "restart" in todo and self.feed is not None:
            self.feed.restart()
            reset = True
        for key in ("fov_deg", "pose_reference"):
            if key in todo and todo[key] != getattr(self, key):
                setattr(self, key, todo[key])
                reset = True
        if reset and self.feed is not None:
            self._reset_generator()
        if "record" in todo:
            self._set_recording(todo["record"])
        for key, action in (("save_trajectory", self._save_trajectory), ("export", self._export)):
            try:
                if todo.get(key):
                    action()
            except ValueError as err:           # the user's mistake: say so, the stream goes on
                self.outbox.put_text({"type": "error", "field": key, "message": str(err)})
        self.outbox.put_text(self.state())

    def target_K(self) -> torch.Tensor:
        if self.fov_deg is None and self.feed is not None:
            return self.feed.K
        if self.fov_deg is None:
            return geometry.fov_intrinsics(*self.gen.image_size, 60.0)
        return geometry.fov_intrinsics(*self.gen.image_size, self.fov_deg)

    def _reset_generator(self) -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.gen.reset(K=self.feed.K, target_K=self.target_K(), pose_reference=self.pose_reference)
        for w in caught:
            self.outbox.put_text({"type": "notice", "message": str(w.message)})
        self.index, self._chunk = 0, []

    def _one_frame(self) -> bool:
        try:
            src = self.feed.next()
        except ValueError as err:               # a webcam frame that is not an image: skip it, say why
            self.outbox.put_text({"type": "error", "field": "webcam", "message": str(err)})
            return False
        if src is None:
            return False
        rel, capped = self.camera.next_pose()
        world = rel if src.c2w is None else src.c2w.double() @ rel
        t_push = time.time()
        out = self.gen.push(src.image, world.float(), None if src.c2w is None else src.c2w.float())
        with self._lock:
            self._budget = max(0, self._budget - 1)
        self._chunk.append((src, rel, world, t_push))
        if capped:
            self._set_recording(False)
            self.outbox.put_text({"type": "notice", "message": "recording stopped at its frame cap"})
        if out is not None:
            for (s, r, w, t), frame in zip(self._chunk, out[None] if out.ndim == 3 else out):
                self._publish(s, r, w, t, self.gen.to_uint8(frame))
            self._chunk = []
        return True

    def _publish(self, src, rel: torch.Tensor, world: torch.Tensor, t_push: float, generated: np.ndarray) -> None:
        tiles, names, psnr = [src.image.numpy(), generated], ["source", "generated"], None
        if src.render is not None and self.ground_truth:
            gt = src.render(world, self.target_K()).numpy()
            psnr = round(psnr_u8(torch.from_numpy(gt)[None], torch.from_numpy(generated)[None])[0], 3)
            tiles.append(gt)
            names.append("ground_truth")
        image = side_by_side([torch.from_numpy(np.ascontiguousarray(t)) for t in tiles])[0].numpy()
        if self._writer is not None:
            self._writer.write(image)
            self._recorded_frames += 1
        now = time.time()
        self._times.append(now)
        span = self._times[-1] - self._times[0]
        stats = self.gen.stats
        header = {"type": "frame", "index": self.index, "source_index": src.index, "t_push_ms": t_push * 1000.0,
                  "t_ready_ms": now * 1000.0, "latency_ms": stats.latency_ms[-1] if stats.latency_ms else None,
                  "fps": (len(self._times) - 1) / span if span > 0 else None, "steps": self.steps,
                  "target_c2w": _rounded(rel), "psnr": psnr, "tiles": names,
                  "crc32": [zlib.crc32(np.ascontiguousarray(t).tobytes()) for t in tiles], "tile_size": list(src.image.shape[:2]),
                  "dropped": self.outbox.dropped, "recording": self.camera.recording,
                  "mime": IMAGE_FORMATS[self.format]}
        self.index += 1
        self.outbox.put_frame(pack(header, encode_image(image, self.format)))

    # ---- record, save, export (worker) ---------------------------------------------------------------
    def _set_recording(self, on: bool) -> None:
        if on and not self.camera.recording:
            if self._writer is not None:
                self._writer.abort()
            self._writer = VideoWriter(self.workdir / "recording.mp4", fps=self.gen.fps, crf=12)
            self._recorded_frames = 0
            self.camera.start_recording()
        elif not on and self.camera.recording:
            self._recorded = self.camera.stop_recording()
            if self._writer is not None and self._recorded_frames:
                self._writer.close()
            elif self._writer is not None:
                self._writer.abort()
            self._writer = None

    def _save_trajectory(self) -> None:
        if self.camera.recording:
            raise ValueError("stop recording before saving the trajectory")
        H, W = self.gen.image_size
        text = trajectory_json(self._recorded, self.gen.fps, self.target_K(), (H, W),
                               {"source": "realcam studio", "relative_to": "the source camera of each frame",
                                "pose_reference": self.pose_reference, "steps": self.steps})
        self.outbox.put_text({"type": "trajectory", "filename": "realcam_trajectory.json", "text": text})

    def _export(self) -> None:
        path = self.workdir / "recording.mp4"
        if self.camera.recording or not path.is_file():
            raise ValueError("nothing to export: record some frames, stop recording, then export")
        self.outbox.put_text(pack({"type": "export", "filename": "realcam_studio.mp4", "mime": "video/mp4",
                                   "frames": self._recorded_frames}, path.read_bytes()))
