"""A tiny shard set shared by the system tests: 16x16 synthetic LoopAug sequences."""
from pathlib import Path

import pytest
import torch

from realcam.data.shards import write_shards
from realcam.registry import LOOPAUG_STRATEGIES, MULTIVIEW_SOURCES


def make_shards(out: Path, split: str, count: int, length: int = 4, size: int = 16,
                frame_format: str = "npy") -> Path:
    source = MULTIVIEW_SOURCES.build("synthetic", num_frames=length, height=size, width=size, split=split)
    strategies = [LOOPAUG_STRATEGIES.build(name, length=length) for name in ("pingpong", "none")]
    seqs = ((f"{split}{i:04d}", strategies[i % 2](source, i, torch.Generator().manual_seed(i))) for i in range(count))
    write_shards(seqs, out, prefix=split, samples_per_shard=8, frame_format=frame_format)
    return out


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    make_shards(out, "train", 8)
    make_shards(out, "val", 4)
    return out


# `realcam fit` overrides for the kill-and-resume tests: no validation, 2 batches per epoch, a checkpoint every 2 steps
RESUME_ARGS = ["--trainer.val_check_interval", "null", "--trainer.limit_val_batches", "0",
               "--data.init_args.train_batches_per_epoch", "2",
               "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
               "--trainer.callbacks.save_last", "true", "--trainer.callbacks.every_n_train_steps", "2",
               "--trainer.callbacks.save_top_k", "-1"]


@pytest.fixture(scope="session")
def tiny_wan_dir(tmp_path_factory) -> Path:
    """A whole random tiny diffusers-layout Wan checkpoint (transformer/, vae/, text_encoder/, tokenizer/; text width
    32) from :func:`realcam.tiny_wan.make_tiny_wan`: what ``PretrainedWan(pretrained=...)``, ``WanCodec(path=...)``
    and ``realcam data encode --vae/--text-encoder`` read in place of Wan2.1-T2V-1.3B."""
    from realcam.tiny_wan import make_tiny_wan

    return make_tiny_wan(tmp_path_factory.mktemp("tiny_wan") / "model", seed=0)
