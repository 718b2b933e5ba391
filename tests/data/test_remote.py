"""Shards away from a local folder: served by ``python -m http.server`` on 127.0.0.1 and read through ``pipe:cat``.
``realcam data check``, the DataModule and a 2-step ``realcam fit`` see the same samples as from the folder."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from realcam.cli import main as realcam
from realcam.data.cli import main as data_main
from realcam.data.datamodule import RealcamDataModule, count_samples
from realcam.data.make import make_shards
from realcam.data.check import check_shards

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("remote")
    make_shards(out, 6, lengths=[4], height=16, width=16, samples_per_shard=4, progress=False)
    make_shards(out, 3, lengths=[4], height=16, width=16, samples_per_shard=4, split="val", progress=False)
    return out


@pytest.fixture(scope="module")
def http_base(shard_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(shard_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "http.server did not start"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def urls(kind: str, shard_dir: Path, http_base: str, split: str) -> str:
    names = f"{split}-{{000000..00000{1 if split == 'train' else 0}}}.tar"
    if kind == "folder":
        return str(shard_dir / names)
    if kind == "http":
        return f"{http_base}/{names}"
    return f"pipe:cat {shard_dir}/{names}"


@pytest.mark.parametrize("kind", ["http", "pipe"])
def test_check_and_loaders_match_the_folder(shard_dir, http_base, kind, capsys):
    local = check_shards(shard_dir)
    remote = check_shards(urls(kind, shard_dir, http_base, "train"))
    assert remote["bad"] == [] and remote["samples"] == 6 == local["samples"] - 3
    assert data_main(["check", urls(kind, shard_dir, http_base, "train")]) == 0
    assert "6 valid samples" in capsys.readouterr().out
    train = urls(kind, shard_dir, http_base, "train")
    assert count_samples(RealcamDataModule(train_shards=train).urls["train"]) == 6
    got = {}
    for name in ("folder", kind):
        dm = RealcamDataModule(val_shards=urls(name, shard_dir, http_base, "val"),
                               train_shards=urls(name, shard_dir, http_base, "train"), batch_size=2,
                               num_workers=0, train_batches_per_epoch=4, log_corrupt=False)
        got[name] = [list(dm.val_dataloader()), list(dm.train_dataloader())]
    for batches_a, batches_b in zip(got["folder"], got[kind]):
        assert [b["key"] for b in batches_a] == [b["key"] for b in batches_b] and batches_a
        for a, b in zip(batches_a, batches_b):
            assert all(torch.equal(a[k], b[k]) for k in ("source", "target", "target_c2w", "source_K"))


def test_http_index_gives_num_samples(shard_dir, http_base):
    """With index.json beside the shards the count needs no shard read: a shard the index lists but the server
    lacks still counts (that is how the index is used, not the tars)."""
    assert count_samples([f"{http_base}/train-000000.tar", f"{http_base}/train-000001.tar"]) == 6
    assert count_samples([f"{http_base}/train-000001.tar"]) == 2


def fit_args(train: str, val: str, root: Path) -> list[str]:
    return ["fit", "--config", str(REPO / "configs" / "teacher" / "tiny.yaml"),
            "--trainer.default_root_dir", str(root), "--trainer.logger.class_path",
            "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.init_args.save_dir", str(root),
            "--trainer.enable_progress_bar", "false", "--trainer.precision", "32-true",
            "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0", "--trainer.val_check_interval", "null",
            "--model.init_args.denoiser.init_args.dim", "16", "--model.init_args.denoiser.init_args.depth", "1",
            "--model.init_args.denoiser.init_args.heads", "2", "--model.init_args.denoiser.init_args.ffn_dim", "32",
            "--model.init_args.denoiser.init_args.freq_dim", "16", "--model.init_args.warmup_steps", "1",
            "--data.init_args.train_shards", train, "--data.init_args.val_shards", val,
            "--data.init_args.test_shards", val,
            "--data.init_args.image_size", "[16, 16]", "--data.init_args.length_buckets", "[4]",
            "--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0"]


def test_two_step_fit_from_http_and_pipe_equals_the_folder(shard_dir, http_base, tmp_path):
    weights = {}
    for kind in ("folder", "http", "pipe"):
        realcam(fit_args(urls(kind, shard_dir, http_base, "train"), urls(kind, shard_dir, http_base, "val"),
                         tmp_path / kind))
        ckpt = next((tmp_path / kind).rglob("*.ckpt"))
        weights[kind] = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    for kind in ("http", "pipe"):
        assert weights[kind].keys() == weights["folder"].keys()
        for key, value in weights["folder"].items():
            assert torch.equal(value, weights[kind][key]), (kind, key)
