"""``realcam bench`` (``all``): the streaming student against its 50-step teachers, measured in one run.

Sections (``--only`` picks some; every one lands in the same JSON):
  stream     streaming FPS and per-frame latency, bf16 and fp32: end to end (uint8 frame in, encode, the denoising
             passes and the cache pass, decode; ``StreamingGenerator.push``) and transformer only (the same passes
             through ``rollout_chunk``, the cache pass fused into the next chunk's first pass unless ``--no-fuse``)
  steps      end-to-end FPS at several denoising-step counts (``--compare-steps``, default 4,2,1) side by side
Every student timing uses ``--steps`` (default: the list the student was distilled with, 4 steps).
  constant   per-frame latency at frame 32 against frame 2048, the two streams timed in alternation
  video      seconds per generated video of T = 16, 32, 64 frames: 50-step teacher (interleaved and prefix layout)
             against the streaming student, as ratios
  ttff       time to the first target frame: streaming against the teachers, which need the whole source first
  backends   attention backends side by side (student chunk, teacher forward)
  flops      achieved FLOP/s of the student's forward as a fraction of this machine's bf16 matmul peak (same run)
  wan        transformer-only FPS of the wan1.3b preset at 480x832 (60x104 latents, 3 frames per chunk) with
             random weights on a GPU (``realcam bench transformer``); recorded as skipped on a CPU
Weights are random unless ``--student`` gives a bundle or checkpoint: speed depends on shapes, not values.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from realcam import geometry
from realcam.device import checked_device
from realcam.bench._common import (DEFAULT_OUT, autocast, build_student, build_teacher, machine_info, matmul_peak,
                                   median_ms, quantile_ms, random_cond, sync, timed, write_json)
from realcam.modules.codecs import PixelCodec
from realcam.modules.cond import Cond
from realcam.modules.flow import FlowSchedule
from realcam.modules.samplers import euler_sample
from realcam.registry import ATTENTION_BACKENDS
from realcam.rollout import rollout_chunk, supports_fused_cache_pass

SECTIONS = ("stream", "steps", "constant", "video", "ttff", "backends", "flops", "wan")
RECIPE_STEPS = (1000, 750, 500, 250)
TEACHER_STEPS = 50
SHIFT = 3.0


# ---- setup ---------------------------------------------------------------------------------------------
class Setup:
    """The models and inputs every section shares (one student, the teachers built on first use)."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.device = args, args.device
        self.student = build_student(args.preset, args.sink, args.window, args.attention, args.student,
                                     device=args.device)
        self.codec = PixelCodec(factor=2).to(args.device)
        self.image_size = tuple(args.image_size)
        self.fps = args.source_fps
        self.trained_steps = trained_steps(args.student)
        self.fuse = bool(args.fuse) and supports_fused_cache_pass(self.student)
        self.denoising_steps = resolve_steps(args.steps, self.trained_steps)
        self.schedule = FlowSchedule(shift=SHIFT, denoising_steps=self.denoising_steps)
        H, W = self.image_size
        g = torch.Generator().manual_seed(0)
        self.frames = torch.randint(0, 256, (16, H, W, 3), dtype=torch.uint8, generator=g).numpy()
        self.poses = geometry.parse_trajectory_spec("arc:left:30", 64)
        self._teachers: dict[str, torch.nn.Module] = {}

    def teacher(self, layout: str) -> torch.nn.Module:
        if layout not in self._teachers:
            # the teachers carry the student's source reprojection too, so both sides pay for it
            reproject = getattr(self.student, "reproject", None)
            extra = {} if reproject is None else {
                "reproject_depths": reproject.depths.tolist(), "reproject_space_to_depth": reproject.factor,
                "reproject_blend": getattr(self.student, "blend_head", None) is not None}
            self._teachers[layout] = build_teacher(self.args.preset, layout, self.args.attention,
                                                   model_args=extra, device=self.device)
        return self._teachers[layout]

    def stream(self, dtype: str, steps: Sequence[int] | None = None):
        from realcam.streaming import StreamingGenerator

        return StreamingGenerator(self.student, self.codec, image_size=self.image_size, shift=SHIFT,
                                  denoising_steps=tuple(steps or self.denoising_steps), dtype=dtype,
                                  device=self.device, fps=self.fps, seed=0, fuse_cache_pass=self.fuse)

    def passes_for(self, steps: int) -> int:
        """Transformer passes per chunk at ``steps`` denoising steps: plus the clean cache pass, unless it runs
        inside the next chunk's first pass (``fuse``)."""
        return steps + (0 if self.fuse else 1)

    @property
    def passes(self) -> int:
        return self.passes_for(len(self.denoising_steps))

    def passes_text(self) -> str:
        n = len(self.denoising_steps)
        return (f"{n} denoising pass{'es' if n > 1 else ''}, the previous chunk's cache pass fused into the first"
                if self.fuse else f"{n} denoising pass{'es' if n > 1 else ''} + the cache pass")

    def push(self, gen, i: int) -> float:
        """Seconds for push number ``i`` (a frame in, a frame out)."""
        t0 = time.perf_counter()
        gen.push(self.frames[i % len(self.frames)], self.poses[i % len(self.poses)])
        sync(self.device)
        return time.perf_counter() - t0

    def push_many(self, gen, count: int, desc: str, start: int = 0) -> list[float]:
        return [self.push(gen, start + i) for i in tqdm(range(count), desc=desc, leave=False)]

    def latents(self, frames: int) -> tuple[torch.Tensor, Cond]:
        """Random source latents and conditions for ``frames`` frames at the stream's resolution."""
        H, W = self.image_size
        return random_cond(self.student, frames, (H // 2, W // 2), device=self.device)


def trained_steps(student: Path | None) -> tuple[int, ...]:
    """The denoising list a bundle was distilled with (its ``config.yaml``), else the recipe's."""
    if student is not None and Path(student).is_dir():
        from realcam.bundle import read_bundle_config

        steps = read_bundle_config(student).get("denoising_steps")
        if steps:
            return tuple(int(v) for v in steps)
    return RECIPE_STEPS


def steps_list(count: int) -> tuple[int, ...]:
    """``count`` steps evenly spaced from 1000, as ``StreamingGenerator(steps=count)`` picks them."""
    from realcam.bundle import evenly_spaced_steps

    try:
        return evenly_spaced_steps(count)
    except ValueError as err:
        raise SystemExit(f"realcam bench: --steps: {err}") from None


def resolve_steps(steps: str | None, trained: Sequence[int]) -> tuple[int, ...]:
    """--steps: None = the trained list; N = N evenly spaced steps; a comma list = those timesteps."""
    if steps is None:
        return tuple(trained)
    parts = [v for v in str(steps).split(",") if v.strip()]
    try:
        values = [int(v) for v in parts]
    except ValueError:
        raise SystemExit(f"realcam bench: --steps {steps!r}: give a count (e.g. 1) or timesteps "
                         f"(e.g. 1000,500)") from None
    return steps_list(values[0]) if len(values) == 1 else tuple(values)


def progress(msg: str) -> None:
    tqdm.write(f"[realcam bench] {msg}")


# ---- sections ------------------------------------------------------------------------------------------
class ChunkStepper:
    """One chunk's transformer passes (transformer only) on its own cache, as the stream runs them: with the
    previous chunk's cache pass inside this one's first pass when the setup fuses, else all passes and the
    chunk's own cache commit (``rollout_chunk`` either way)."""

    def __init__(self, model, setup: Setup, dtype: str):
        self.model, self.setup, self.dtype = model, setup, dtype
        _, self.cond = setup.latents(model.chunk_frames)
        self.sigmas = setup.schedule.student_sigmas(device=setup.device)
        self.cache, self.noise = model.new_cache(), torch.Generator().manual_seed(0)
        self.previous = None

    @torch.no_grad()
    def step(self) -> float:
        def run():
            x0, _, _ = rollout_chunk(self.model, self.cond, self.sigmas, self.cache, self.noise, self.cond.source,
                                     previous=self.previous, defer_cache_pass=self.setup.fuse)
            self.previous = (x0, self.cond) if self.setup.fuse else None

        with autocast(self.setup.device, self.dtype):
            return timed(run, self.setup.device)


def chunk_latency(model, setup: Setup, dtype: str, chunks: int, warmup: int) -> list[float]:
    """Seconds per chunk of :class:`ChunkStepper` after ``warmup`` chunks (which fill the cache)."""
    stepper = ChunkStepper(model, setup, dtype)
    return [stepper.step() for _ in range(warmup + chunks)][warmup:]


def section_stream(setup: Setup) -> dict:
    """Every dtype's stream (end to end) and transformer-only stepper, advanced in alternation frame by frame."""
    args = setup.args
    progress(f"stream: {'/'.join(args.dtypes)} in alternation, {args.frames} frames each")
    gens = {d: setup.stream(d) for d in args.dtypes}
    steppers = {d: ChunkStepper(setup.student, setup, d) for d in args.dtypes}
    for d in args.dtypes:
        setup.push_many(gens[d], args.warmup, f"warm-up {d}")
        for _ in range(args.warmup):
            steppers[d].step()
    push = {d: [] for d in args.dtypes}
    chunk = {d: [] for d in args.dtypes}
    for i in tqdm(range(args.frames), desc="stream", leave=False):
        for d in args.dtypes if i % 2 == 0 else args.dtypes[::-1]:
            push[d].append(setup.push(gens[d], args.warmup + i))
            if i % setup.student.chunk_frames == 0:
                chunk[d].append(steppers[d].step())
    rows, c = [], setup.student.chunk_frames
    for d in args.dtypes:
        times = push[d]
        progress(f"stream {d}: {len(times) / sum(times):.1f} FPS end to end, {median_ms(times):.1f} ms per frame")
        rows.append({"dtype": d, "frames": args.frames,
                     "end_to_end": {"fps": len(times) / sum(times), "latency_ms_p50": median_ms(times),
                                    "latency_ms_p90": quantile_ms(times, 0.9),
                                    "latency_ms_mean": 1e3 * statistics.mean(times),
                                    "includes": {"encode": True, "decode": True, "uint8_io": True,
                                                 "input_checks": True}},
                     "transformer_only": {"fps": c * len(chunk[d]) / sum(chunk[d]),
                                          "chunk_ms_p50": median_ms(chunk[d]),
                                          "includes": {"encode": False, "decode": False}}})
    return {"rows": rows, "target_fps": 30.0, "denoising_steps": list(setup.denoising_steps),
            "passes_per_chunk": setup.passes,
            "method": f"StreamingGenerator.push per frame after {args.warmup} warm-up frames (the cache is full: "
                      f"sink {args.sink} + window {args.window}); the dtypes' streams and transformer-only "
                      f"steppers advance in alternation (same machine state); fps = frames / total seconds"}


def section_steps(setup: Setup) -> dict:
    """End-to-end latency at several denoising-step counts, the streams advanced in alternation frame by frame."""
    args = setup.args
    dtype = args.dtypes[0]
    counts = args.compare_steps
    lists = {n: steps_list(n) for n in counts}
    progress(f"steps: {'/'.join(map(str, counts))} denoising steps in alternation ({dtype}), {args.frames} frames each")
    gens = {n: setup.stream(dtype, lists[n]) for n in counts}
    for n in counts:
        setup.push_many(gens[n], args.warmup, f"warm-up {n} steps")
    push = {n: [] for n in counts}
    for i in tqdm(range(args.frames), desc="steps", leave=False):
        for n in counts if i % 2 == 0 else counts[::-1]:
            push[n].append(setup.push(gens[n], args.warmup + i))
    rows = []
    for n in counts:
        times = push[n]
        progress(f"steps {n}: {len(times) / sum(times):.1f} FPS end to end, {median_ms(times):.1f} ms per frame")
        rows.append({"steps": n, "denoising_steps": list(lists[n]), "passes_per_chunk": setup.passes_for(n),
                     "fps": len(times) / sum(times), "latency_ms_p50": median_ms(times),
                     "latency_ms_p90": quantile_ms(times, 0.9)})
    return {"rows": rows, "dtype": dtype, "trained_steps": list(setup.trained_steps),
            "method": "one stream per step count (StreamingGenerator(steps=N): N of the timesteps evenly spaced from "
                      "1000), pushed in alternation frame by frame after the warm-up; end to end. Quality per step "
                      "count is measured on data, not here (docs/results.md)"}


def section_constant(setup: Setup) -> dict:
    args = setup.args
    dtype = args.dtypes[0]
    progress(f"constant: one stream to frame {args.long_frames} ({dtype})")
    old = setup.stream(dtype)
    curve = setup.push_many(old, args.long_frames - 1, f"stream to frame {args.long_frames}")
    young = setup.stream(dtype)
    setup.push_many(young, args.short_frame - 1, f"stream to frame {args.short_frame}")
    short_t, long_t = [], []
    for r in tqdm(range(args.rounds), desc="alternating", leave=False):
        pair = [(young, short_t, args.short_frame - 1 + r), (old, long_t, args.long_frames - 1 + r)]
        for gen, sink, i in pair if r % 2 == 0 else pair[::-1]:
            sink.append(setup.push(gen, i))
    ratio = statistics.median(long_t) / statistics.median(short_t)
    progress(f"constant: frame {args.short_frame} {median_ms(short_t):.1f} ms, frame {args.long_frames} "
             f"{median_ms(long_t):.1f} ms, ratio {ratio:.3f}")
    return {"dtype": dtype, "short_frame": args.short_frame, "long_frame": args.long_frames,
            "short_ms": median_ms(short_t), "long_ms": median_ms(long_t), "ratio": ratio, "limit": 1.10,
            "rounds": args.rounds, "curve_ms": [1e3 * t for t in curve],
            "method": f"two streams of the same network, one pushed to frame {args.short_frame} and one to frame "
                      f"{args.long_frames}, then pushed in alternation for {args.rounds} rounds (medians): both "
                      f"see the same machine state; end to end (encode and decode included)"}


@torch.no_grad()
def teacher_video(setup: Setup, layout: str, T: int, method: str) -> dict:
    """Seconds for one T-frame video from the 50-step Euler teacher: encode, sample, decode."""
    args, model = setup.args, setup.teacher(layout)
    H, W = setup.image_size
    video = torch.rand(1, T, 3, H, W, device=setup.device) * 2 - 1
    _, cond = setup.latents(T)
    sigmas = setup.schedule.teacher_sigmas(TEACHER_STEPS, device=setup.device)
    with autocast(setup.device, args.dtypes[0]):
        coded = timed(lambda: setup.codec.decode(setup.codec.encode(video)), setup.device)
        cond = Cond(setup.codec.encode(video), cond.target_c2w, cond.target_K, cond.image_size)
        noise = torch.randn_like(cond.source)
        if method == "full":
            model(noise, sigmas[0].expand(1, T), cond)     # warm-up
            seconds = timed(lambda: euler_sample(model, noise, cond, sigmas, progress=True), setup.device)
            step = seconds / TEACHER_STEPS
        else:   # a few forward passes, times the number of steps (the sampler's own work is negligible)
            passes = [timed(lambda: model(noise, sigmas[0].expand(1, T), cond), setup.device)
                      for _ in range(args.teacher_probe + 1)][1:]
            step = statistics.median(passes)
            seconds = step * TEACHER_STEPS
        flops = TEACHER_STEPS * count_flops(lambda: model(noise, sigmas[0].expand(1, T), cond))
    return {"seconds": seconds + coded, "step_ms": 1e3 * step, "codec_ms": 1e3 * coded,
            "tokens": 2 * T * model.patchify(cond.source).shape[2], "flops": flops}


def student_video(setup: Setup, T: int, repeats: int) -> tuple[float, int]:
    """(median seconds, counted FLOPs) to stream a T-frame video end to end from a fresh stream (empty cache)."""
    gen = setup.stream(setup.args.dtypes[0])
    setup.push_many(gen, 2, "student warm-up")
    runs = []
    for _ in range(repeats):
        gen.reset()
        runs.append(sum(setup.push_many(gen, T, f"student T={T}")))
    gen.reset()
    flops = count_flops(lambda: setup.push_many(gen, T, f"student T={T}, counting FLOPs"))
    return statistics.median(runs), flops


def section_video(setup: Setup) -> dict:
    args, rows = setup.args, []
    for T in args.lengths:
        student, student_flops = student_video(setup, T, args.video_repeats)
        row = {"T": T, "student_s": student, "student_gflop": student_flops / 1e9}
        for layout in ("interleaved", "prefix"):
            method = args.teacher_method if T in args.full_teacher_lengths or args.teacher_method != "full" \
                else "per_step"
            progress(f"video: T={T}, {layout} teacher, {TEACHER_STEPS} steps ({method})")
            t = teacher_video(setup, layout, T, method)
            row[f"teacher_{layout}_s"] = t["seconds"]
            row[f"teacher_{layout}_step_ms"] = t["step_ms"]
            row[f"teacher_{layout}_method"] = method
            row[f"ratio_{layout}"] = t["seconds"] / student
            row[f"teacher_{layout}_gflop"] = t["flops"] / 1e9
            row[f"flop_ratio_{layout}"] = t["flops"] / student_flops
            row["teacher_tokens"] = t["tokens"]
            progress(f"video T={T}: {layout} teacher {t['seconds']:.2f} s, student {student:.3f} s, "
                     f"ratio {t['seconds'] / student:.1f}")
        rows.append(row)
    return {"rows": rows, "dtype": args.dtypes[0], "teacher_steps": TEACHER_STEPS, "student_passes_per_chunk":
            setup.passes, "student_denoising_steps": list(setup.denoising_steps), "target_ratio_T32": 100.0,
            "teacher_time_method": {"full": "all 50 Euler steps timed end to end",
                                    "per_step": f"median of {args.teacher_probe} timed forward passes x "
                                                f"{TEACHER_STEPS} steps (after one warm-up pass)"},
            "includes": {"encode": True, "decode": True},
            "method": "student: StreamingGenerator from an empty cache, every frame pushed, end to end; teachers: "
                      "one bidirectional sequence of 2T frames (source + target), random weights",
            "flops_method": "FlopCounterMode (matmuls and attention): the student's whole T-frame stream, counted "
                            "once more after the timed runs; the teacher's forward at T x the 50 steps. "
                            "flop_ratio = the time ratio the student would reach at the teacher's FLOP/s"}


def section_ttff(setup: Setup, video: dict | None) -> dict:
    args = setup.args
    T = args.ttff_length
    gen = setup.stream(args.dtypes[0])
    setup.push_many(gen, 2, "warm-up")
    first = []
    for _ in range(args.video_repeats + 2):
        gen.reset()
        first.append(setup.push(gen, 0))
    row = next((r for r in (video or {}).get("rows", []) if r["T"] == T), None)
    teachers = {}
    for layout in ("prefix", "interleaved"):
        teachers[layout] = row[f"teacher_{layout}_s"] if row else \
            teacher_video(setup, layout, T, "per_step")["seconds"]
    stream_ms = median_ms(first)
    out = {"T": T, "source_fps": setup.fps, "streaming_ms": stream_ms,
           "prefix_teacher_ms": 1e3 * teachers["prefix"], "interleaved_teacher_ms": 1e3 * teachers["interleaved"],
           "ratio_prefix": 1e3 * teachers["prefix"] / stream_ms,
           "with_capture": {"streaming_ms": 1e3 / setup.fps + stream_ms,
                            "prefix_teacher_ms": 1e3 * T / setup.fps + 1e3 * teachers["prefix"]},
           "method": "streaming: the first push of a fresh stream (empty cache), end to end; the teachers are "
                     f"bidirectional, so their first frame comes with the whole T={T} video: its generation time. "
                     f"with_capture adds the wait for the source frames at {setup.fps:g} fps (1 frame vs T)"}
    return out


def section_backends(setup: Setup) -> dict:
    args, rows = setup.args, []
    student, teacher = setup.student, setup.teacher("interleaved")
    keep = student.attention, teacher.attention
    T = args.lengths[0]
    _, cond = setup.latents(T)
    x = torch.randn_like(cond.source)
    try:
        for name in args.backends or ATTENTION_BACKENDS.list():
            progress(f"backends: {name} (the warm-up includes any compilation: flex compiles per shape on a CPU)")
            t0 = time.perf_counter()
            backend = ATTENTION_BACKENDS.build(name)
            student.attention = teacher.attention = backend
            try:
                chunk = chunk_latency(student, setup, args.dtypes[0], args.backend_chunks, args.warmup)
                with torch.no_grad(), autocast(setup.device, args.dtypes[0]):
                    passes = [timed(lambda: teacher(x, torch.full((1, T), 0.5, device=setup.device), cond),
                                    setup.device) for _ in range(3)][1:]
                rows.append({"backend": name, "student_chunk_ms": median_ms(chunk),
                             "teacher_forward_ms": median_ms(passes), "wall_seconds": time.perf_counter() - t0})
                progress(f"backends: {name} student chunk {median_ms(chunk):.1f} ms, teacher forward "
                         f"{median_ms(passes):.1f} ms")
            except Exception as err:     # a backend that cannot run here is reported, not fatal
                rows.append({"backend": name, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"})
    finally:
        student.attention, teacher.attention = keep
    return {"rows": rows, "dtype": args.dtypes[0], "teacher_T": T,
            "method": f"student: one chunk ({setup.passes_text()}) on a full cache; teacher: one "
                      f"bidirectional forward over T={T} frames (first call of each shape excluded)"}


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@torch.no_grad()
def section_flops(setup: Setup) -> dict:
    args, model = setup.args, setup.student
    dtype = args.dtypes[0]
    progress("flops: matmul peak and the student's counted FLOPs")
    c = model.chunk_frames
    _, cond = setup.latents(c)
    sigmas = setup.schedule.student_sigmas(device=setup.device)
    cache, noise = model.new_cache(), torch.Generator().manual_seed(0)
    with autocast(setup.device, dtype):
        for _ in range(args.warmup):      # fill the cache: the counted chunk sees the full window
            rollout_chunk(model, cond, sigmas, cache, noise, cond.source)
        flops = count_flops(lambda: rollout_chunk(model, cond, sigmas, cache, noise, cond.source))
    chunk = chunk_latency(model, setup, dtype, args.frames // 2, args.warmup)
    peak = matmul_peak(setup.device, torch.bfloat16, args.peak_size)
    peak32 = matmul_peak(setup.device, torch.float32, args.peak_size)
    achieved = flops / statistics.median(chunk)
    progress(f"flops: {flops / 1e9:.2f} GFLOP per chunk at {achieved / 1e9:.1f} GFLOP/s = "
             f"{100 * achieved / peak['flops_per_s']:.1f}% of the bf16 matmul peak {peak['flops_per_s'] / 1e9:.0f} GFLOP/s")
    return {"dtype": dtype, "flops_per_chunk": flops, "chunk_ms": median_ms(chunk), "achieved_flops_per_s": achieved,
            "bf16_matmul_peak_flops_per_s": peak["flops_per_s"], "fp32_matmul_peak_flops_per_s": peak32["flops_per_s"],
            "fraction_of_bf16_peak": achieved / peak["flops_per_s"], "peak_matmul_size": args.peak_size,
            "method": f"FLOPs of one chunk ({len(setup.denoising_steps)} denoising passes + the cache pass, full cache; the "
                      f"same work fused or not) counted by "
                      "torch.utils.flop_counter.FlopCounterMode (matmuls and attention; elementwise ops not "
                      "counted), divided by the chunk's median latency; peak = best of 5 square matmuls of "
                      f"{args.peak_size} in the same process"}


def run(args: argparse.Namespace) -> dict:
    checked_device(args.device, "--device")
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    only = args.only or list(SECTIONS)
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"realcam bench: --only {','.join(unknown)} is not a section; choose from {','.join(SECTIONS)}")
    setup = Setup(args)
    result: dict = {"benchmark": "realcam bench", "preset": args.preset, "device": args.device,
                    "image_size": list(setup.image_size), "chunk_frames": setup.student.chunk_frames,
                    "sink": args.sink, "window": args.window, "attention": args.attention,
                    "denoising_steps": list(setup.denoising_steps), "trained_steps": list(setup.trained_steps),
                    "fused_cache_pass": setup.fuse,
                    "student_weights": str(args.student) if args.student else "random",
                    "teacher_weights": "random", "quick": args.quick, "machine": machine_info(),
                    "includes": {"encode": True, "decode": True,
                                 "note": "end-to-end numbers include PixelCodec encode/decode and uint8 conversion; "
                                         "transformer_only numbers exclude them"}}
    t0 = time.perf_counter()
    if "stream" in only:
        result["stream"] = section_stream(setup)
    if "steps" in only:
        result["steps"] = section_steps(setup)
    if "constant" in only:
        result["constant"] = section_constant(setup)
    if "video" in only:
        result["video"] = section_video(setup)
    if "ttff" in only:
        result["ttff"] = section_ttff(setup, result.get("video"))
    if "backends" in only:
        result["backends"] = section_backends(setup)
    if "flops" in only:
        result["flops"] = section_flops(setup)
    if "wan" in only:    # transformer-only FPS of the Wan-shaped preset (a GPU benchmark; skipped on a CPU)
        from realcam.bench import transformer

        result["wan"] = transformer.measure(transformer.defaults(preset="wan1.3b", device=args.device))
    result["total_seconds"] = time.perf_counter() - t0
    result["targets"] = targets(result)
    return result


def targets(result: dict) -> dict:
    """The issue's pass/fail lines, from this run's numbers only (None where a section did not run)."""
    stream = next((r for r in result.get("stream", {}).get("rows", []) if r["dtype"] == "bf16"), None)
    video = next((r for r in result.get("video", {}).get("rows", []) if r["T"] == 32), None)
    const = result.get("constant")
    return {"fps_ge_30_bf16": None if stream is None else stream["end_to_end"]["fps"] >= 30.0,
            "constant_ratio_le_1.10": None if const is None else const["ratio"] <= 1.10,
            "teacher_over_student_ge_100_T32": None if video is None else video["ratio_interleaved"] >= 100.0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", help="backbone preset (the suite is meant for tiny)")
    p.add_argument("--student", type=Path, default=None,
                   help="a bundle folder or a .ckpt / .safetensors of the student (default: random weights)")
    p.add_argument("--image-size", type=int, nargs=2, default=(32, 32), metavar=("H", "W"))
    p.add_argument("--steps", default=None,
                   help="the student's denoising steps in every timed section: a count N (N timesteps evenly spaced "
                        "from 1000, as `realcam stream --steps N`) or a comma list of timesteps; default: the list "
                        "the student was distilled with (its bundle's, else the recipe's 1000,750,500,250)")
    p.add_argument("--compare-steps", type=lambda s: [int(v) for v in s.split(",") if v.strip()], default=[4, 2, 1],
                   help="step counts the `steps` section times side by side (comma-separated)")
    p.add_argument("--sink", type=int, default=1)
    p.add_argument("--window", type=int, default=6)
    p.add_argument("--attention", default="sdpa")
    p.add_argument("--fuse", action=argparse.BooleanOptionalAction, default=True,
                   help="run each chunk's cache pass inside the next chunk's first pass, as StreamingGenerator does "
                        "by default (--no-fuse: a separate cache pass per chunk)")
    p.add_argument("--dtypes", nargs="+", choices=("bf16", "fp32"), default=["bf16", "fp32"],
                   help="the first is used by the sections that run one dtype")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--only", type=lambda s: [v.strip() for v in s.split(",") if v.strip()], default=None,
                   help=f"comma-separated sections: {','.join(SECTIONS)}")
    p.add_argument("--quick", action="store_true",
                   help="shorter streams, fewer repeats, teacher timed per step x 50 (see teacher_time_method)")
    p.add_argument("--frames", type=int, default=None, help="timed frames per streaming measurement")
    p.add_argument("--warmup", type=int, default=16, help="frames pushed before timing (fills the cache)")
    p.add_argument("--short-frame", type=int, default=32)
    p.add_argument("--long-frames", type=int, default=None, help="the long stream's frame (default 2048)")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds for the constant-latency ratio")
    p.add_argument("--lengths", type=int, nargs="+", default=[16, 32, 64], help="video lengths T")
    p.add_argument("--teacher-method", choices=("full", "per_step"), default=None,
                   help="full: time all 50 steps; per_step: time a few forward passes x 50 (default with --quick)")
    p.add_argument("--full-teacher-lengths", type=int, nargs="*", default=None,
                   help="with --teacher-method full, the T timed in full (others per step); default all")
    p.add_argument("--teacher-probe", type=int, default=3, help="timed teacher passes for per_step")
    p.add_argument("--video-repeats", type=int, default=None)
    p.add_argument("--ttff-length", type=int, default=32)
    p.add_argument("--backend-chunks", type=int, default=None)
    p.add_argument("--backends", nargs="+", default=None, help="attention backends to compare (default: all)")
    p.add_argument("--source-fps", type=float, default=8.0, help="the source camera's frame rate (ttff capture)")
    p.add_argument("--peak-size", type=int, default=2048, help="matmul size for the peak FLOP/s")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT / "bench.json")
    p.add_argument("--doc", type=Path, default=Path("docs/benchmarks.md"),
                   help="markdown file whose generated section gets the tables (missing file: bench.md next to "
                        "the JSON only)")
    p.add_argument("--plot", action=argparse.BooleanOptionalAction, default=True)


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    quick = args.quick
    defaults = {"frames": 64 if quick else 256, "long_frames": 256 if quick else 2048, "rounds": 16 if quick else 48,
                "teacher_method": "per_step" if quick else "full", "video_repeats": 1 if quick else 3,
                "backend_chunks": 8 if quick else 24}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.full_teacher_lengths is None:
        args.full_teacher_lengths = list(args.lengths)
    if args.long_frames <= args.short_frame:
        raise SystemExit(f"--long-frames {args.long_frames} must exceed --short-frame {args.short_frame}")
    return args


def main(args: argparse.Namespace) -> dict:
    from realcam.bench.report import render, update_doc

    args = resolve_defaults(args)
    result = run(args)
    write_json(result, args.out)
    if args.plot:
        from realcam.bench.report import plots

        result["plots"] = [str(p) for p in plots(result, args.out.parent, args.out.stem)]
        write_json(result, args.out)
    table = render(result, args)
    print("\n" + table)
    args.out.with_suffix(".md").write_text(table + "\n")
    if args.doc is not None and args.doc.is_file():
        update_doc(args.doc, table)
        print(f"updated the generated section of {args.doc}")
    print(f"wrote {args.out}")
    return result
