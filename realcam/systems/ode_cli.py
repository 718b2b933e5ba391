"""``realcam data make-ode-pairs``: load a trained teacher, run its sampler over shards, write ODE pairs.

    realcam data make-ode-pairs --teacher runs/teacher_tiny/checkpoints/last.ckpt \\
        --shards data/tiny/train --out data/tiny_ode --steps 50 --batch-size 8

The teacher is built from the run's config, which its checkpoint carries (``--config``, the training YAML, only
fills what an older or Python-built checkpoint lacks; ``data`` is only read for the default image size), and
loaded with the checkpoint's EMA weights. The schedule defaults to the teacher's shift and the
student list (1000, 750, 500, 250); the student configs must use the same (the reader checks it).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from realcam.atomic import check_outputs
from realcam.device import checked_device
from realcam.modules.flow import FlowSchedule
from realcam.systems.ode_data import STATE_DTYPES, write_ode_pairs


def build_teacher(model: dict[str, Any]):
    """A TeacherModule from a config's ``model`` section (``class_path`` + ``init_args``), as `realcam fit` builds it."""
    from jsonargparse import ArgumentParser

    from realcam.systems.teacher import TeacherModule

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--model", type=TeacherModule)
    return parser.instantiate(parser.parse_object({"model": model})).model


def load_teacher(ckpt: str | Path, config: str | Path | None = None):
    """(TeacherModule with the checkpoint's weights, data init_args dict) of a teacher run. The checkpoint of
    `realcam fit` describes its run (:func:`realcam.run_config.merged_run_config`); ``config``, the training YAML,
    is needed only for what it lacks, and a value contradicting the checkpoint is an error naming the key."""
    from realcam.run_config import load_checkpoint, merged_run_config

    state = load_checkpoint(ckpt)       # read once: the config and the weights come from the same file
    run = merged_run_config(ckpt, config, state)
    if run["model"] is None or not (run["model"].get("init_args") or {}).get("denoiser"):
        raise ValueError(f"--teacher {ckpt} does not record its network (a system built in Python): pass --config, "
                         f"the teacher's training YAML")
    teacher = build_teacher(run["model"])
    if "state_dict" not in state:
        raise ValueError(f"--teacher {ckpt}: no 'state_dict' entry (keys {sorted(state)[:8]}): expected a "
                         f"Lightning checkpoint written by `realcam fit`")
    teacher.load_state_dict(state["state_dict"])
    data = run["data"] or {}
    return teacher, dict(data.get("init_args") or {})


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 1000,750,500,250")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="realcam data make-ode-pairs",
                                description="Teacher ODE trajectories at the student's warped timesteps, written "
                                "as WebDataset shards (realcam/systems/ode_data.py).")
    p.add_argument("--teacher", required=True, help="teacher checkpoint (.ckpt from `realcam fit`)")
    p.add_argument("--config", default=None, help="the teacher's training YAML, only for what the checkpoint lacks "
                   "(a .ckpt of `realcam fit` describes its run); a value contradicting the checkpoint is an error")
    p.add_argument("--shards", required=True, help="LoopSequence shards: a directory, glob or brace pattern")
    p.add_argument("--out", required=True, help="output directory (shards + ode_index.json)")
    p.add_argument("--steps", type=int, default=50, help="teacher Euler steps (the student sigmas are added)")
    p.add_argument("--guidance", type=float, default=1.0, help="u + g (c - u); 1 = no guidance")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-samples", type=int, default=None, help="stop after this many samples (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shift", type=float, default=None, help="schedule shift (default: the teacher's)")
    p.add_argument("--denoising-steps", type=_int_list, default=[1000, 750, 500, 250],
                   help="the student's timesteps, descending (default 1000,750,500,250)")
    p.add_argument("--image-size", type=_int_list, default=None,
                   help="H,W of the frames (default: the config's data.image_size, else the stored size)")
    p.add_argument("--length-buckets", type=_int_list, default=None, help="crop samples to these lengths, e.g. 4")
    p.add_argument("--dtype", choices=sorted(STATE_DTYPES), default="float32", help="storage of states and x0")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                   help="teacher forward under bf16 autocast (default, as in bf16-mixed training) or fp32; the "
                        "Euler accumulation and the stored states are float32 either way")
    p.add_argument("--samples-per-shard", type=int, default=64)
    p.add_argument("--prefix", default="ode")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--overwrite", action="store_true", help="replace existing shards with this prefix")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def make_ode_pairs(args: argparse.Namespace) -> dict[str, Any]:
    from realcam.data.datamodule import RealcamDataModule

    checked_device(args.device, "--device")
    teacher, data_args = load_teacher(args.teacher, args.config)
    teacher = teacher.to(args.device).eval()
    denoiser = teacher.denoiser if args.no_ema else teacher.ema.module
    schedule = FlowSchedule(shift=teacher.hparams.shift if args.shift is None else args.shift,
                            denoising_steps=tuple(args.denoising_steps))
    image_size = args.image_size or data_args.get("image_size")
    if image_size is not None and len(image_size) != 2:
        raise ValueError(f"--image-size {image_size}: expected H,W")
    dm = RealcamDataModule(test_shards=args.shards, batch_size=args.batch_size, num_workers=0,
                           image_size=tuple(image_size) if image_size else None, length_buckets=args.length_buckets,
                           log_corrupt=False)
    batches = ({k: v.to(args.device) if isinstance(v, torch.Tensor) else v for k, v in b.items()}
               for b in dm.test_dataloader())
    if args.precision == "bf16":
        device_type = torch.device(args.device).type
        base = denoiser

        def denoiser(x, sigma, cond):
            with torch.autocast(device_type, dtype=torch.bfloat16):
                return base(x, sigma, cond).float()
    return write_ode_pairs(denoiser, teacher.codec, batches, args.out, schedule=schedule, steps=args.steps,
                           guidance=args.guidance, pose_reference=teacher.hparams.pose_reference, seed=args.seed,
                           num_samples=args.num_samples, dtype=args.dtype, prefix=args.prefix,
                           samples_per_shard=args.samples_per_shard, overwrite=args.overwrite,
                           extra_meta=dict(checkpoint=str(args.teacher), config=None if args.config is None else str(args.config),
                                           use_ema=not args.no_ema, precision=args.precision), progress=not args.quiet,
                           text_dim=teacher.text_dim)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        shards = args.shards if Path(args.shards).exists() else None     # a glob or brace pattern is not a path
        check_outputs({"--out": args.out}, {"--shards": shards, "--teacher": args.teacher, "--config": args.config},
                      folders=("--out",))
        summary = make_ode_pairs(args)
    except (ValueError, FileExistsError, FileNotFoundError, KeyError) as err:
        print(f"realcam data make-ode-pairs: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {summary['num_samples']} ODE pairs ({len(summary['student_sigmas'])} states each, schedule "
          f"shift={summary['schedule']['shift']} steps={summary['schedule']['denoising_steps']}) in "
          f"{summary['num_shards']} shards: {Path(args.out) / summary['pattern']}")
    return 0
