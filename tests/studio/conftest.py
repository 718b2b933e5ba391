"""A studio server on a background thread (127.0.0.1, a free port) and a small WebSocket client for the tests."""
import json
import time

import pytest
import torch

from realcam.studio.protocol import unpack
from realcam.studio.server import StudioConfig, serve_in_thread


@pytest.fixture(scope="module")
def studio():
    """(base URL, app) of a studio with a 1 MB upload cap and no frame-rate cap."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with serve_in_thread(StudioConfig(port=0, max_fps=240, max_upload_mb=1)) as served:
        yield served
    torch.set_num_threads(threads)


class Client:
    """One tab: send control messages, read frames and replies (texts are kept in ``self.texts``)."""

    def __init__(self, url: str, query: str = ""):
        from websockets.sync.client import connect

        self.ws = connect(url.replace("http", "ws", 1) + "/ws" + query, max_size=1 << 22).__enter__()
        self.texts: list[dict] = []

    def send(self, **msg) -> None:
        self.ws.send(json.dumps(msg))

    def _next(self, timeout: float):
        message = self.ws.recv(timeout=timeout)
        if isinstance(message, bytes):
            return unpack(message)
        self.texts.append(json.loads(message))
        return None

    def frame(self, timeout: float = 60.0) -> tuple[dict, bytes]:
        deadline = time.monotonic() + timeout
        while True:
            got = self._next(max(0.01, deadline - time.monotonic()))
            if got is not None and got[0]["type"] == "frame":
                return got

    def text(self, kind: str, timeout: float = 60.0, **match) -> dict:
        """The next reply of ``kind`` (frames in between are skipped)."""
        for m in self.texts:
            if m["type"] == kind and all(m.get(k) == v for k, v in match.items()):
                self.texts.remove(m)
                return m
        deadline = time.monotonic() + timeout
        while True:
            got = self._next(max(0.01, deadline - time.monotonic()))
            if got is None and self.texts[-1]["type"] == kind and all(self.texts[-1].get(k) == v
                                                                     for k, v in match.items()):
                return self.texts.pop()
            if got is not None and got[0]["type"] == kind:       # a binary reply: an export
                return {**got[0], "payload": got[1]}

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@pytest.fixture
def client_of():
    """Open clients with ``client_of(url, query)``; all closed after the test."""
    opened = []

    def make(url: str, query: str = "") -> Client:
        opened.append(Client(url, query))
        return opened[-1]

    yield make
    for c in opened:
        c.close()
