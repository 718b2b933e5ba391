"""The studio server over real sockets: frames, bad input refused with a message while other sessions go on,
uploads (PyAV, capped), the token, the webcam path, freeing a closed tab, and the CLI's bind check."""
import http.client as http_client
import io
import json
import time
import urllib.parse

import numpy as np
import pytest
import torch

from realcam.cli import main as realcam_main
from realcam.data.video import encode_video_bytes
from realcam.studio.server import StudioConfig, serve_in_thread


def http(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, dict | str]:
    """One request; the reply is read even when the server answers (413, 403) before the body is all sent and
    closes the connection, as a browser reads it (urllib would only report the broken pipe)."""
    parts = urllib.parse.urlsplit(url)
    conn = http_client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        try:
            conn.request("POST" if data is not None else "GET", target, body=data, headers=headers or {})
        except (BrokenPipeError, ConnectionResetError):
            pass                # the server refused early: its reply is already on the socket
        reply = conn.getresponse()
        status, body = reply.status, reply.read().decode()
    finally:
        conn.close()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def playing(client_of, url, seed=3):
    c = client_of(url)
    hello = c.text("hello")
    c.send(type="source", kind="synthetic", seed=seed)
    c.send(type="play")
    c.frame()
    return c, hello


def test_frames_arrive_and_garbage_nan_and_binary_get_an_error_while_the_stream_goes_on(studio, client_of):
    url, app = studio
    a, hello = playing(client_of, url)
    b, _ = playing(client_of, url, seed=4)
    assert hello["image_size"] == [32, 32] and hello["session"] in app.state.sessions
    first = a.frame()[0]["index"]
    a.ws.send("{not json")
    assert a.text("error")["field"] == "message"
    a.send(type="pose", c2w=[[float("nan")] * 4] * 4)
    assert "NaN" in a.text("error", field="c2w")["message"]
    a.ws.send(b"\x00\x01garbage")
    assert "binary message" in a.text("error", field="message")["message"]
    a.send(type="settings", steps=9)
    assert a.text("error", field="steps")
    header, payload = a.frame()
    assert header["index"] > first and payload[:2] == b"\xff\xd8"       # still streaming JPEG frames
    assert b.frame()[0]["index"] > 0 and not [t for t in b.texts if t["type"] == "error"]
    a.send(type="ping", t=5)
    assert a.text("pong")["t"] == 5


def test_uploads_are_decoded_with_pyav_and_bad_ones_refused_with_a_message(studio, client_of):
    url, app = studio
    c = client_of(url)
    sid = c.text("hello")["session"]
    status, body = http(f"{url}/upload?session={sid}", b"this is not a video, just text" * 10)
    assert status == 415 and "not a video PyAV can decode" in body["error"]
    status, body = http(f"{url}/upload?session={sid}", b"\0" * (1 << 20) + b"x")
    assert status == 413 and "1 MB cap" in body["error"] and "--max-upload-mb" in body["error"]
    status, body = http(f"{url}/upload?session=nope", b"x")
    assert status == 404 and "not open" in body["error"]
    video = np.random.default_rng(0).integers(0, 255, (6, 48, 64, 3), dtype=np.uint8)
    status, body = http(f"{url}/upload?session={sid}", encode_video_bytes(video, crf=18))
    assert status == 200 and body["kind"] == "upload" and body["frames"] == 6
    c.send(type="play")
    header, _ = c.frame()
    assert header["tiles"] == ["source", "generated"] and header["psnr"] is None
    assert not list(app.state.sessions[sid].workdir.glob("upload-*"))      # the raw upload is not kept


def test_the_webcam_source_takes_image_bytes_and_refuses_others(studio, client_of):
    from PIL import Image

    url, _ = studio
    c = client_of(url)
    c.text("hello")
    c.send(type="source", kind="webcam")
    c.send(type="play")
    buf = io.BytesIO()
    Image.fromarray(np.full((48, 64, 3), 200, np.uint8)).save(buf, format="JPEG")
    c.ws.send(buf.getvalue())
    header, _ = c.frame()
    assert header["tiles"] == ["source", "generated"]
    c.ws.send(b"GIF89 not really")
    assert "not an image" in c.text("error", field="webcam")["message"]
    c.ws.send(buf.getvalue())
    assert c.frame()[0]["index"] == header["index"] + 1


def test_a_closed_tab_frees_its_session(studio, client_of):
    url, app = studio
    c, hello = playing(client_of, url)
    session = app.state.sessions[hello["session"]]
    c.close()
    deadline = time.monotonic() + 30
    while hello["session"] in app.state.sessions or session.gen is not None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert session.gen is None and not session._thread.is_alive() and not session.workdir.exists()


def test_outgoing_queues_stay_bounded(studio, client_of):
    url, app = studio
    c, hello = playing(client_of, url)
    for _ in range(400):                     # floods of replies and frames never queue more than the bounds
        c.ws.send("garbage")
    frames, texts = app.state.sessions[hello["session"]].outbox.sizes()
    assert frames <= 2 and texts <= 256


def test_a_token_is_checked_on_every_connection(client_of, one_thread):
    with serve_in_thread(StudioConfig(host="127.0.0.1", port=0, token="s3cret")) as (url, _):
        for query in ("", "?token=wrong"):
            c = client_of(url, query)
            reply = c.text("error")
            assert reply["field"] == "token" and "token" in reply["message"]
            with pytest.raises(Exception):
                c.frame(timeout=10)             # the server closed the socket
        assert "session" in client_of(url, "?token=s3cret").text("hello")
        assert http(f"{url}/")[0] == 403 and http(f"{url}/health")[0] == 403
        assert http(f"{url}/upload?session=x", b"x")[0] == 403
        assert http(f"{url}/?token=s3cret")[0] == 200
        assert http(f"{url}/health", headers={"X-Realcam-Token": "s3cret"})[0] == 200


def test_binding_beyond_the_loopback_needs_a_token(capsys):
    with pytest.raises(SystemExit) as err:
        realcam_main(["studio", "--host", "0.0.0.0"])
    assert err.value.code == 2 and "--token" in capsys.readouterr().err
    assert realcam_main(["--help"]) == 0 and "studio" in capsys.readouterr().out


def test_the_protocol_example_in_the_docs_runs_against_a_server(studio):
    import re
    from pathlib import Path

    url, _ = studio
    doc = (Path(__file__).resolve().parents[2] / "docs" / "studio.md").read_text()
    code = re.findall(r"```python\n(.*?)```", doc, re.S)[0]
    scope: dict = {}
    exec(code.replace("ws://127.0.0.1:8765", url.replace("http", "ws", 1)), scope)
    assert scope["hello"]["type"] == "hello" and scope["headers"][-1]["target_c2w"][0][3] == 0.1


def test_replay_and_preset_fly_their_poses_one_per_frame(studio, client_of):
    from realcam import geometry
    from realcam.studio.camera import trajectory_json

    url, _ = studio
    c = client_of(url)
    c.text("hello")
    c.send(type="source", kind="synthetic", seed=2)
    c.text("state")
    path = geometry.parse_trajectory_spec("loop:orbit:20", 4).double()
    flown = [geometry.translate(2, [0.05, 0, 0])[-1].double() @ p for p in path]   # first pose is not the identity
    text = trajectory_json(flown, 8.0, geometry.fov_intrinsics(32, 32, 60.0), (32, 32), {})
    c.send(type="replay", trajectory=text)
    c.send(type="step", frames=4)
    got = [torch.tensor(c.frame()[0]["target_c2w"], dtype=torch.float64) for _ in range(4)]
    assert all(torch.allclose(g, p, atol=1e-5) for g, p in zip(got, path))     # relative to its first pose
    c.send(type="replay", trajectory={"format": "realcam-trajectory", "version": 1, "c2w": [[[2.0]]]})
    assert "not a trajectory file" in c.text("error", field="trajectory")["message"]
    c.send(type="preset", spec="pan:right:20", frames=3)
    c.send(type="step", frames=3)
    pan = geometry.parse_trajectory_spec("pan:right:20", 3).double()
    got = [torch.tensor(c.frame()[0]["target_c2w"], dtype=torch.float64) for _ in range(3)]
    assert all(torch.allclose(g, path[-1] @ p, atol=1e-5) for g, p in zip(got, pan))
