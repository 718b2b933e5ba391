"""scripts/gpu_check.sh (``realcam bench gpu``) on a CPU: the same code as on a GPU, at tiny-wan size."""
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from realcam.bench import gpu
from realcam.bench import main as bench_main

REPO = Path(__file__).resolve().parents[1]


def test_the_script_runs_every_item_at_tiny_size_and_writes_the_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--out", "gpu_check.json"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)    # --out relative to the caller
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["profile"] == "tiny" and result["preset"] == "tiny-wan" and result["failed"] == []
    items = result["items"]
    assert list(items) == list(gpu.ITEMS) and all(v["status"] == "ok" for v in items.values())
    for steps in (1, 4):
        s = items[f"stream_{steps}step"]
        assert s["steps"] == steps and s["chunk_latent_frames"] == 3 and s["chunk_video_frames"] == 12
        assert s["warmup_chunks"] == result["sink"] + result["window"] + 1 and s["chunks_timed"] >= 1
        assert s["video_fps"] == pytest.approx(4 * s["latent_fps"]) and s["video_fps"] > 0
    assert items["vae"]["encode_fps"] > 0 and items["vae"]["decode_fps"] > 0 and items["vae"]["size"] == [32, 32]
    for kind in ("teacher", "ode_init", "dmd"):
        t = items[f"train_{kind}"]
        assert t["steps"] == 5 and len(t["step_s"]) == 5 and t["precision"] == "bf16-mixed"
        assert t["latent_shape"] == [3, 16, 4, 4]
        assert t["text_tokens"] >= 1
    assert all(v["peak_gpu_mem_gib"] is None for v in items.values())      # no CUDA here
    assert "| stream_4step | ok |" in run.stdout and "video FPS" in run.stdout


def test_a_failing_item_is_reported_and_the_rest_still_run(tmp_path, monkeypatch, capsys, restore_threads):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(gpu, "vae_fps", broken)
    out = tmp_path / "r.json"
    assert bench_main(["gpu", "--only", "vae", "stream_1step", "--out", str(out)]) == 1
    items = json.loads(out.read_text())["items"]
    assert items["vae"] == {**items["vae"], "status": "failed", "error": "RuntimeError: CUDA out of memory (simulated)"}
    assert items["stream_1step"]["status"] == "ok" and "failed items: vae" in capsys.readouterr().err

    # an item that would not fit the budget is skipped, saying so
    monkeypatch.setitem(gpu.PROFILES, "tiny", replace(gpu.PROFILES["tiny"], item_s=1e6))
    assert bench_main(["gpu", "--only", "stream_4step", "--out", str(out)]) == 0
    skipped = json.loads(out.read_text())["items"]["stream_4step"]
    assert skipped["status"] == "skipped" and "--budget-s" in skipped["reason"]


def test_bad_arguments_name_the_option(tmp_path, capsys):
    assert bench_main(["gpu", "--out", str(tmp_path / "r.txt")]) == 2
    assert "--out" in capsys.readouterr().err
    assert bench_main(["gpu", "--train-steps", "0", "--out", str(tmp_path / "r.json")]) == 2
    assert "--train-steps 0" in capsys.readouterr().err and not (tmp_path / "r.json").exists()
