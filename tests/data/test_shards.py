"""Shard format: bit-exact round trip, plain tar + numpy access, determinism, atomic writes, corrupt samples."""
from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from tartools import rewrite_member
import torch

from realcam.data.loopaug import LoopSequence
from realcam.data.shards import (ShardError, ShardWriter, decode_sample, encode_sample, expand_urls, iter_shard,
                                 read_shard, write_shards)
from realcam.data.check import sequence_problems

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(60)


def random_rotation(g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q * torch.sign(torch.linalg.det(q))  # det +1: a proper rotation


def random_sequence(T: int = 6, H: int = 16, W: int = 16, seed: int = 0, revisit: dict | None = None,
                    strategy: str = "pingpong") -> LoopSequence:
    """Random frames, rigid poses; each revisit n -> m copies the target frame and pose of m, as LoopAug does."""
    g = torch.Generator().manual_seed(seed)
    frames = [torch.randint(0, 256, (T, H, W, 3), generator=g, dtype=torch.uint8) for _ in range(2)]
    c2w = torch.eye(4).repeat(2, T, 1, 1)
    for s in range(2):
        for t in range(T):
            c2w[s, t, :3, :3] = random_rotation(g).float()
            c2w[s, t, :3, 3] = torch.randn(3, generator=g)
    K = torch.tensor([[20.0, 0, W / 2], [0, 21.0, H / 2], [0, 0, 1]]).repeat(2, T, 1, 1)
    K[1, :, 0, 0] = 23.0
    revisit = dict(revisit or {})
    for n, m in revisit.items():
        frames[1][n], c2w[1, n] = frames[1][m], c2w[1, m]
    return LoopSequence(frames[0], frames[1], c2w[0], c2w[1], K[0], K[1],
                        revisit=revisit, strategy=strategy, scene_id=f"scene-{seed}",
                        metadata={"times": list(range(T)), "seed": seed})


def assert_same(a: LoopSequence, b: LoopSequence) -> None:
    for name in ("source_frames", "target_frames", "source_c2w", "target_c2w", "source_K", "target_K"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and torch.equal(x, y), name
    assert (a.revisit, a.strategy, a.scene_id, a.metadata) == (b.revisit, b.strategy, b.scene_id, b.metadata)


def sequences(n: int = 5) -> list[tuple[str, LoopSequence]]:
    return [(f"{i:08d}", random_sequence(T=4 + i % 3, seed=i, revisit={3: 1} if i % 2 else {}))
            for i in range(n)]


@pytest.mark.parametrize("frame_format", ["npy", "png", "mp4"])
def test_round_trip_bit_exact(tmp_path, frame_format):
    """npy and png are lossless; mp4 is at crf 0 (libx264rgb, qp 0), even on random-noise frames."""
    seqs = sequences(5)
    shards = write_shards(seqs, tmp_path, "train", samples_per_shard=2, frame_format=frame_format, frame_crf=0)
    assert [s["name"] for s in shards] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert [s["num_samples"] for s in shards] == [2, 2, 1]
    back = [kv for s in shards for kv in read_shard(tmp_path / s["name"])]
    assert [k for k, _ in back] == [k for k, _ in seqs]
    for (_, got), (_, want) in zip(back, seqs):
        assert_same(got, want)
    for s in shards:  # the recorded checksum is of the file on disk
        assert hashlib.sha256((tmp_path / s["name"]).read_bytes()).hexdigest() == s["sha256"]


def smooth_sequence(T: int = 8, H: int = 24, W: int = 32, revisit: dict | None = None) -> LoopSequence:
    """random_sequence with moving gradients for frames (what a video codec is built for)."""
    seq = random_sequence(T=T, H=H, W=W, revisit=revisit)
    t, y, x = torch.meshgrid(torch.arange(T), torch.arange(H), torch.arange(W), indexing="ij")
    for i, frames in enumerate((seq.source_frames, seq.target_frames)):
        frames.copy_(torch.stack([(x * 7 + 9 * t + 40 * i) % 256, y * 10, (x + y) * 4 % 256], -1).to(torch.uint8))
    for n, m in seq.revisit.items():
        seq.target_frames[n] = seq.target_frames[m]
    return seq


def test_lossy_mp4_frames(tmp_path):
    """crf > 0: frames come back close (not equal), everything else exactly; the shard bytes are reproducible;
    check accepts codec-sized revisit differences and still catches a wrong revisit frame."""
    from realcam.data.check import check_shards
    from realcam.data.shards import write_index

    seq = smooth_sequence(revisit={5: 1, 6: 0})
    for i in range(2):
        write_shards([("a", seq)], tmp_path / f"run{i}", frame_format="mp4", frame_crf=10)
    raw = [(tmp_path / f"run{i}" / "train-000000.tar").read_bytes() for i in range(2)]
    assert raw[0] == raw[1]
    (_, back), = read_shard(tmp_path / "run0" / "train-000000.tar")
    for name in ("source_frames", "target_frames"):
        err = (getattr(back, name).float() - getattr(seq, name).float()).abs().mean()
        assert 0 < err < 3, name
    for name in ("source_c2w", "target_c2w", "source_K", "target_K"):
        assert torch.equal(getattr(back, name), getattr(seq, name))
    assert back.revisit == seq.revisit
    with tarfile.open(tmp_path / "run0" / "train-000000.tar") as tar:
        assert json.loads(tar.extractfile("a.json").read())["frame_crf"] == 10
    assert check_shards(tmp_path / "run0")["bad"] == []
    wrong = smooth_sequence(revisit={5: 1, 6: 0})
    wrong.target_frames[6] = wrong.target_frames[3]                  # a revisit that does not show frame 0
    write_shards([("b", wrong)], tmp_path / "wrong", frame_format="mp4", frame_crf=10)
    bad = check_shards(tmp_path / "wrong")["bad"]
    assert len(bad) == 1 and "revisit 6->0" in bad[0]["reason"] and "--lossy-frame-tol" in bad[0]["reason"]
    with pytest.raises(ValueError, match="frame_crf=52"):
        write_shards([("c", seq)], tmp_path / "x", frame_format="mp4", frame_crf=52)


@pytest.mark.parametrize("data,match", [(b"garbage", "source.mp4 is not a decodable video"),
                                        ("other", "source.mp4 decodes to 4 frames of 24x32: expected 8")])
def test_corrupt_mp4_member_is_named(tmp_path, data, match):
    from realcam.data.video import encode_video_bytes

    write_shards([("a", smooth_sequence()), ("b", smooth_sequence())], tmp_path, frame_format="mp4")
    if data == "other":
        data = encode_video_bytes(smooth_sequence(T=4).source_frames)
    rewrite_member(tmp_path / "train-000000.tar", "b.source.mp4", data)
    with pytest.raises(ShardError, match=match) as err:
        list(read_shard(tmp_path / "train-000000.tar"))
    assert err.value.key == "b"


def test_plain_tar_and_numpy_as_documented(tmp_path):
    key, seq = sequences(2)[1]
    write_shards([(key, seq)], tmp_path)
    # The docs/data.md recipe: members are KEY.FIELD.EXT; .npy members load with np.load.
    with tarfile.open(tmp_path / "train-000000.tar") as tar:
        names = tar.getnames()
        get = lambda suffix: tar.extractfile(f"{key}.{suffix}").read()  # noqa: E731
        meta = json.loads(get("json"))
        source = np.load(io.BytesIO(get("source.npy")))
        target_c2w = np.load(io.BytesIO(get("target_c2w.npy")))
        revisit = np.load(io.BytesIO(get("revisit.npy")))
    assert all(n.startswith(key + ".") and "." not in key for n in names)
    assert (meta["length"], meta["height"], meta["width"]) == (seq.num_steps, *seq.image_size)
    assert source.dtype == np.uint8 and np.array_equal(source, seq.source_frames.numpy())
    assert np.array_equal(target_c2w, seq.target_c2w.numpy())
    assert revisit.tolist() == [-1, -1, -1, 1, -1]


def test_webdataset_reads_the_shards(tmp_path):
    import webdataset as wds

    seqs = sequences(3)
    write_shards(seqs, tmp_path, samples_per_shard=2)
    ds = wds.WebDataset(str(tmp_path / "train-{000000..000001}.tar"), shardshuffle=False, empty_check=False)
    samples = list(ds)
    assert [s["__key__"] for s in samples] == [k for k, _ in seqs]
    for s, (key, seq) in zip(samples, seqs):
        entries = {k: v for k, v in s.items() if not k.startswith("__")}
        assert set(entries) == {"json", "source.npy", "target.npy", "source_c2w.npy", "target_c2w.npy",
                                "source_k.npy", "target_k.npy", "revisit.npy"}
        assert_same(decode_sample(entries, key), seq)


def test_same_input_gives_byte_identical_shards(tmp_path):
    a = write_shards(sequences(3), tmp_path / "a", samples_per_shard=2)
    b = write_shards(sequences(3), tmp_path / "b", samples_per_shard=2)
    assert [s["sha256"] for s in a] == [s["sha256"] for s in b]


def test_bad_keys_and_prefixes_are_refused(tmp_path):
    seq = random_sequence()
    for key in ("a.b", "x/y", "__key__", ""):
        with pytest.raises(ValueError, match="no dots"):
            encode_sample(seq, key)
    with pytest.raises(ValueError, match="shard prefix"):
        ShardWriter(tmp_path, prefix="train.v1")


def test_interrupt_while_a_shard_opens_leaves_no_temp_file(tmp_path, monkeypatch):
    """Ctrl-C can land after the temp file exists but before the writer has its tar object (caught by the
    make-shards Ctrl-C test about once in 40 runs): abort still removes it."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tarfile, "open", interrupted)
    with pytest.raises(KeyboardInterrupt):
        with ShardWriter(tmp_path, samples_per_shard=2) as writer:
            writer.write(*sequences(1)[0])
    assert os.listdir(tmp_path) == []


def test_exception_inside_writer_leaves_no_partial_tar(tmp_path):
    seqs = sequences(3)
    with pytest.raises(RuntimeError, match="boom"):
        with ShardWriter(tmp_path, samples_per_shard=2) as writer:
            for key, seq in seqs:
                writer.write(key, seq)
            raise RuntimeError("boom")
    # shard 0 (2 samples) was complete and renamed; shard 1 held 1 sample and is gone, temp file included
    assert sorted(os.listdir(tmp_path)) == ["train-000000.tar"]
    assert [k for k, _ in read_shard(tmp_path / "train-000000.tar")] == ["00000000", "00000001"]


def test_killed_writer_leaves_no_complete_looking_tar(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_shards import sequences
        from realcam.data.shards import ShardWriter
        writer = ShardWriter({str(tmp_path)!r}, samples_per_shard=2)
        for key, seq in sequences(3):
            writer.write(key, seq)
        print("mid-shard", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "mid-shard"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    names = sorted(os.listdir(tmp_path))
    assert names == [".train-000001.tar.tmp", "train-000000.tar"]
    # no reader pattern picks the temp file up, and what is matched is whole
    assert glob.glob(str(tmp_path / "train-*.tar")) == [str(tmp_path / "train-000000.tar")]
    assert expand_urls(str(tmp_path / "train-*.tar"), "train_shards") == [str(tmp_path / "train-000000.tar")]
    assert len(list(read_shard(tmp_path / "train-000000.tar"))) == 2


_rewrite_member = rewrite_member


@pytest.mark.parametrize("member,data,match", [
    ("00000001.json", b"{not json", "json is broken"),
    ("00000001.source.npy", b"\x93NUMPY garbage", "source.npy is not a readable"),
    ("00000001.target_c2w.npy", None, "target_c2w"),
])
def test_corrupt_sample_is_named(tmp_path, member, data, match):
    write_shards(sequences(3), tmp_path)
    if data is None:  # a well-formed array that is not a rigid transform
        bad = np.tile(np.eye(4, dtype=np.float32), (5, 1, 1))
        bad[2, 0, 0] = -1.0
        buf = io.BytesIO()
        np.save(buf, bad)
        data = buf.getvalue()
    _rewrite_member(tmp_path / "train-000000.tar", member, data)
    got = []
    with pytest.raises(ShardError, match=match) as err:
        for key, _ in read_shard(tmp_path / "train-000000.tar"):
            got.append(key)
    assert got == ["00000000"] and err.value.key == "00000001"


def test_truncated_shard_raises_with_shard_and_key(tmp_path):
    write_shards(sequences(4), tmp_path)
    path = tmp_path / "train-000000.tar"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2 + 100])
    keys = []
    with pytest.raises(ShardError) as err:
        for key, _ in iter_shard(path):
            keys.append(key)
    assert err.value.shard == str(path) and err.value.key is not None
    assert "unreadable tar" in str(err.value) and keys == [f"{i:08d}" for i in range(len(keys))]


def test_shard_cut_between_members_is_still_caught(tmp_path):
    write_shards(sequences(4), tmp_path)
    path = tmp_path / "train-000000.tar"
    with tarfile.open(path) as tar:
        end_of_sample_1 = next(m for m in tar.getmembers() if m.name == "00000002.json").offset
    path.write_bytes(path.read_bytes()[:end_of_sample_1])  # plain tarfile reads this without complaint
    keys = []
    with pytest.raises(ShardError, match="no end-of-archive marker after sample '00000001'"):
        for key, _ in read_shard(path):
            keys.append(key)
    assert keys == ["00000000", "00000001"]


def test_sequence_problems_flags_inconsistent_revisit():
    seq = random_sequence(T=5, revisit={4: 2})
    assert sequence_problems(seq) == []
    seq.target_c2w[4, :3, 3] += 0.5
    seq.target_frames[4] = 255 - seq.target_frames[4]
    problems = sequence_problems(seq)
    assert any("target_c2w differs" in p for p in problems) and any("frames differ" in p for p in problems)


def test_expand_urls_braces_and_missing_paths(tmp_path):
    write_shards(sequences(3), tmp_path, samples_per_shard=1)
    assert len(expand_urls(str(tmp_path / "train-{000000..000002}.tar"), "train_shards")) == 3
    with pytest.raises(FileNotFoundError, match="val_shards: shard .*train-000003.tar"):
        expand_urls([str(tmp_path / "train-{000000..000003}.tar")], "val_shards")


def test_expand_urls_accepts_a_directory(tmp_path):
    from realcam.data.shards import expand_urls

    (tmp_path / "train-000001.tar").write_bytes(b"")
    (tmp_path / "train-000000.tar").write_bytes(b"")
    (tmp_path / ".train-000002.tar.tmp").write_bytes(b"")     # an interrupted write: never picked up
    assert [p.rsplit("/", 1)[1] for p in expand_urls(str(tmp_path), "train_shards")] == \
        ["train-000000.tar", "train-000001.tar"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="val_shards: directory .* holds no .tar shards"):
        expand_urls(str(empty), "val_shards")
