"""RealcamDataModule: buckets, intrinsics under resize/crop, exactly-once eval, workers, DDP, corrupt samples."""
from __future__ import annotations

import collections
import json
import socket
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from tartools import rewrite_member
import torch

from realcam.data.datamodule import RealcamDataModule
from realcam.data.stream import CorruptCounter, crop_sequence
from realcam.data.loopaug import LoopSequence
from realcam.data.shards import write_shards

pytestmark = pytest.mark.timeout(60)


def random_sequence(T: int, H: int = 16, W: int = 20, seed: int = 0, revisit: dict | None = None) -> LoopSequence:
    """Random frames; rigid poses (rotations about y, random translations); a revisit copies target frame + pose."""
    g = torch.Generator().manual_seed(seed)
    frames = [torch.randint(0, 256, (T, H, W, 3), generator=g, dtype=torch.uint8) for _ in range(2)]
    angle = torch.rand(2, T, generator=g) * 6.28
    c2w = torch.eye(4).repeat(2, T, 1, 1)
    c2w[..., 0, 0], c2w[..., 0, 2], c2w[..., 2, 0], c2w[..., 2, 2] = angle.cos(), angle.sin(), -angle.sin(), angle.cos()
    c2w[..., :3, 3] = torch.randn(2, T, 3, generator=g)
    K = torch.tensor([[18.0, 0, W / 2], [0, 19.0, H / 2], [0, 0, 1]]).repeat(T, 1, 1)
    revisit = dict(revisit or {})
    for n, m in revisit.items():
        frames[1][n], c2w[1, n] = frames[1][m], c2w[1, m]
    return LoopSequence(frames[0], frames[1], c2w[0], c2w[1], K, K.clone(), revisit=revisit,
                        strategy="pingpong" if revisit else "none", scene_id=f"scene-{seed}", metadata={})


def make_shards(root: Path, prefix: str, lengths: list[int], per_shard: int, offset: int = 0,
                frame_format: str = "npy") -> list[str]:
    seqs = [(f"{prefix}{offset + i:05d}", random_sequence(T, seed=offset + i, revisit={3: 1} if T > 3 else {}))
            for i, T in enumerate(lengths)]
    write_shards(seqs, root, prefix, samples_per_shard=per_shard, frame_format=frame_format)
    return [k for k, _ in seqs]


def keys_of(loader) -> list[str]:
    return [k for batch in loader for k in batch["key"]]


def test_crop_sequence_remaps_revisits():
    seq = random_sequence(7, revisit={4: 2, 5: 1, 6: 3})
    out = crop_sequence(seq, start=2, length=3)  # steps 2, 3, 4
    assert out.num_steps == 3 and out.revisit == {2: 0}  # 4->2 stays, 5->1 and 6->3 leave the window
    assert torch.equal(out.target_frames, seq.target_frames[2:5])
    assert torch.equal(out.source_c2w, seq.source_c2w[2:5])


def test_eval_batch_values_and_intrinsics_follow_resize_and_crop(tmp_path):
    make_shards(tmp_path, "val", [4], 1)
    seq = random_sequence(4, seed=0, revisit={3: 1})
    # no resize: frames map to [-1, 1] exactly and K is untouched
    dm = RealcamDataModule(val_shards=str(tmp_path / "val-000000.tar"), batch_size=1, num_workers=0)
    (batch,) = list(dm.val_dataloader())
    assert batch["source"].shape == (1, 4, 3, 16, 20) and batch["source"].dtype == torch.float32
    want = seq.target_frames.permute(0, 3, 1, 2).float() / 127.5 - 1
    assert torch.equal(batch["target"][0], want) and batch["revisit"].tolist() == [[-1, -1, -1, 1]]
    assert torch.equal(batch["target_K"][0], seq.target_K) and batch["length"] == 4
    # 16x20 -> 8x8: resize by 1/2 to 8x10, centre crop drops 1 column on the left
    dm = RealcamDataModule(val_shards=str(tmp_path / "val-000000.tar"), batch_size=1, num_workers=0,
                           image_size=(8, 8))
    (batch,) = list(dm.val_dataloader())
    assert batch["source"].shape == (1, 4, 3, 8, 8)
    K = batch["source_K"][0, 0]
    assert torch.allclose(K, torch.tensor([[9.0, 0, 10 / 2 - 1], [0, 9.5, 4.0], [0, 0, 1]]))


def test_random_resized_crop_keeps_projection_consistent(tmp_path):
    """A pixel's camera ray must not change under augmentation: project a point with the new K and sample."""
    H, W = 16, 20
    seq = random_sequence(4, H, W, seed=3)
    # a smooth frame (horizontal ramp) so bilinear resampling is exact up to rounding
    ramp = torch.linspace(0, 255, W).round().to(torch.uint8)
    frames = ramp.view(1, 1, W, 1).expand(4, H, W, 3).contiguous()
    seq = LoopSequence(frames, frames, seq.source_c2w, seq.target_c2w, seq.source_K, seq.target_K)
    write_shards([("a00000", seq)], tmp_path, "train")
    dm = RealcamDataModule(train_shards=str(tmp_path / "train-000000.tar"), batch_size=1, num_workers=0,
                           image_size=(8, 8), max_zoom=1.6, train_batches_per_epoch=6, shuffle_buffer=0, seed=5)
    for batch in dm.train_dataloader():
        K = batch["source_K"][0, 0]
        x = batch["source"][0, 0, 0]                 # [8, 8], value varies with the original column only
        u_new = torch.arange(8) + 0.5                # pixel centres in the output
        u_old = (u_new - K[0, 2]) / K[0, 0] * seq.source_K[0, 0, 0] + seq.source_K[0, 0, 2]
        expect = np.interp(u_old.numpy() - 0.5, np.arange(W), ramp.float().numpy()) / 127.5 - 1
        inner = ((u_old > 2) & (u_old < W - 2)).numpy()  # the resize filter is clipped at the image border
        assert inner.sum() >= 4 and np.abs(x.mean(0).numpy() - expect)[inner].max() < 0.02


def test_length_buckets_give_one_T_per_batch(tmp_path):
    make_shards(tmp_path, "train", [4, 5, 6, 8, 4, 6, 7, 8], 2)
    dm = RealcamDataModule(train_shards=str(tmp_path / "train-*.tar"), batch_size=2, num_workers=0,
                           length_buckets=[4, 6], train_batches_per_epoch=6)
    batches = list(dm.train_dataloader())
    assert len(batches) == 6
    for b in batches:
        assert b["source"].shape[1] == b["length"] in (4, 6) and b["revisit"].shape == (2, b["length"])
        assert b["source_c2w"].shape == (2, b["length"], 4, 4)
        assert ((b["revisit"] == -1) | (b["revisit"] < torch.arange(b["length"]))).all()


@pytest.mark.parametrize("lengths,per_shard", [([4, 5, 6, 4, 5, 6, 4], 2), ([4, 6, 4, 4, 6], 5)])
def test_eval_reads_every_sample_exactly_once_with_two_workers(tmp_path, lengths, per_shard):
    # the second case has one shard for two workers: the split falls back to samples
    keys = make_shards(tmp_path, "val", lengths, per_shard)
    dm = RealcamDataModule(val_shards=str(tmp_path / "val-*.tar"), batch_size=2, num_workers=2,
                           loader_timeout=30)
    for _ in range(2):
        got = keys_of(dm.val_dataloader())
        assert sorted(got) == sorted(keys)


def test_train_with_two_workers_has_fixed_length_and_reshuffles(tmp_path):
    keys = make_shards(tmp_path, "train", [4] * 8, 2)
    dm = RealcamDataModule(train_shards=str(tmp_path / "train-*.tar"), batch_size=2, num_workers=2,
                           loader_timeout=30, shuffle_buffer=3)
    loader = dm.train_dataloader()
    assert len(loader) == 4  # 8 samples // batch 2
    epochs = [keys_of(loader) for _ in range(2)]
    assert all(len(e) == 8 and set(e) <= set(keys) for e in epochs)
    assert epochs[0] != epochs[1]


def test_missing_shards_name_the_argument(tmp_path):
    make_shards(tmp_path, "train", [4], 1)
    with pytest.raises(FileNotFoundError, match="val_shards"):
        RealcamDataModule(train_shards=str(tmp_path / "train-000000.tar"), val_shards=str(tmp_path / "nope.tar"))
    dm = RealcamDataModule(train_shards=str(tmp_path / "train-000000.tar"))
    with pytest.raises(ValueError, match="test_shards is not set"):
        dm.test_dataloader()


def plant_corruption(root: Path, frame_format: str = "npy") -> None:
    """val-000000: broken json in its 2nd sample; val-000001: a garbled frame; val-000002: cut in the middle."""
    rewrite = rewrite_member

    rewrite(root / "val-000000.tar", "val00001.json", b'{"length": ')
    rewrite(root / "val-000001.tar", f"val00003.source.{frame_format}", b"\x93NUMPY\x01\x00garbage")
    raw = (root / "val-000002.tar").read_bytes()
    (root / "val-000002.tar").write_bytes(raw[: len(raw) // 2])


@pytest.mark.parametrize("num_workers,frame_format", [(0, "npy"), (2, "npy"), (0, "mp4")])
def test_corrupt_samples_are_skipped_and_counted(tmp_path, num_workers, frame_format):
    keys = make_shards(tmp_path, "val", [4] * 9, 3, frame_format=frame_format)
    plant_corruption(tmp_path, frame_format)
    dm = RealcamDataModule(val_shards=str(tmp_path / "val-*.tar"), batch_size=2, num_workers=num_workers,
                           loader_timeout=30)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = keys_of(dm.val_dataloader())
    # the epoch goes on: every intact sample of the first two shards, plus what precedes the cut in the third
    assert {"val00000", "val00002", "val00004", "val00005"} <= set(got)
    assert not {"val00001", "val00003"} & set(got) and set(got) <= set(keys)
    assert dm.corrupt_count >= 3 and dm.corrupt["val"].value == dm.corrupt_count
    if num_workers == 0:  # worker warnings go to the workers' stderr, not to this process
        text = " ".join(str(w.message) for w in caught)
        assert "val00001" in text and "val00003" in text and "val-000002.tar" in text


def test_counter_survives_pickling_outside_spawn():
    import pickle

    c = CorruptCounter()
    c.add(3)
    c2 = pickle.loads(pickle.dumps(c))
    c2.add()
    assert (c.value, c2.value) == (3, 4)


def test_lightning_fit_logs_corrupt_count(tmp_path):
    import lightning as L

    make_shards(tmp_path, "train", [4] * 4, 2)
    make_shards(tmp_path, "val", [4] * 9, 3)
    plant_corruption(tmp_path)

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def training_step(self, batch, _):
            return ((batch["target"].mean() - self.w) ** 2)

        def validation_step(self, batch, _):
            self.log("val_T", float(batch["length"]), batch_size=len(batch["key"]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = RealcamDataModule(train_shards=str(tmp_path / "train-*.tar"), val_shards=str(tmp_path / "val-*.tar"),
                           batch_size=2, num_workers=0)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Tiny(), datamodule=dm)
    assert trainer.callback_metrics["data/corrupt_samples"].item() >= 3


# -- DDP: two CPU ranks over gloo -----------------------------------------------------------------------------
def _ddp_rank(rank: int, world: int, port: int, root: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        dm = RealcamDataModule(train_shards=f"{root}/train-*.tar", val_shards=f"{root}/val-*.tar", batch_size=2,
                               num_workers=2, loader_timeout=30)
        dm.setup("fit")
        train = keys_of(dm.train_dataloader())
        val = keys_of(dm.val_dataloader())
        gathered: list = [None] * world
        torch.distributed.all_gather_object(gathered, {"train": train, "val": val})
        if rank == 0:
            Path(out).write_text(json.dumps(gathered))
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_two_ranks_see_different_samples(tmp_path):
    import torch.multiprocessing as mp

    train_keys = make_shards(tmp_path, "train", [4] * 8, 2)
    val_keys = make_shards(tmp_path, "val", [4] * 5, 2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ranks.json"
    ctx = mp.start_processes(_ddp_rank, args=(2, port, str(tmp_path), str(out)), nprocs=2, join=False,
                             start_method="fork")
    deadline = time.monotonic() + 50
    try:
        while not ctx.join(timeout=1):
            assert time.monotonic() < deadline, "DDP ranks hung"
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    ranks = json.loads(out.read_text())
    t0, t1 = ranks[0]["train"], ranks[1]["train"]
    assert len(t0) == len(t1) == 4  # same number of steps on both ranks: 8 samples / (2 ranks * batch 2) = 2 batches
    assert not set(t0) & set(t1) and set(t0) | set(t1) <= set(train_keys)
    v0, v1 = ranks[0]["val"], ranks[1]["val"]
    assert sorted(v0 + v1) == sorted(val_keys)  # validation: every sample once over both ranks
    assert collections.Counter(v0 + v1).most_common(1)[0][1] == 1


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resumed_loader_yields_the_rest_of_the_epoch(tmp_path, num_workers):
    """A loader restored from a state taken after 3 of 5 batches yields exactly the other 2, then the same next
    epoch as the uninterrupted loader (the skip is for the resumed epoch only)."""
    make_shards(tmp_path, "train", [4, 5, 4, 6, 4, 4, 5, 4], 2)

    def loader():
        dm = RealcamDataModule(train_shards=str(tmp_path / "train-*.tar"), batch_size=2, num_workers=num_workers,
                               train_batches_per_epoch=5, shuffle_buffer=3, loader_timeout=30, max_zoom=1.5,
                               image_size=(8, 8), log_corrupt=False)
        return dm.train_dataloader()

    straight = loader()
    epochs = [list(straight) for _ in range(2)]
    resumed = loader()
    resumed.load_state_dict({"epoch": 0, "consumed": 3})
    rest, after = list(resumed), list(resumed)
    assert len(epochs[0]) == 5 and len(rest) == 2
    for a, b in zip(epochs[0][3:] + epochs[1], rest + after):
        assert a["key"] == b["key"] and torch.equal(a["source"], b["source"]) and torch.equal(a["source_K"],
                                                                                             b["source_K"])
    assert resumed.state_dict() == {"epoch": 1, "consumed": 0}


@pytest.mark.parametrize("samples, per_shard", [(5, 2), (3, 3)])      # shards >= ranks; fewer shards than ranks
def test_rank_sample_counts_match_what_each_rank_reads(tmp_path, samples, per_shard):
    from realcam.data.datamodule import rank_sample_counts

    make_shards(tmp_path, "val", [4] * samples, per_shard)
    dm = RealcamDataModule(val_shards=f"{tmp_path}/val-*.tar", batch_size=2, num_workers=0)
    urls = dm.urls["val"]
    read = [len([k for batch in dm.make_stream("val", urls, None, r, 2) for k in batch["key"]]) for r in range(2)]
    assert rank_sample_counts(urls, 2, 1) == read and sum(read) == samples


def test_fsdp_refuses_a_rank_without_evaluation_samples(tmp_path):
    """Under FSDP every forward is a collective: a rank without a validation batch would hang the others."""
    from types import SimpleNamespace

    from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy

    make_shards(tmp_path, "val", [4], 1)                  # one sample: one of two ranks gets nothing
    for strategy, fails in ((ModelParallelStrategy(), True), (DDPStrategy(), False)):
        dm = RealcamDataModule(val_shards=f"{tmp_path}/val-*.tar", batch_size=2, num_workers=0)
        dm.trainer = SimpleNamespace(strategy=strategy, global_rank=0, world_size=2, callbacks=[])
        if fails:
            with pytest.raises(ValueError, match=r"val_shards: rank \d of 2 would read no sample .* at least 2 "
                                                 r"shards .*limit_val_batches"):
                dm.val_dataloader()
        else:
            dm.val_dataloader()
