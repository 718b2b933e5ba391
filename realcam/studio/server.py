"""The studio server: one page, one WebSocket per tab, an upload route (FastAPI + uvicorn).

Routes: ``GET /`` the page, ``GET /static/NAME`` its assets, ``GET /health``, ``POST /upload?session=ID`` (the raw
bytes of a video, capped), ``WS /ws`` the stream (protocol: :mod:`realcam.studio.protocol`, docs/studio.md).
With a token every route and the WebSocket check it (``?token=``, the ``X-Realcam-Token`` header, or the cookie
the page sets); binding beyond the loopback needs one.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response

from realcam import geometry
from realcam.studio.camera import KEY_HELP, replay_path
from realcam.studio.protocol import MAX_STEPS, ProtocolError, parse_message
from realcam.studio.session import Outbox, Session
from realcam.studio.sources import SyntheticFeed, WebcamFeed, open_upload

LOOPBACK = ("127.0.0.1", "localhost", "::1")
STATIC = ("index.html", "studio.js", "studio.css")
TOKEN_COOKIE = "realcam_token"
WS_MAX_BYTES = 4 << 20
log = logging.getLogger("realcam.studio")


@dataclass
class StudioConfig:
    """What ``realcam studio`` serves; the defaults are the command's."""

    bundle: str | None = None           # default: the bundled tiny student
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    steps: int = 1
    dtype: str = "bf16"
    device: str = "cpu"
    seed: int = 0
    fov_deg: float = 60.0               # assumed horizontal field of view of uploaded and webcam footage
    max_fps: float = 30.0
    max_sessions: int = 8
    max_upload_mb: float = 50.0

    def check(self) -> None:
        if self.host not in LOOPBACK and not self.token:
            raise ValueError(f"--host {self.host} exposes the studio beyond this machine: pass --token SECRET (checked "
                             f"on every connection) or keep --host 127.0.0.1")
        if not 1 <= self.steps <= MAX_STEPS:
            raise ValueError(f"--steps {self.steps}: the studio runs 1 to {MAX_STEPS} denoising steps")


def check_bundle(config: StudioConfig):
    """Load the bundle once (a clear error before serving) -> a generator to read its options from."""
    from realcam.streaming import StreamingGenerator, bundled_model

    path = config.bundle or bundled_model("tiny_student")
    config.bundle = str(path)
    return StreamingGenerator.from_checkpoint(path, steps=config.steps, dtype=config.dtype, device=config.device,
                                              seed=config.seed)


def create_app(config: StudioConfig):
    """The ASGI app. Loads the bundle once to check it; each session loads its own generator."""
    from realcam.streaming import StreamingGenerator

    config.check()
    probe = check_bundle(config)
    size, fps, chunk = probe.image_size, probe.fps, probe.chunk_frames
    trained_reference = probe.trained_pose_reference
    del probe
    workroot = Path(tempfile.mkdtemp(prefix="realcam-studio-"))
    sessions: dict[str, Session] = {}
    opening: set[str] = set()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        for s in list(sessions.values()):
            await asyncio.to_thread(s.close)
        shutil.rmtree(workroot, ignore_errors=True)

    app = FastAPI(title="realcam studio", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.sessions, app.state.config = sessions, config

    def make_generator(steps: int):
        return StreamingGenerator.from_checkpoint(config.bundle, steps=steps, dtype=config.dtype,
                                                  device=config.device, seed=config.seed)

    def token_ok(conn: Any) -> bool:
        if not config.token:
            return True
        given = (conn.query_params.get("token") or conn.headers.get("x-realcam-token")
                 or conn.cookies.get(TOKEN_COOKIE) or "")
        return hmac.compare_digest(given.encode(), config.token.encode())

    def refused(status: int, message: str, field: str) -> JSONResponse:
        return JSONResponse({"error": message, "field": field}, status_code=status)

    @app.middleware("http")
    async def check_token(request: Request, call_next):
        if not token_ok(request):
            return refused(403, "bad or missing token: open the page as /?token=SECRET (the --token of "
                                "`realcam studio`)", "token")
        return await call_next(request)

    @app.get("/")
    async def index(request: Request) -> Response:
        page = resources.files("realcam.studio").joinpath("static", "index.html").read_text()
        response = Response(page, media_type="text/html", headers={"Cache-Control": "no-store"})
        if config.token:
            response.set_cookie(TOKEN_COOKIE, config.token, httponly=True, samesite="strict")
        return response

    @app.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in STATIC:
            return refused(404, f"no static file {name!r}", "name")
        kind = {"js": "text/javascript", "css": "text/css", "html": "text/html"}[name.rsplit(".", 1)[1]]
        return Response(resources.files("realcam.studio").joinpath("static", name).read_bytes(), media_type=kind)

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True, "sessions": len(sessions)}

    @app.post("/upload")
    async def upload(request: Request, session: str = "") -> Response:
        s = sessions.get(session)
        if s is None:
            return refused(404, f"session {session!r} is not open: upload from the page (POST /upload?session=ID "
                                f"with the id of the WebSocket's hello)", "session")
        cap = int(config.max_upload_mb * (1 << 20))
        too_big = refused(413, f"the upload is larger than the {config.max_upload_mb:g} MB cap: trim the video or "
                               f"restart the studio with a larger --max-upload-mb", "upload")
        if int(request.headers.get("content-length") or 0) > cap:
            return too_big
        path = s.workdir / f"upload-{secrets.token_hex(4)}"
        try:
            written = 0
            with open(path, "wb") as f:
                async for part in request.stream():
                    written += len(part)
                    if written > cap:
                        return too_big
                    f.write(part)
            if not written:
                return refused(415, "the upload is empty: send the bytes of a video file", "upload")
            feed = await asyncio.to_thread(open_upload, path, size, fps, config.fov_deg)
        except ValueError as err:
            return refused(415, str(err), "upload")
        finally:
            path.unlink(missing_ok=True)
        s.request(feed=feed)
        return JSONResponse({"ok": True, **feed.info()})

    async def handle(m: dict, s: Session) -> None:
        kind = m["type"]
        if kind in ("play", "pause"):
            s.play(kind == "play")
        elif kind == "step":
            s.step(m["frames"])
        elif kind in ("restart", "save_trajectory", "export"):
            s.request(**{kind: True})
        elif kind == "reset_camera":
            s.camera.reset()
        elif kind == "keys":
            s.camera.set_keys(m["down"])
        elif kind == "orbit":
            s.camera.orbit(m["dx"], m["dy"])
        elif kind == "dolly":
            s.camera.dolly(m["amount"])
        elif kind == "pose":
            s.camera.set_pose(m["c2w"])
        elif kind == "preset":
            s.camera.play_path(m["path"], from_current=True)
        elif kind == "record":
            s.request(record=m["on"])
        elif kind == "replay":
            try:
                s.camera.play_path(await asyncio.to_thread(replay_path, m["text"]), from_current=False)
            except ValueError as err:
                raise ProtocolError("trajectory", str(err)) from None
        elif kind == "source":
            feed = (await asyncio.to_thread(SyntheticFeed, size, fps, m["seed"]) if m["kind"] == "synthetic"
                    else WebcamFeed(size, config.fov_deg))
            s.request(feed=feed)
        elif kind == "settings":
            if "speed" in m:
                s.camera.speed = m["speed"]
            for key in ("max_fps", "format", "ground_truth"):
                if key in m:
                    setattr(s, key, m[key])
            s.request(**{k: m[k] for k in ("steps", "fov_deg", "pose_reference") if k in m})
        if kind == "ping":
            s.outbox.put_text({"type": "pong", "t": m.get("t")})
        elif kind not in ("keys", "orbit", "dolly"):       # those come many a second; frames carry the pose
            s.outbox.put_text(s.state())

    async def receive(ws: WebSocket, s: Session) -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                if message.get("bytes") is not None:
                    if not isinstance(s.chosen_feed, WebcamFeed):
                        raise ProtocolError("message", f"a binary message ({len(message['bytes'])} bytes) but the "
                                                       f"source is not the webcam: control messages are JSON text")
                    s.chosen_feed.offer(message["bytes"])
                    continue
                await handle(parse_message(message.get("text") or ""), s)
            except ProtocolError as err:
                s.outbox.put_text(err.reply())

    async def send(ws: WebSocket, outbox: Outbox) -> None:
        while True:
            m = await outbox.get()
            if isinstance(m, bytes):
                await ws.send_bytes(m)
            else:
                await ws.send_text(json.dumps(m))

    async def refuse(ws: WebSocket, field: str, message: str, code: int) -> None:
        await ws.send_text(json.dumps({"type": "error", "field": field, "message": message}))
        await ws.close(code=code, reason=message[:120])

    @app.websocket("/ws")
    async def stream(ws: WebSocket) -> None:
        await ws.accept()
        origin = ws.headers.get("origin")
        if not token_ok(ws):
            return await refuse(ws, "token", "bad or missing token: connect to /ws?token=SECRET", 4403)
        if origin and urlsplit(origin).netloc != ws.headers.get("host"):
            return await refuse(ws, "origin", f"origin {origin} is not this server: open the studio's own page", 4403)
        if len(sessions) + len(opening) >= config.max_sessions:
            return await refuse(ws, "session", f"the studio already serves {config.max_sessions} sessions "
                                               f"(--max-sessions): close a tab and reload", 4429)
        sid = secrets.token_urlsafe(9)
        outbox = Outbox(asyncio.get_running_loop())
        opening.add(sid)                # counted while its generator loads off the loop
        try:
            s = await asyncio.to_thread(Session, make_generator, outbox, workroot / sid, steps=config.steps,
                                        max_fps=config.max_fps)
        finally:
            opening.discard(sid)
        sessions[sid] = s
        sender = asyncio.create_task(send(ws, outbox))
        try:
            outbox.put_text({"type": "hello", "session": sid, "image_size": list(size), "fps": fps,
                             "chunk_frames": chunk, "bundle": str(config.bundle), "keys": KEY_HELP,
                             "presets": list(geometry.SPEC_EXAMPLES), "steps_range": [1, MAX_STEPS],
                             "pose_references": list(geometry.POSE_REFERENCES),
                             "trained_pose_reference": trained_reference, "max_upload_mb": config.max_upload_mb})
            outbox.put_text(s.state())
            await receive(ws, s)
        except WebSocketDisconnect:     # the tab went away mid-send or mid-receive: the session just ends
            pass
        except Exception:
            log.exception("realcam studio: session %s failed; closing it", sid)
        finally:
            sender.cancel()
            sessions.pop(sid, None)
            await asyncio.to_thread(s.close)

    return app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def uvicorn_config(app: Any, host: str, port: int):
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=os.environ.get("REALCAM_STUDIO_LOG", "warning"), ws="websockets-sansio", ws_max_size=WS_MAX_BYTES,
                          lifespan="on")


@contextlib.contextmanager
def serve_in_thread(config: StudioConfig) -> Iterator[tuple[str, Any]]:
    """Run the studio on a background thread (tests, benchmarks): yields (base URL, app)."""
    import uvicorn

    if not config.port:
        config.port = free_port()
    app = create_app(config)
    server = uvicorn.Server(uvicorn_config(app, config.host, config.port))
    thread = threading.Thread(target=server.run, name="realcam-studio-server", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the studio server did not start on {config.host}:{config.port}")
            threading.Event().wait(0.02)
        yield f"http://{config.host}:{config.port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=30)
