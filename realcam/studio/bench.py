"""Measuring the studio: ``realcam studio bench`` (frames per second received in headless Chromium) and
``realcam studio load`` (N concurrent sessions over WebSockets: per-session FPS and latency, the server's RSS).

Both start ``realcam studio`` as a child process on a free 127.0.0.1 port (so RSS is the server's own), print a
table and write JSON. Latency is browser (or client) receive time minus the server's wall clock at the start of
the frame's ``push``: generation, encoding, queueing and transport together (one machine, one clock).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from realcam.atomic import write_atomic
from realcam.data.cli import at_least
from realcam.stream_cli import positive_float

CHROMIUM = "/usr/bin/chromium"


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


@contextmanager
def studio_process(steps: int, dtype: str, bundle: str | None, max_sessions: int = 8,
                   timeout_s: float = 180.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """``realcam studio`` in a child process on a free loopback port; yields (base URL, process)."""
    from realcam.studio.server import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "realcam", "studio", "--port", str(port), "--steps", str(steps), "--dtype", dtype,
           "--max-fps", "240", "--max-sessions", str(max_sessions)] + (["--bundle", bundle] if bundle else [])
    log = tempfile.TemporaryFile(mode="w+")         # a file, not a pipe: a full pipe would stall the server
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"realcam studio exited with {proc.returncode}: {log.read()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if json.load(r)["ok"]:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"realcam studio did not answer on {url} within {timeout_s:.0f} s")
            time.sleep(0.2)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "p50": None, "p90": None}
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90))}


def _machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "load_average": [round(v, 2) for v in os.getloadavg()],
            "python": platform.python_version(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _write(result: dict[str, Any], out: Path | None) -> None:
    if out is not None:
        write_atomic(out, json.dumps(result, indent=1) + "\n")
        print(f"wrote {out}")


# ================================================================================================ browser FPS
class BarePush:
    """The bundle's generator pushed in a loop in this process, without the studio (no encoding, ground truth,
    socket or browser): the reference the page's FPS is compared with, measured in alternation with it."""

    def __init__(self, bundle: str | None, steps: int, dtype: str):
        from realcam.streaming import StreamingGenerator, bundled_model
        from realcam.studio.sources import SyntheticFeed

        self.gen = StreamingGenerator.from_checkpoint(bundle or bundled_model(), steps=steps, dtype=dtype)
        self.feed = SyntheticFeed(self.gen.image_size, self.gen.fps, seed=3)
        self.gen.reset(K=self.feed.K)
        self.run(0.5)                                   # warm-up

    def run(self, seconds: float) -> tuple[int, float]:
        import torch

        eye, frames, t0 = torch.eye(4), 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            self.gen.push(self.feed.next().image, eye)
            frames += 1
        return frames, time.perf_counter() - t0


def browser_fps(url: str, seconds: float, warmup: float, steps: int, chromium: str = CHROMIUM,
                screenshot: Path | None = None, preset: str | None = None, rounds: int = 1,
                bare: BarePush | None = None) -> dict[str, Any]:
    """Open the page in headless Chromium with the synthetic source playing; frames received per second over
    ``rounds`` windows of ``seconds / rounds``. With ``bare``, each window is followed (the page paused) by one of
    the same length pushing the bare generator here. ``preset``: a trajectory spec the page flies (its "fly
    preset" button) when the measurement starts."""
    from playwright.sync_api import sync_playwright

    windows, bare_runs = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/?autoplay=synthetic&seed=3&steps={steps}&max_fps=240")
            page.wait_for_function("window.studio && window.studio.frames > 0", timeout=180_000)
            page.wait_for_timeout(warmup * 1000)
            if preset:
                page.select_option("#preset", preset)
                page.click("#apply-preset")
            for r in range(rounds):
                f0, t0 = page.evaluate("[window.studio.frames, Date.now()]")
                page.wait_for_timeout(seconds / rounds * 1000)
                f1, t1 = page.evaluate("[window.studio.frames, Date.now()]")
                windows.append((f1 - f0, t0, t1))
                if screenshot is not None and r == rounds - 1:
                    page.screenshot(path=str(screenshot))
                if bare is not None:
                    page.evaluate("window.studio.send({type: 'pause'})")
                    page.wait_for_timeout(300)
                    bare_runs.append(bare.run(seconds / rounds))
                    page.evaluate("window.studio.send({type: 'play'})")
                    page.wait_for_timeout(500)
            log, errors = page.evaluate("[window.studio.log, window.studio.errors]")
        finally:
            browser.close()
    inside = [h for h in log if any(t0 <= h["received_ms"] <= t1 for _, t0, t1 in windows)]
    frames, secs = sum(w[0] for w in windows), sum(w[2] - w[1] for w in windows) / 1000.0
    out = {"frames": frames, "seconds": secs, "fps": frames / secs,
           "fps_per_round": [round(n / ((t1 - t0) / 1000.0), 2) for n, t0, t1 in windows],
           "latency_ms": _summary([h["received_ms"] - h["t_push_ms"] for h in inside]),
           "generate_ms": _summary([h["latency_ms"] for h in inside if h["latency_ms"] is not None]),
           "dropped": inside[-1]["dropped"] if inside else None, "errors": errors}
    if bare_runs:
        bare_fps = sum(n for n, _ in bare_runs) / sum(t for _, t in bare_runs)
        out.update(bare_fps=bare_fps, bare_fps_per_round=[round(n / t, 2) for n, t in bare_runs],
                   studio_over_bare=out["fps"] / bare_fps)
    return out


def bench_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="realcam studio bench", description="Frames per second received by the page "
                                "in headless Chromium, one session, synthetic source (table + JSON).")
    p.add_argument("--seconds", type=positive_float, default=10.0, help="measured time (default 10)")
    p.add_argument("--warmup", type=positive_float, default=3.0, help="time before measuring (default 3)")
    p.add_argument("--steps", type=at_least(1), default=1, help="denoising steps (default 1)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="bf16")
    p.add_argument("--bundle", help="bundle folder (default: the bundled tiny student)")
    p.add_argument("--chromium", default=CHROMIUM, help=f"Chromium executable (default {CHROMIUM})")
    p.add_argument("--screenshot", type=Path, help="also save a screenshot of the page (PNG)")
    p.add_argument("--preset", help="fly this trajectory preset while measuring (e.g. arc:left:30)")
    p.add_argument("--rounds", type=at_least(1), default=5, help="measured windows (default 5)")
    p.add_argument("--no-bare", dest="bare", action="store_false", help="skip the bare generator's FPS, measured "
                   "here in alternation with the page's (same steps and dtype, the page paused meanwhile)")
    p.add_argument("--threads", type=at_least(1), default=1, help="torch threads of the bare generator (default 1)")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks/studio.json"), help="JSON report")
    return p


def bench_main(argv: list[str]) -> int:
    args = bench_parser().parse_args(argv)
    machine = _machine()
    import torch

    torch.set_num_threads(args.threads)
    bare = BarePush(args.bundle, args.steps, args.dtype) if args.bare else None
    with studio_process(args.steps, args.dtype, args.bundle) as (url, proc):
        result = browser_fps(url, args.seconds, args.warmup, args.steps, args.chromium, args.screenshot,
                             args.preset, args.rounds, bare)
        result["server_rss_mb"] = rss_mb(proc.pid)
    result = {"command": "realcam studio bench " + " ".join(argv), "steps": args.steps, "dtype": args.dtype,
              "machine_before": machine, "machine_after": _machine(), **result}
    lat, gen = result["latency_ms"], result["generate_ms"]
    print(f"{'steps':>5} {'frames':>7} {'FPS (browser)':>14} {'bare push FPS':>14} {'ratio':>6} "
          f"{'latency p50/p90 ms':>19} {'generate p50 ms':>16}")
    bare_fps, ratio = result.get("bare_fps"), result.get("studio_over_bare")
    print(f"{args.steps:>5} {result['frames']:>7} {result['fps']:>14.1f} "
          f"{bare_fps if bare_fps is not None else float('nan'):>14.1f} {ratio if ratio else float('nan'):>6.2f} "
          f"{lat['p50'] or 0:>9.1f}/{lat['p90'] or 0:<9.1f} {gen['p50'] or 0:>16.1f}")
    print(f"per round: browser {result['fps_per_round']}, bare {result.get('bare_fps_per_round')}")
    print(f"load average before {machine['load_average']}, after {result['machine_after']['load_average']}")
    _write(result, args.out)
    return 0 if result["frames"] > 0 and not result["errors"] else 1


# ================================================================================================ load test
async def _client(url: str, seed: int, warm_at: float, end_at: float) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    from realcam.studio.protocol import unpack

    times, latency, errors, frames_total = [], [], [], 0
    async with connect(url.replace("http", "ws", 1) + "/ws", max_size=1 << 22) as ws:
        await ws.send(json.dumps({"type": "source", "kind": "synthetic", "seed": seed}))
        await ws.send(json.dumps({"type": "play"}))
        while time.time() < end_at:
            try:
                message = await asyncio.wait_for(ws.recv(), timeout=max(0.01, end_at - time.time()))
            except asyncio.TimeoutError:
                break
            now = time.time()
            if isinstance(message, str):
                m = json.loads(message)
                if m["type"] == "error":
                    errors.append(m)
                continue
            frames_total += 1
            if now >= warm_at:
                header, _ = unpack(message)
                times.append(now)
                latency.append(now * 1000.0 - header["t_push_ms"])
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return {"seed": seed, "frames": len(times), "frames_total": frames_total,
            "fps": (len(times) - 1) / span if span > 0 else 0.0, "latency_ms": _summary(latency), "errors": errors}


async def _load(url: str, pid: int, sessions: int, seconds: float, warmup: float) -> dict[str, Any]:
    start = time.time()
    warm_at, end_at = start + warmup, start + warmup + seconds
    tasks = [asyncio.create_task(_client(url, seed, warm_at, end_at)) for seed in range(sessions)]
    rss: list[tuple[float, float]] = []
    while time.time() < end_at:
        rss.append((round(time.time() - start, 2), rss_mb(pid)))
        await asyncio.sleep(1.0)
    rss.append((round(time.time() - start, 2), rss_mb(pid)))
    results = await asyncio.gather(*tasks)
    after_warmup = next(v for t, v in rss if t >= warmup)
    return {"sessions": results, "rss_mb": rss, "rss_after_warmup_mb": after_warmup, "rss_end_mb": rss[-1][1],
            "rss_change": rss[-1][1] / after_warmup - 1.0}


def load_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="realcam studio load", description="N concurrent sessions on 127.0.0.1 for a "
                                "fixed time: per-session FPS and latency, server RSS (table + JSON).")
    p.add_argument("--sessions", type=at_least(1), default=4)
    p.add_argument("--seconds", type=positive_float, default=30.0, help="measured time after the warm-up")
    p.add_argument("--warmup", type=positive_float, default=5.0)
    p.add_argument("--steps", type=at_least(1), default=1)
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="bf16")
    p.add_argument("--bundle", help="bundle folder (default: the bundled tiny student)")
    p.add_argument("--rss-tolerance", type=positive_float, default=0.10, help="allowed RSS growth after warm-up")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks/studio_load.json"), help="JSON report")
    return p


def load_main(argv: list[str]) -> int:
    args = load_parser().parse_args(argv)
    machine = _machine()
    with studio_process(args.steps, args.dtype, args.bundle, max_sessions=args.sessions) as (url, proc):
        result = asyncio.run(_load(url, proc.pid, args.sessions, args.seconds, args.warmup))
        with urllib.request.urlopen(url + "/health", timeout=10) as r:
            result["health_after"] = json.load(r)
        result["server_alive"] = proc.poll() is None
    flat = abs(result["rss_change"]) <= args.rss_tolerance
    ok = flat and result["server_alive"] and all(s["frames"] > 0 and not s["errors"] for s in result["sessions"])
    result = {"command": "realcam studio load " + " ".join(argv), "steps": args.steps, "dtype": args.dtype,
              "seconds": args.seconds, "warmup": args.warmup, "machine_before": machine,
              "machine_after": _machine(), "rss_flat": flat, "ok": ok, **result}
    print(f"{'session':>7} {'frames':>7} {'FPS':>6} {'latency p50 ms':>15} {'p90 ms':>8} {'errors':>7}")
    for i, s in enumerate(result["sessions"]):
        lat = s["latency_ms"]
        print(f"{i:>7} {s['frames']:>7} {s['fps']:>6.1f} {lat['p50'] or 0:>15.1f} {lat['p90'] or 0:>8.1f} "
              f"{len(s['errors']):>7}")
    print(f"server RSS after warm-up {result['rss_after_warmup_mb']:.1f} MiB, at the end {result['rss_end_mb']:.1f} "
          f"MiB ({100 * result['rss_change']:+.1f} %, {'flat' if flat else 'NOT flat'}); server alive: "
          f"{result['server_alive']}; load average {machine['load_average']} -> {result['machine_after']['load_average']}")
    _write(result, args.out)
    return 0 if ok else 1
