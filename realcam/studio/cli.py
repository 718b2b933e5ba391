"""``realcam studio``: serve the page; ``realcam studio bench`` and ``realcam studio load`` measure it.

    realcam studio                                  # http://127.0.0.1:8765, the bundled tiny student
    realcam studio --host 0.0.0.0 --token SECRET    # beyond the loopback a token is required
    realcam studio bench --seconds 10               # FPS received in headless Chromium (table + JSON)
    realcam studio load --sessions 4 --seconds 30   # concurrent sessions: FPS, latency, RSS (table + JSON)
"""
from __future__ import annotations

import argparse
import sys

from realcam.data.cli import at_least
from realcam.stream_cli import fov_degrees, positive_float


def serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="realcam studio", description="Steer the camera live in a browser: one page, "
                                "a WebSocket per tab (docs/studio.md). Also: `realcam studio bench|load --help`.")
    p.add_argument("--bundle", help="bundle folder (default: the bundled realcam/assets/tiny_student)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other needs --token)")
    p.add_argument("--port", type=at_least(0), default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--token", help="secret every connection must present (?token=, header X-Realcam-Token)")
    p.add_argument("--steps", type=at_least(1), default=1, help="denoising steps a session starts with (1-4)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="bf16", help="bf16 = torch.autocast")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0, help="noise seed of every session (streams are reproducible)")
    p.add_argument("--fov", type=fov_degrees, default=60.0, help="assumed horizontal field of view of uploads and the webcam")
    p.add_argument("--max-fps", type=positive_float, default=30.0, help="frame rate cap a session starts with")
    p.add_argument("--max-sessions", type=at_least(1), default=8, help="concurrent tabs (each has its own model)")
    p.add_argument("--max-upload-mb", type=positive_float, default=50.0, help="largest video upload, in MB")
    p.add_argument("--threads", type=at_least(0), default=1, help="torch CPU threads (0: torch's default)")
    return p


def config_from(args: argparse.Namespace):
    from realcam.studio.server import StudioConfig

    return StudioConfig(bundle=args.bundle, host=args.host, port=args.port, token=args.token, steps=args.steps,
                        dtype=args.dtype, device=args.device, seed=args.seed, fov_deg=args.fov,
                        max_fps=args.max_fps, max_sessions=args.max_sessions, max_upload_mb=args.max_upload_mb)


def studio_main(argv: list[str]) -> int:
    if argv[:1] in (["bench"], ["load"]):
        from realcam.studio.bench import bench_main, load_main

        return (bench_main if argv[0] == "bench" else load_main)(argv[1:])
    p = serve_parser()
    args = p.parse_args(argv)
    config = config_from(args)
    try:
        config.check()
    except ValueError as err:
        p.error(str(err))
    import torch
    import uvicorn

    from realcam.studio.server import create_app, uvicorn_config

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        app = create_app(config)
    except (ValueError, FileNotFoundError) as err:
        print(f"realcam studio: {err}", file=sys.stderr)
        return 2
    shown = f"[{config.host}]" if ":" in config.host else config.host
    query = f"?token={config.token}" if config.token else ""
    print(f"realcam studio: open http://{shown}:{config.port}/{query}  (Ctrl-C stops)", flush=True)
    uvicorn.Server(uvicorn_config(app, config.host, config.port)).run()
    return 0
