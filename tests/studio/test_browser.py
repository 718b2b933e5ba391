"""The page in a real headless Chromium (Debian's ``chromium``, driven by Playwright): frames arrive, a key press
changes the server-reported pose and the generated frame at the next chunk, drag and wheel steer, a bad upload
is refused in the page, and the webcam path streams Chromium's fake camera. Never skipped: CI installs chromium."""
import json
import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file() or shutil.which("chromium"), (
        f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium; .ci/run does)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                               args=["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])
        yield b
        b.close()


@pytest.fixture
def page(browser, studio):
    url, _ = studio
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    p = context.new_page()
    p.goto(url + "/")
    p.wait_for_function("window.studio.hello !== null", timeout=60_000)
    yield p
    context.close()


def state(page, **want):
    cond = " && ".join(f"window.studio.state.{k} === {json.dumps(v)}" for k, v in want.items())
    page.wait_for_function(f"window.studio.state && {cond}", timeout=60_000)


def steps(page, n):
    """Click "step" n times, one frame each; the headers the page logged (with its own per-tile pixel sums)."""
    got = []
    for _ in range(n):
        have = page.evaluate("window.studio.log.length")
        page.click("#step")
        page.wait_for_function(f"window.studio.log.length > {have}", timeout=60_000)
        got.append(page.evaluate("window.studio.log[window.studio.log.length - 1]"))
    return got


def fresh(page):
    """Paused, at frame 0 of the same stream, nothing logged."""
    page.click("#pause")
    state(page, playing=False)
    page.wait_for_timeout(300)                     # a frame already on the wire
    page.evaluate("window.studio.log = []")
    page.click("#restart")


def test_frames_arrive_and_a_key_press_changes_pose_and_frame_within_two_chunks(page, tmp_path):
    page.click("#src-synthetic")
    page.click("#play")
    page.wait_for_function("window.studio.frames >= 8", timeout=120_000)
    assert page.inner_text("#fps") != "–" and int(page.inner_text("#index")) >= 7
    assert float(page.inner_text("#psnr")) > 15            # the synthetic source has ground truth
    page.screenshot(path=str(tmp_path / "studio.png"))
    assert (tmp_path / "studio.png").stat().st_size > 10_000

    fresh(page)
    plain = steps(page, 4)
    fresh(page)
    before = steps(page, 3)
    page.focus("#frame")
    page.keyboard.press("d")                       # truck right, one step
    after = steps(page, 2)
    assert [h["index"] for h in plain] == [0, 1, 2, 3] and [h["index"] for h in before + after] == [0, 1, 2, 3, 4]
    assert [h["tile_blocks"] for h in before] == [h["tile_blocks"] for h in plain[:3]]     # reproducible stream
    x = [h["target_c2w"][0][3] for h in before + after]
    assert x[:3] == [0, 0, 0] and x[3] == pytest.approx(0.02)   # the pose changed at the very next chunk
    diff = lambda a, b, tile: sum(abs(u - v) for u, v in zip(a["tile_blocks"][tile], b["tile_blocks"][tile])) / 64
    # the page's pixels: the same source tile (JPEG blocks straddling the tiles move it by ~0.003 grey levels),
    # a different generated tile (~0.6 for this 2 cm step); the server's CRCs of the raw tiles say the same
    assert diff(after[0], plain[3], 0) < 0.05 and diff(after[0], plain[3], 1) > 0.25
    assert after[0]["crc32"][0] == plain[3]["crc32"][0] and after[0]["crc32"][1] != plain[3]["crc32"][1]


def test_drag_and_wheel_steer_and_the_top_view_follows(page):
    page.click("#src-synthetic")
    state(page, playing=False)
    steps(page, 1)
    box = page.locator("#frame").bounding_box()
    page.mouse.move(box["x"] + 100, box["y"] + 100)
    page.mouse.down()
    page.mouse.move(box["x"] + 180, box["y"] + 100, steps=4)
    page.mouse.up()
    page.mouse.wheel(0, -300)
    page.wait_for_timeout(300)
    h, = steps(page, 1)
    c2w = h["target_c2w"]
    assert abs(c2w[0][2]) > 0.1 and c2w[2][3] != 0            # turned by the orbit, moved by the wheel
    assert page.evaluate("window.studio.trail.length") >= 2


def test_a_non_video_upload_is_refused_in_the_page(page):
    page.set_input_files("#upload", files=[{"name": "notes.mp4", "mimeType": "video/mp4",
                                            "buffer": b"plain text, not a video" * 20}])
    page.wait_for_function("document.getElementById('message').textContent.includes('upload refused')",
                           timeout=60_000)
    assert "not a video PyAV can decode" in page.inner_text("#message")


def test_the_webcam_streams_chromium_fake_camera(page):
    page.click("#src-webcam")
    page.wait_for_function("window.studio.log.length >= 3", timeout=120_000)
    header = page.evaluate("window.studio.log[window.studio.log.length - 1]")
    assert header["tiles"] == ["source", "generated"] and page.evaluate("window.studio.state.source.kind") == "webcam"
