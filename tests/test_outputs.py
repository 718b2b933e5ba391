"""No command overwrites its own inputs, and every one checks its output paths before the work starts."""
import time

import pytest

from realcam.atomic import check_outputs
from realcam.cli import main as realcam


def test_stream_refuses_a_report_that_would_replace_its_trajectory(tmp_path, capsys, monkeypatch):
    """--out t.mp4 makes the report t.json by default: with --trajectory t.json that is the input."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.json").write_text('{"c2w": [[[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]]}')
    before = (tmp_path / "t.json").read_bytes()
    code = realcam(["stream", "--source", "synthetic:seed=1", "--trajectory", "t.json", "--out", "t.mp4"])
    err = capsys.readouterr().err
    assert code == 2 and "--json" in err and "--trajectory" in err and "Traceback" not in err
    assert (tmp_path / "t.json").read_bytes() == before and not (tmp_path / "t.mp4").exists()


@pytest.mark.parametrize("flag", ["--out", "--side-by-side", "--json"])
def test_stream_refuses_any_output_on_its_source_video(tmp_path, capsys, flag):
    video = tmp_path / "in.mp4"
    video.write_bytes(b"not really a video, and it must survive")
    outs = {"--out": str(tmp_path / "o.mp4"), flag: str(video)}
    code = realcam(["stream", "--video", str(video), *[a for kv in outs.items() for a in kv]])
    assert code == 2 and "--video" in capsys.readouterr().err
    assert video.read_bytes() == b"not really a video, and it must survive"


def test_bench_with_a_folder_as_out_fails_before_any_timing(tmp_path, capsys, monkeypatch):
    from realcam.bench import suite

    monkeypatch.setattr(suite, "main", lambda args: pytest.fail("the suite started timing"))
    (tmp_path / "some_dir").mkdir()
    start = time.perf_counter()
    code = realcam(["bench", "all", "--quick", "--out", str(tmp_path / "some_dir")])
    assert code == 2 and time.perf_counter() - start < 5
    assert ".json" in capsys.readouterr().err


def test_export_refuses_a_bundle_folder_that_holds_its_checkpoint(tmp_path, capsys):
    ckpt = tmp_path / "run" / "last.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"weights")
    code = realcam(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "run"), "--overwrite"])
    assert code == 2 and "--ckpt" in capsys.readouterr().err and ckpt.read_bytes() == b"weights"


def test_data_commands_refuse_outputs_on_their_inputs(tmp_path, capsys):
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "train-000000.tar").write_bytes(b"")
    code = realcam(["data", "make-ode-pairs", "--config", "x.yaml", "--teacher", str(tmp_path / "t.ckpt"),
                    "--shards", str(shards), "--out", str(shards)])
    assert code == 2 and "--shards" in capsys.readouterr().err
    video = tmp_path / "v.mp4"
    video.write_bytes(b"v")
    assert realcam(["data", "bench", "--out", str(video), "--codec-video", str(video)]) == 2
    assert video.read_bytes() == b"v"


def test_check_outputs_rules(tmp_path):
    (tmp_path / "a").mkdir()
    check_outputs({"--out": tmp_path / "new" / "x.json"}, {"--in": tmp_path / "a"}, suffixes={"--out": ".json"})
    with pytest.raises(ValueError, match="same file"):
        check_outputs({"--out": tmp_path / "x.mp4", "--sbs": tmp_path / "./x.mp4"}, {})
    with pytest.raises(ValueError, match="is a folder"):
        check_outputs({"--out": tmp_path / "a"}, {})
    with pytest.raises(ValueError, match="holds the input"):
        check_outputs({"--out": tmp_path}, {"--ckpt": tmp_path / "a" / "c.ckpt"}, folders=("--out",))
