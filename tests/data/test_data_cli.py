"""`realcam data make-shards | check | bench` end to end on the real synthetic source and LoopAug strategies."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from tartools import rewrite_member

from realcam.cli import main as realcam_main
from realcam.data.cli import main
from realcam.data.datamodule import RealcamDataModule
from realcam.data.shards import read_shard

pytestmark = pytest.mark.timeout(60)

TINY = ["--height", "16", "--width", "16", "--lengths", "4,6", "--samples-per-shard", "4", "--quiet"]


def make(out: Path, *extra: str, n: int = 6) -> int:
    return main(["make-shards", "--source", "synthetic", "--loopaug", "pingpong,orbit_return,none",
                 "--num-sequences", str(n), "--out", str(out), *TINY, *extra])


def test_make_shards_writes_shards_and_index(tmp_path):
    assert make(tmp_path, "--seed", "3") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json", "train-000000.tar", "train-000001.tar"]
    entry = json.loads((tmp_path / "index.json").read_text())["splits"]["train"]
    assert (entry["num_sequences"], entry["num_shards"], entry["seed"]) == (6, 2, 3)
    assert entry["strategy_counts"] == {"pingpong": 2, "orbit_return": 2, "none": 2}
    assert entry["length_counts"] == {"4": 3, "6": 3} and entry["resolutions"] == {"16x16": 6}
    assert entry["pattern"] == "train-{000000..000001}.tar"
    seqs = [seq for s in entry["shards"] for _, seq in read_shard(tmp_path / s["name"])]
    assert [s.strategy for s in seqs] == ["pingpong", "orbit_return", "none"] * 2
    assert [s.num_steps for s in seqs] == [4, 4, 4, 6, 6, 6]
    assert any(s.revisit for s in seqs if s.strategy != "none")
    assert not any(s.revisit for s in seqs if s.strategy == "none")


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert make(tmp_path / name, "--seed", seed) == 0
    sha = {name: [s["sha256"] for s in json.loads((tmp_path / name / "index.json").read_text())
                  ["splits"]["train"]["shards"]] for name in "abc"}
    assert sha["a"] == sha["b"] and sha["a"] != sha["c"]
    assert (tmp_path / "a" / "index.json").read_bytes() == (tmp_path / "b" / "index.json").read_bytes()


def test_held_out_split_has_disjoint_scenes(tmp_path):
    assert make(tmp_path) == 0
    assert make(tmp_path, "--split", "val", n=3) == 0
    index = json.loads((tmp_path / "index.json").read_text())
    assert sorted(index["splits"]) == ["train", "val"]
    scenes = {split: {seq.scene_id for p in sorted(tmp_path.glob(f"{split}-*.tar")) for _, seq in read_shard(p)}
              for split in ("train", "val")}
    assert len(scenes["val"]) == 3 and not scenes["train"] & scenes["val"]


def test_existing_shards_need_overwrite(tmp_path, capsys):
    assert make(tmp_path) == 0
    assert make(tmp_path) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert make(tmp_path, "--overwrite", n=3) == 0
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["train-000000.tar"]


def test_bad_arguments_are_reported(tmp_path, capsys):
    assert main(["make-shards", "--loopaug", "pingpnog", "--num-sequences", "2", "--out", str(tmp_path)]) == 2
    assert "did you mean 'pingpong'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["make-shards", "--num-sequences", "2", "--out", str(tmp_path), "--length", "4", "--lengths", "4,6"])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["make-shards", "--num-sequences", "2", "--out", str(tmp_path), "--frame-format", "mp4",
              "--frame-crf", "60"])
    assert "argument --frame-crf: 60 is above 51" in capsys.readouterr().err


_rewrite = rewrite_member


def test_check_passes_clean_data_and_names_bad_samples(tmp_path, capsys):
    assert make(tmp_path, n=8) == 0
    assert realcam_main(["data", "check", str(tmp_path)]) == 0
    assert "8 valid samples" in capsys.readouterr().out
    _rewrite(tmp_path / "train-000000.tar", "train-00000001.json", b"{broken")
    raw = (tmp_path / "train-000001.tar").read_bytes()
    (tmp_path / "train-000001.tar").write_bytes(raw[: len(raw) // 2 + 700])  # cut inside a member
    assert main(["check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "BAD  train-000000.tar train-00000001: " in out and "json is broken" in out
    assert "BAD  train-000001.tar train-0000000" in out and "unreadable tar" in out
    (tmp_path / "train-000001.tar").write_bytes(raw[: len(raw) // 2])  # cut between members: tar sees no error
    assert main(["check", str(tmp_path)]) == 1
    assert "BAD  train-000001.tar: truncated" in capsys.readouterr().out


def test_check_with_workers_gives_the_same_report(tmp_path):
    """check --workers 2 reads shards in two processes; every problem is reported as one process reports it,
    in the same order: a broken json, a cut shard, a shard edited after writing, a key in two shards."""
    import shutil

    from realcam.data.check import check_shards

    assert make(tmp_path, "--samples-per-shard", "2", n=10) == 0
    _rewrite(tmp_path / "train-000000.tar", "train-00000001.json", b"{broken")
    raw = (tmp_path / "train-000002.tar").read_bytes()
    (tmp_path / "train-000002.tar").write_bytes(raw[: len(raw) // 2 + 700])
    shutil.copy(tmp_path / "train-000003.tar", tmp_path / "extra-000000.tar")      # its keys appear twice
    one, two = check_shards(tmp_path), check_shards(tmp_path, workers=2)
    assert one == two
    reasons = " | ".join(b["reason"] for b in one["bad"])
    assert "json is broken" in reasons and "unreadable tar" in reasons and "sha256 differs" in reasons
    assert "duplicate key (also in extra-000000.tar)" in reasons
    assert main(["check", str(tmp_path), "--workers", "2"]) == 1


def test_shards_feed_the_datamodule(tmp_path):
    assert make(tmp_path, n=6) == 0
    assert make(tmp_path, "--split", "val", n=3) == 0
    dm = RealcamDataModule(train_shards=str(tmp_path / "train-{000000..000001}.tar"),
                           val_shards=str(tmp_path / "val-*.tar"), batch_size=2, num_workers=0,
                           image_size=(12, 12), max_zoom=1.3, length_buckets=[4])
    batch = next(iter(dm.train_dataloader()))
    assert batch["source"].shape == (2, 4, 3, 12, 12) and batch["target_K"].shape == (2, 4, 3, 3)
    assert batch["source"].min() >= -1 and batch["source"].max() <= 1
    assert sorted(k for b in dm.val_dataloader() for k in b["key"]) == [f"val-{i:08d}" for i in range(3)]


def test_bench_prints_both_tables_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--out", str(out), "--height", "16", "--width", "16", "--length", "4",
                 "--num-samples", "4", "--batch-size", "2", "--workers", "0", "--render-repeats", "1"]) == 0
    text = capsys.readouterr().out
    assert "synthetic renderer" in text and "shard loader" in text
    result = json.loads(out.read_text())
    assert result["render"]["clips_per_second"] > 0
    assert {r["frame_format"] for r in result["loader"]} == {"npy", "png", "mp4"}
    assert all(r["samples"] == 4 and r["samples_per_s"] > 0 for r in result["loader"])


def test_workers_write_the_same_shards_and_report_a_failing_sequence(tmp_path):
    """--workers N renders and encodes in N processes; the tars and index.json are byte for byte those of one
    process. A sequence that fails in a worker stops the run with its error and leaves no partial shard."""
    import os

    from realcam.data.make import make_shards
    from realcam.data.synthetic import SyntheticSource
    from realcam.registry import MULTIVIEW_SOURCES

    args = dict(lengths=[4, 6], height=16, width=16, samples_per_shard=3, progress=False, frame_format="mp4")
    make_shards(tmp_path / "one", 7, **args)
    make_shards(tmp_path / "two", 7, workers=2, **args)
    names = sorted(os.listdir(tmp_path / "one"))
    assert names == ["index.json", "train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert names == sorted(os.listdir(tmp_path / "two"))
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name

    @MULTIVIEW_SOURCES.register("test_broken_scene_4", override=True)
    class BrokenScene(SyntheticSource):
        def cameras(self, index: int):
            if index == 4:
                raise RuntimeError("scene 4 cannot be rendered")
            return super().cameras(index)

    with pytest.raises(RuntimeError, match="scene 4 cannot be rendered"):
        make_shards(tmp_path / "broken", 7, workers=2, source="test_broken_scene_4",
                    **{**args, "samples_per_shard": 2})
    assert sorted(os.listdir(tmp_path / "broken")) == ["train-000000.tar", "train-000001.tar"]


def test_ctrl_c_with_workers_keeps_whole_shards_and_stops_every_process(tmp_path):
    """Ctrl-C (SIGINT to the process group) during make-shards --workers 2: exit 130 with a message, the
    finished shards stay, the unfinished one is gone, and no worker outlives the command."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "shards"
    cmd = [sys.executable, "-m", "realcam.cli", "data", "make-shards", "--out", str(out), "--num-sequences", "5000",
           "--length", "4", "--height", "16", "--width", "16", "--samples-per-shard", "8", "--workers", "2", "--quiet"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not (out / "train-000001.tar").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and "interrupted" in err and "--overwrite" in err and "Traceback" not in err
    names = sorted(p.name for p in out.iterdir())
    assert names and all(n.startswith("train-") and n.endswith(".tar") for n in names)   # no temp file, no index
    assert len(list(read_shard(out / names[-1]))) == 8                                    # the last one is whole
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)                                                          # no process left
