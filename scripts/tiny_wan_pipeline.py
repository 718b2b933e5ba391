"""The RealCam recipe on Wan, end to end at tiny-wan size on a CPU: the proof that the real path is wired.

    python scripts/tiny_wan_pipeline.py --workdir runs/tiny_wan [--steps 20] [--out runs/tiny_wan/report.json]

Every stage is the command a GPU cluster runs with the configs/*/wan1.3b*.yaml files, here with only sizes, paths,
the device, the step counts and the learning rates (see TINY_RECIPE) overridden (WORKDIR/overrides/*.yaml, written
by this script):

 1. ``scripts/make_tiny_wan.py``: a random tiny diffusers checkpoint (transformer, VAE, umT5 + tokenizer) that
    stands in for Wan2.1-T2V-1.3B;
 2. ``realcam data make-shards`` (synthetic LoopAug scenes with ground truth, 1 + 4k frames) and
    ``realcam data encode`` (VAE latents + umT5 text, the empty prompt once);
 3. ``realcam fit`` with configs/teacher/wan1.3b.yaml (the teacher from the checkpoint), then ``realcam test``;
 4. ``realcam data make-ode-pairs``, ``realcam fit`` with configs/student/wan1.3b_ode.yaml, then with
    configs/student/wan1.3b_dmd.yaml, each followed by ``realcam test``;
 5. ``realcam export`` of the DMD student, then ``realcam stream`` through the Wan VAE on the ReCamMaster video
    (../shared/fixtures/recammaster/videos/10.mp4, its cam01 trajectory), whose output follows the 1 + 4k rule.

It prints a table (seconds per stage; PSNR against ground truth beside the source-copy PSNR where there is ground
truth) and writes the JSON report. WORKDIR must not exist (``--overwrite`` replaces it). Random weights and a few
steps: the PSNRs show the wiring, not quality. docs/wan.md quotes a run of this script.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
VIDEO = REPO.parent / "shared" / "fixtures" / "recammaster" / "videos" / "10.mp4"
CAMERAS = VIDEO.parents[1] / "camera_extrinsics.json"
SIZE = 32               # frames of SIZE x SIZE: 4 x 4 latents, 2 x 2 tokens with tiny-wan's patch
TRAIN_FRAMES = 21       # 1 + 4 * 5: 6 latent frames, two chunks of wan1.3b's 3 latent frames
STREAM_FRAMES = 81      # the ReCamMaster clip length: 21 latent frames
PROMPT = "a quiet street, a slow camera move"


# Learning rates of a random tiny model, as the tiny configs choose theirs (DESIGN §2: "tiny presets choose their
# own"): the published 1e-5 / 2e-6 / 4e-7 fine-tune a pretrained 1.3B and barely move random weights in 20 steps.
# The EMA tracks the weights until ema_start (200), so evaluation sees the trained weights. The teacher validates
# with 10 Euler steps instead of 50.
TINY_RECIPE = {"teacher": {"lr": 7e-4, "warmup_steps": 0, "sample_steps": 10},
               "ode": {"lr": 2e-4, "warmup_steps": 0},
               "dmd": {"generator_lr": 5e-5, "critic_lr": 2e-4}}


def override(stage: str, steps: int, work: Path, model: Any) -> dict[str, Any]:
    """What the tiny run changes in a wan1.3b config: device, steps, sizes, paths and the learning rates."""
    network = {"pretrained": str(work / "pretrained"), "attention": "math"}
    trainer = {"accelerator": "cpu", "devices": 1, "strategy": "auto", "precision": "32-true",
               "accumulate_grad_batches": 1, "max_steps": steps, "val_check_interval": None,
               "limit_val_batches": 0, "check_val_every_n_epoch": None, "log_every_n_steps": 1,
               "default_root_dir": str(work / "runs" / stage)}
    train = work / "data" / ("ode" if stage == "ode" else "train_latents")
    data = {"train_shards": str(train), "val_shards": str(work / "data" / "val_latents"),
            "test_shards": str(work / "data" / "val_latents"), "num_workers": 0, "image_size": [SIZE, SIZE],
            "length_buckets": [TRAIN_FRAMES], "batch_size": 2}
    codec = {"init_args": {"path": str(work / "pretrained"), "dtype": "float32"}}
    return {"trainer": trainer, "model": {"init_args": {"codec": codec, **TINY_RECIPE[stage], **model(network)}},
            "data": {"init_args": data}}


class Pipeline:
    """Runs the stages as subprocesses (the commands a user types), timing each and keeping the log."""

    def __init__(self, work: Path, steps: int, quiet: bool):
        self.work, self.steps, self.quiet = work, steps, quiet
        self.rows: list[dict[str, Any]] = []
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}

    def run(self, stage: str, args: list[str], **result: Any) -> None:
        print(f"[{len(self.rows) + 1}] {stage}: {' '.join(args)}", flush=True)
        log = self.work / "logs" / f"{len(self.rows) + 1:02d}_{stage.replace(' ', '_')}.log"
        t0 = time.perf_counter()
        with open(log, "w") as out:
            done = subprocess.run([sys.executable, *args], cwd=REPO, env=self.env, stdout=out,
                                  stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - t0
        if done.returncode:
            tail = log.read_text().splitlines()[-25:]
            raise SystemExit(f"stage {stage!r} failed (exit {done.returncode}); log {log}:\n" + "\n".join(tail))
        self.rows.append({"stage": stage, "seconds": round(seconds, 2), **result})

    def realcam(self, stage: str, *args: str, **result: Any) -> None:
        self.run(stage, ["-m", "realcam", *args], **result)

    def config(self, name: str, content: dict[str, Any]) -> Path:
        path = self.work / "overrides" / f"{name}.yaml"
        path.write_text(yaml.safe_dump(content, sort_keys=False))
        return path

    def fit_and_test(self, stage: str, config: str, model: Any) -> Path:
        """``realcam fit`` then ``realcam test`` of its last checkpoint; returns the checkpoint."""
        extra = self.config(stage, override(stage, self.steps, self.work, model))
        self.realcam(f"fit {stage}", "fit", "--config", str(REPO / "configs" / config), "--config", str(extra))
        ckpt = self.work / "runs" / stage / "checkpoints" / "last.ckpt"
        self.realcam(f"test {stage}", "test", "--config", str(REPO / "configs" / config), "--config", str(extra),
                     "--ckpt_path", str(ckpt))
        self.rows[-2].update(loss_drop(self.work / "runs" / stage))
        self.rows[-1].update(test_metrics(self.work / "runs" / stage))
        return ckpt


def test_metrics(run: Path) -> dict[str, Any]:
    """PSNR against ground truth and the source-copy PSNR from a run's ``realcam test`` report."""
    path = run / "test" / "last" / "test_report.json"
    if not path.is_file():
        raise SystemExit(f"`realcam test` wrote no {path}")
    metrics = json.loads(path.read_text())["metrics"]
    return {"psnr": round(float(metrics["psnr"]), 2),
            "source_copy_psnr": round(float(metrics["baseline/source_copy/psnr"]), 2), "report": str(path)}


def loss_drop(run: Path) -> dict[str, Any]:
    """The training loss over the first and the last 5 logged steps (CSV logger): the run learned something."""
    import csv

    newest = max((run / "csv").glob("*/metrics.csv"), key=lambda p: p.stat().st_mtime)     # the fit's CSV log
    rows = list(csv.DictReader(open(newest)))
    name = next(k for k in ("train/loss", "train/dmd_loss") if any(r.get(k) for r in rows))
    values = [float(r[name]) for r in rows if r.get(name)]
    return {"loss": name, "loss_first5": round(sum(values[:5]) / len(values[:5]), 4),
            "loss_last5": round(sum(values[-5:]) / len(values[-5:]), 4)}


def vae_ceiling(work: Path) -> dict[str, Any]:
    """PSNR of the random VAE's own encode -> decode of the validation targets: what any model's output can reach
    through this codec (a random VAE reconstructs nothing, so the PSNRs above measure the wiring, not quality)."""
    import torch

    from realcam.data.encode import frames_to_video
    from realcam.data.shards import decode_sample, iter_shard
    from realcam.metrics import frame_psnr
    from realcam.modules.wan_vae import WanCodec

    codec = WanCodec(str(work / "pretrained"))
    values = []
    with torch.no_grad():
        for shard in sorted((work / "data" / "val").glob("val-*.tar")):
            for key, entries in iter_shard(shard):
                video = frames_to_video(decode_sample(entries, key).target_frames)
                back = codec.decode(codec.encode(video)).clamp(-1, 1)
                values.append(float(frame_psnr((back[0] + 1) / 2, (video[0] + 1) / 2).mean()))
    return {"vae_roundtrip_psnr": round(sum(values) / len(values), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="a new folder for every output")
    parser.add_argument("--steps", type=int, default=20, help="training steps of each system (default 20)")
    parser.add_argument("--train-sequences", type=int, default=16)
    parser.add_argument("--out", type=Path, help="JSON report (default WORKDIR/report.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing WORKDIR")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    work = args.workdir.resolve()
    if not VIDEO.is_file():
        parser.error(f"{VIDEO} is missing: the stream stage needs the ReCamMaster fixture (../shared/fixtures)")
    if work.exists():
        if not args.overwrite:
            parser.error(f"--workdir {work} exists: choose a new folder or pass --overwrite")
        shutil.rmtree(work)
    for sub in ("logs", "overrides", "data", "runs"):
        (work / sub).mkdir(parents=True)
    out = (args.out or work / "report.json").resolve()
    p = Pipeline(work, args.steps, args.quiet)
    t_start = time.perf_counter()

    p.run("make tiny Wan checkpoint", [str(REPO / "scripts" / "make_tiny_wan.py"), str(work / "pretrained")])
    data = work / "data"
    for split, n in (("train", args.train_sequences), ("val", 4)):
        p.realcam(f"make-shards {split}", "data", "make-shards", "--source", "synthetic", "--loopaug", "pingpong,none",
                  "--num-sequences", str(n), "--length", str(TRAIN_FRAMES), "--height", str(SIZE), "--width",
                  str(SIZE), "--split", split, "--seed", "0", "--out", str(data / split), "--quiet")
        p.realcam(f"encode {split}", "data", "encode", str(data / split), "--split", split, "--out",
                  str(data / f"{split}_latents"), "--vae", str(work / "pretrained"), "--text-encoder",
                  str(work / "pretrained"), "--prompt", PROMPT, "--quiet")

    def denoiser(network: dict) -> dict:
        return {"denoiser": {"init_args": network}}

    teacher = p.fit_and_test("teacher", "teacher/wan1.3b.yaml", denoiser)
    p.realcam("make-ode-pairs", "data", "make-ode-pairs", "--teacher", str(teacher), "--shards", str(data / "train_latents"), "--out", str(data / "ode"), "--steps", "8",
              "--precision", "fp32", "--quiet")

    def student(init: Path, **more: dict) -> Any:
        def build(network: dict) -> dict:
            return {"generator": {"init_args": network}, "generator_init": str(init), **more}
        return build

    ode = p.fit_and_test("ode", "student/wan1.3b_ode.yaml", student(teacher))
    dmd = p.fit_and_test("dmd", "student/wan1.3b_dmd.yaml",
                         student(ode, real_score={"init_args": {"pretrained": str(work / "pretrained"),
                                                               "attention": "math"}},
                                 real_score_init=str(teacher)))
    bundle = work / "bundle"
    p.realcam("export", "export", "--ckpt", str(dmd), "--out", str(bundle), "--text",
              str(data / "train_latents" / "text_empty.npy"))
    stream = work / "stream" / "10.mp4"
    stream.parent.mkdir()
    p.realcam("stream 10.mp4", "stream", "--bundle", str(bundle), "--video", str(VIDEO), "--trajectory",
              str(CAMERAS), "--camera", "cam01", "--frames", str(STREAM_FRAMES), "--stride", "1", "--out", str(stream), "--quiet")
    report = json.loads(stream.with_suffix(".json").read_text())
    p.rows[-1].update(frames_in=STREAM_FRAMES, frames_out=report["stats"]["frames"])
    total = time.perf_counter() - t_start
    next(row for row in p.rows if row["stage"] == "encode val").update(vae_ceiling(work))

    print(f"\n{'stage':<28}{'seconds':>9}  result")
    for row in p.rows:
        result = {k: v for k, v in row.items() if k not in ("stage", "seconds", "report")}
        print(f"{row['stage']:<28}{row['seconds']:>9.1f}  {json.dumps(result) if result else ''}")
    print(f"{'total':<28}{total:>9.1f}")
    summary = {"workdir": str(work), "steps": args.steps, "size": SIZE, "train_frames": TRAIN_FRAMES,
               "total_seconds": round(total, 1), "stages": p.rows}
    out.write_text(json.dumps(summary, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
