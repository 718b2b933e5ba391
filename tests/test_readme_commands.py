"""The README's first commands, run as written with the bundled tiny student, beat copying the source: a
camera-control model has to be at least as good as doing nothing (issue 21; docs/results.md, "Quality against
the view change"). One seed each, the README's own; a few seconds per command."""
import json
from pathlib import Path

import pytest

from realcam.cli import main

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("restore_threads")     # the commands set torch's thread count


@pytest.mark.parametrize("trajectory", ["loop:orbit:20", "arc:left:30"])
def test_readme_stream_commands_beat_source_copy(trajectory, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "out.mp4"
    assert main(["stream", "--source", "synthetic:seed=3", "--trajectory", trajectory, "--out", str(out),
                 "--quiet"]) == 0
    m = json.loads(out.with_suffix(".json").read_text())["metrics"]
    assert m["psnr"][0] == 100.0                   # frame 0 is the identity pose: the source itself, exactly
    assert m["psnr_mean"] > m["source_copy_psnr_mean"], m


def test_readme_demo_beats_source_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["demo", "--out", str(tmp_path), "--quiet"]) == 0
    m = json.loads((tmp_path / "demo.json").read_text())["metrics"]
    assert m["psnr_mean"] > m["source_copy_psnr_mean"], m
