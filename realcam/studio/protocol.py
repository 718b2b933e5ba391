"""The studio's WebSocket protocol: JSON control messages in, binary frames and JSON replies out (docs/studio.md).

Every message the client sends is checked here before anything acts on it; a bad one raises
:class:`ProtocolError` naming the field and the fix, and the server answers ``{"type": "error", ...}`` while the
stream goes on. A binary message from the server is ``[4-byte big-endian n][n bytes of JSON header][payload]``
(an image for ``frame``, an mp4 for ``export``).
"""
from __future__ import annotations

import json
import math
import struct
from typing import Any

import torch

from realcam import geometry
from realcam.studio.camera import KEYS

MAX_TEXT_BYTES = 1 << 20           # a replayed trajectory is the largest control message
IMAGE_FORMATS = {"jpeg": "image/jpeg", "webp": "image/webp"}
SOURCE_KINDS = ("synthetic", "webcam")
MAX_STEPS = 4


class ProtocolError(ValueError):
    """A refused client message: ``field`` names what was wrong, the text says how to fix it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field

    def reply(self) -> dict[str, Any]:
        return {"type": "error", "field": self.field, "message": str(self)}


def _number(msg: dict, key: str, lo: float, hi: float, default: Any = None, integer: bool = False) -> Any:
    value = msg.get(key, default)
    if value is None:
        raise ProtocolError(key, f"{key} is missing: give a number in [{lo}, {hi}]")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProtocolError(key, f"{key}={value!r} is not a finite number: give one in [{lo}, {hi}]")
    if integer and value != int(value):
        raise ProtocolError(key, f"{key}={value!r} is not an integer: give one in [{lo}, {hi}]")
    if not lo <= value <= hi:
        raise ProtocolError(key, f"{key}={value!r} is outside [{lo}, {hi}]")
    return int(value) if integer else float(value)


def _c2w(value: Any, key: str = "c2w") -> torch.Tensor:
    try:
        x = torch.tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ProtocolError(key, f"{key} is not a 4x4 list of numbers (row-major OpenCV camera-to-world)") from None
    if x.shape != (4, 4):
        raise ProtocolError(key, f"{key} has shape {list(x.shape)}: expected 4x4 (row-major OpenCV camera-to-world)")
    if not torch.isfinite(x).all():
        raise ProtocolError(key, f"{key} has NaN or infinite entries: send a finite rigid 4x4 pose")
    try:
        geometry.validate_c2w(x, name=key)
    except ValueError as err:
        raise ProtocolError(key, str(err)) from None
    return x


def _settings(msg: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    known = {"fov_deg", "speed", "steps", "pose_reference", "max_fps", "format", "ground_truth"}
    unknown = set(msg) - known - {"type"}
    if unknown:
        raise ProtocolError(sorted(unknown)[0], f"settings has unknown keys {sorted(unknown)}: known are "
                                                f"{sorted(known)}")
    if "fov_deg" in msg:
        out["fov_deg"] = _number(msg, "fov_deg", 10.0, 150.0)
    if "speed" in msg:
        out["speed"] = _number(msg, "speed", 0.05, 10.0)
    if "steps" in msg:
        out["steps"] = _number(msg, "steps", 1, MAX_STEPS, integer=True)
    if "max_fps" in msg:
        out["max_fps"] = _number(msg, "max_fps", 1.0, 240.0)
    if "pose_reference" in msg:
        if msg["pose_reference"] not in geometry.POSE_REFERENCES:
            raise ProtocolError("pose_reference", f"pose_reference={msg['pose_reference']!r}: choose one of "
                                                  f"{list(geometry.POSE_REFERENCES)}")
        out["pose_reference"] = msg["pose_reference"]
    if "format" in msg:
        if msg["format"] not in IMAGE_FORMATS:
            raise ProtocolError("format", f"format={msg['format']!r}: choose one of {list(IMAGE_FORMATS)}")
        out["format"] = msg["format"]
    if "ground_truth" in msg:
        if not isinstance(msg["ground_truth"], bool):
            raise ProtocolError("ground_truth", "ground_truth must be true or false")
        out["ground_truth"] = msg["ground_truth"]
    return out


def parse_message(text: str | bytes) -> dict[str, Any]:
    """A client's text message -> a checked ``{"type": ..., ...}`` with typed values, or :class:`ProtocolError`."""
    if len(text) > MAX_TEXT_BYTES:
        raise ProtocolError("message", f"message is {len(text)} bytes: control messages are at most {MAX_TEXT_BYTES}")
    try:
        msg = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("message", "message is not JSON: send {\"type\": ..., ...} (docs/studio.md, "
                                       "Protocol)") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError("type", "message has no \"type\": send an object such as {\"type\": \"play\"}")
    kind = msg["type"]
    if kind in ("play", "pause", "restart", "reset_camera", "save_trajectory", "export", "ping"):
        return {"type": kind, "t": msg.get("t")} if kind == "ping" else {"type": kind}
    if kind == "step":
        return {"type": kind, "frames": _number(msg, "frames", 1, 1000, default=1, integer=True)}
    if kind == "source":
        if msg.get("kind") not in SOURCE_KINDS:
            raise ProtocolError("kind", f"source kind={msg.get('kind')!r}: choose one of {list(SOURCE_KINDS)} "
                                        f"(upload a video with POST /upload)")
        return {"type": kind, "kind": msg["kind"], "seed": _number(msg, "seed", 0, 2**31 - 1, 0, integer=True)}
    if kind == "keys":
        down = msg.get("down")
        if not isinstance(down, list) or not all(isinstance(k, str) for k in down):
            raise ProtocolError("down", "keys.down must be a list of key names such as [\"w\", \"arrowleft\"]")
        bad = sorted({k.lower() for k in down} - set(KEYS))
        if bad:
            raise ProtocolError("down", f"keys {bad} are not steering keys: use {sorted(KEYS)}")
        return {"type": kind, "down": sorted({k.lower() for k in down})}
    if kind == "orbit":
        return {"type": kind, "dx": _number(msg, "dx", -1e4, 1e4), "dy": _number(msg, "dy", -1e4, 1e4)}
    if kind == "dolly":
        return {"type": kind, "amount": _number(msg, "amount", -1e4, 1e4)}
    if kind == "pose":
        return {"type": kind, "c2w": _c2w(msg.get("c2w"))}
    if kind == "settings":
        return {"type": kind, **_settings(msg)}
    if kind == "preset":
        spec = msg.get("spec")
        frames = _number(msg, "frames", 2, 1000, default=32, integer=True)
        try:
            path = geometry.parse_trajectory_spec(str(spec), frames)
        except ValueError as err:
            raise ProtocolError("spec", str(err)) from None
        return {"type": kind, "spec": spec, "path": path}
    if kind == "record":
        if not isinstance(msg.get("on"), bool):
            raise ProtocolError("on", "record needs \"on\": true or false")
        return {"type": kind, "on": msg["on"]}
    if kind == "replay":
        data = msg.get("trajectory")
        if not isinstance(data, (dict, str)):
            raise ProtocolError("trajectory", "replay needs \"trajectory\": the JSON of a realcam trajectory file")
        return {"type": kind, "text": data if isinstance(data, str) else json.dumps(data)}
    raise ProtocolError("type", f"unknown message type {kind!r}: see docs/studio.md, Protocol")


def pack(header: dict[str, Any], payload: bytes) -> bytes:
    """A binary server message: 4-byte big-endian header length, the JSON header, the payload."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack(">I", len(head)) + head + payload


def unpack(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The inverse of :func:`pack` (what a client does)."""
    (n,) = struct.unpack(">I", data[:4])
    return json.loads(data[4:4 + n]), data[4 + n:]
