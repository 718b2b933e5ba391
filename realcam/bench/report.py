"""Tables and plots of a ``realcam bench`` result (the JSON written by :mod:`realcam.bench.suite`)."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

BEGIN, END = "<!-- realcam bench: begin (generated) -->", "<!-- realcam bench: end -->"


def _yes(flag) -> str:
    return "n/a" if flag is None else ("**yes**" if flag else "**no**")


def render(result: dict, args: argparse.Namespace | None = None) -> str:
    """Markdown tables of every section present in ``result``."""
    m = result["machine"]
    lines = [f"Preset `{result['preset']}` ({result['image_size'][0]}x{result['image_size'][1]} frames, chunk of "
             f"{result['chunk_frames']} frame, sink {result['sink']} + window {result['window']}, `{result['attention']}`"
             f" attention), student weights: {result['student_weights']}, on {m['cpu']} ({m['threads']} threads, "
             f"device `{result['device']}`), torch {m['torch']}, {m['date']}"
             f"{', --quick' if result.get('quick') else ''}. Whole run: {result['total_seconds']:.0f} s.", ""]
    steps = result.get("denoising_steps")
    if steps:
        trained = result.get("trained_steps") or steps
        fused = result.get("fused_cache_pass", False)
        passes = (f"{len(steps)} transformer pass{'es' if len(steps) > 1 else ''} per frame: each frame's cache pass "
                  f"runs inside the next frame's first pass" if fused else
                  f"{len(steps) + 1} transformer passes per frame with the cache pass")
        lines += [f"Student denoising steps in every timed section: {len(steps)} ({', '.join(map(str, steps))}; "
                  f"{passes}); distilled with {len(trained)} ({', '.join(map(str, trained))}).", ""]
    t = result.get("targets", {})
    lines += ["| target | result |", "|---|---|",
              f"| streaming ≥ 30 FPS (bf16, end to end{_steps_note(steps)}) | {_yes(t.get('fps_ge_30_bf16'))} |",
              f"| latency frame 2048 / frame 32 ≤ 1.10 | {_yes(t.get('constant_ratio_le_1.10'))} |",
              f"| ≥ 100× less time per T=32 video than the 50-step teacher | "
              f"{_yes(t.get('teacher_over_student_ge_100_T32'))} |", ""]
    if "stream" in result:
        n = len(result["stream"].get("denoising_steps") or [0] * 4)
        cache_pass = " (the previous frame's cache pass fused into the first)" if result.get("fused_cache_pass") \
            else " + cache pass"
        lines += [f"**Streaming** (per frame; end to end = uint8 frame in → encode → {n} denoising "
                  f"pass{'es' if n > 1 else ''}{cache_pass} → decode):", "",
                  "| dtype | FPS end to end | latency p50 (ms) | p90 (ms) | transformer-only FPS | chunk p50 (ms) |",
                  "|---|---|---|---|---|---|"]
        for r in result["stream"]["rows"]:
            e, tr = r["end_to_end"], r["transformer_only"]
            lines.append(f"| {r['dtype']} | **{e['fps']:.1f}** | {e['latency_ms_p50']:.2f} | {e['latency_ms_p90']:.2f}"
                         f" | {tr['fps']:.1f} | {tr['chunk_ms_p50']:.2f} |")
        lines.append("")
    if "steps" in result:
        st = result["steps"]
        lines += [f"**Denoising steps side by side** ({st['dtype']}, end to end, the streams pushed in alternation; "
                  f"quality per step count in docs/results.md):", "",
                  "| steps | timesteps | passes per frame | FPS | latency p50 (ms) | p90 (ms) |", "|---|---|---|---|---|---|"]
        for r in st["rows"]:
            lines.append(f"| {r['steps']} | {', '.join(map(str, r['denoising_steps']))} | {r['passes_per_chunk']} | "
                         f"**{r['fps']:.1f}** | {r['latency_ms_p50']:.2f} | {r['latency_ms_p90']:.2f} |")
        lines.append("")
    if "constant" in result:
        c = result["constant"]
        lines += ["**Constant cost** (end to end, two streams timed in alternation):", "",
                  f"| frame {c['short_frame']} (ms) | frame {c['long_frame']} (ms) | ratio |", "|---|---|---|",
                  f"| {c['short_ms']:.2f} | {c['long_ms']:.2f} | **{c['ratio']:.3f}** |", ""]
    if "video" in result:
        v = result["video"]
        lines += [f"**Seconds per generated video** ({v['dtype']}, encode + decode included; teacher "
                  f"{v['teacher_steps']} Euler steps, student {v['student_passes_per_chunk']} "
                  f"pass{'es' if v['student_passes_per_chunk'] > 1 else ''} per frame):", "",
                  "| T | teacher tokens | teacher interleaved (s) | teacher prefix (s) | student streaming (s) | "
                  "interleaved / student | prefix / student | FLOPs: interleaved / student | teacher timing |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in v["rows"]:
            flops = (f"{r['teacher_interleaved_gflop']:.0f} / {r['student_gflop']:.1f} GFLOP = "
                     f"{r['flop_ratio_interleaved']:.1f}×" if "flop_ratio_interleaved" in r else "—")
            lines.append(f"| {r['T']} | {r['teacher_tokens']} | {r['teacher_interleaved_s']:.2f} | "
                         f"{r['teacher_prefix_s']:.2f} | {r['student_s']:.3f} | **{r['ratio_interleaved']:.1f}×** | "
                         f"{r['ratio_prefix']:.1f}× | {flops} | {r['teacher_interleaved_method']} |")
        lines += ["", "The FLOP ratio is the time ratio the student would reach if it ran at the teacher's FLOP/s "
                  "(counted by FlopCounterMode: matmuls and attention).", ""]
    if "ttff" in result:
        f = result["ttff"]
        w = f["with_capture"]
        lines += [f"**Time to first target frame** (T = {f['T']}):", "",
                  "| | streaming student | prefix teacher | interleaved teacher |", "|---|---|---|---|",
                  f"| compute (ms) | {f['streaming_ms']:.1f} | {f['prefix_teacher_ms']:.0f} | "
                  f"{f['interleaved_teacher_ms']:.0f} |",
                  f"| with source capture at {f['source_fps']:g} fps (ms) | {w['streaming_ms']:.1f} | "
                  f"{w['prefix_teacher_ms']:.0f} | — |", ""]
    if "backends" in result:
        b = result["backends"]
        lines += [f"**Attention backends** ({b['dtype']}):", "",
                  f"| backend | student chunk (ms) | teacher forward, T={b['teacher_T']} (ms) |", "|---|---|---|"]
        for r in b["rows"]:
            if "error" in r:
                lines.append(f"| `{r['backend']}` | failed: {r['error']} | |")
            else:
                lines.append(f"| `{r['backend']}` | {r['student_chunk_ms']:.2f} | {r['teacher_forward_ms']:.1f} |")
        lines.append("")
    if "flops" in result:
        f = result["flops"]
        lines += ["**Achieved FLOP/s** (student, one chunk, counted by FlopCounterMode):", "",
                  "| FLOPs per chunk | chunk (ms) | achieved (GFLOP/s) | bf16 matmul peak (GFLOP/s) | fraction | "
                  "fp32 matmul peak (GFLOP/s) |", "|---|---|---|---|---|---|",
                  f"| {f['flops_per_chunk'] / 1e9:.2f} G | {f['chunk_ms']:.2f} | {f['achieved_flops_per_s'] / 1e9:.1f} | "
                  f"{f['bf16_matmul_peak_flops_per_s'] / 1e9:.1f} | **{100 * f['fraction_of_bf16_peak']:.1f}%** | "
                  f"{f['fp32_matmul_peak_flops_per_s'] / 1e9:.1f} |", ""]
    if "wan" in result:
        w = result["wan"]
        if "skipped" in w:
            lines += [f"**wan1.3b transformer** ({w['grid'][0]}x{w['grid'][1]} latents): {w['skipped']}.", ""]
        else:
            lines += [f"**wan1.3b transformer** (random weights, {w['grid'][0]}x{w['grid'][1]} latents, "
                      f"{w['chunk_frames']} latent frames per chunk, {w['dtype']}, no VAE):", "",
                      "| tokens per chunk | chunk p50 (ms) | latent frames/s | video FPS (x4, Wan VAE) |",
                      "|---|---|---|---|",
                      f"| {w['tokens_per_chunk']} | {w['chunk_ms_p50']:.1f} | {w['latent_fps']:.1f} | "
                      f"{w['video_fps_estimate']:.1f} |", ""]
    for p in result.get("plots", []):
        lines.append(f"![{Path(p).stem}](benchmarks/{Path(p).name})")
    return "\n".join(lines).rstrip()


def _steps_note(steps) -> str:
    return f", {len(steps)} denoising step{'s' if len(steps) > 1 else ''}" if steps else ""


def update_doc(path: Path, table: str) -> None:
    """Replace the generated section of ``path`` (between the markers), or append one."""
    text = path.read_text()
    block = f"{BEGIN}\n{table}\n{END}"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n## Streaming student vs teachers: `realcam bench`\n\n" + block + "\n"
    path.write_text(text)


def plots(result: dict, folder: Path, stem: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if "constant" in result:
        c = result["constant"]
        fig, ax = plt.subplots(figsize=(7, 3.5), dpi=120)
        ms = c["curve_ms"]
        k = 9   # running median: scheduler noise out of the picture
        smooth = [sorted(ms[max(0, i - k // 2): i + k // 2 + 1])[len(ms[max(0, i - k // 2): i + k // 2 + 1]) // 2]
                  for i in range(len(ms))]
        ax.plot(range(1, len(ms) + 1), ms, lw=0.4, alpha=0.4, label="per frame")
        ax.plot(range(1, len(ms) + 1), smooth, label="running median (9)")
        ax.scatter([c["short_frame"], c["long_frame"]], [c["short_ms"], c["long_ms"]], color="k", zorder=3,
                   label=f"alternating medians (ratio {c['ratio']:.3f})")
        ax.set_xscale("log")
        ax.set_xlabel("frame in the stream")
        ax.set_ylabel("latency per frame (ms)")
        ax.set_title(f"streaming student, {c['dtype']}, end to end")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(folder / f"{stem}_latency.png")
        fig.savefig(written[-1])
        plt.close(fig)
    if "video" in result:
        rows = result["video"]["rows"]
        T = [r["T"] for r in rows]
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
        for key, label in (("teacher_interleaved_s", "teacher, interleaved, 50 steps"),
                           ("teacher_prefix_s", "teacher, prefix, 50 steps"), ("student_s", "streaming student")):
            ax.plot(T, [r[key] for r in rows], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(T, [str(t) for t in T])
        ax.set_xlabel("video length T (frames)")
        ax.set_ylabel("seconds per video")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(folder / f"{stem}_video.png")
        fig.savefig(written[-1])
        plt.close(fig)
    return written
