"""``realcam studio bench`` and ``realcam studio load`` run end to end (short durations) and write their JSON."""
import json

from realcam.cli import main as realcam_main


def test_load_reports_every_session_and_the_server_rss(tmp_path, capsys):
    out = tmp_path / "load.json"
    code = realcam_main(["studio", "load", "--sessions", "2", "--seconds", "3", "--warmup", "2", "--out", str(out),
                         "--rss-tolerance", "1.0"])
    result = json.loads(out.read_text())
    assert code == 0 and result["ok"] and result["server_alive"] and len(result["sessions"]) == 2
    for s in result["sessions"]:
        assert s["frames"] > 0 and s["fps"] > 0 and s["latency_ms"]["p50"] > 0 and not s["errors"]
    assert result["rss_after_warmup_mb"] > 50 and len(result["rss_mb"]) >= 4
    assert "server RSS after warm-up" in capsys.readouterr().out


def test_bench_counts_frames_received_in_chromium(tmp_path, capsys):
    out, shot = tmp_path / "bench.json", tmp_path / "page.png"
    code = realcam_main(["studio", "bench", "--seconds", "2", "--warmup", "1", "--rounds", "2", "--out", str(out),
                         "--screenshot", str(shot)])
    result = json.loads(out.read_text())
    assert code == 0 and result["frames"] > 0 and result["fps"] > 0 and not result["errors"]
    assert result["bare_fps"] > 0 and len(result["fps_per_round"]) == len(result["bare_fps_per_round"]) == 2
    assert result["latency_ms"]["p50"] > 0 and shot.stat().st_size > 10_000
    assert "FPS (browser)" in capsys.readouterr().out
