"""The ``realcam`` command: parses and dispatches, nothing more.

``realcam fit|validate|test|predict`` go to LightningCLI (realcam/lightning_cli.py); ``realcam data``,
``bench``, ``stream``, ``demo``, ``export`` and ``eval`` are tool commands with their own argparse parsers.
Plugins (entry-point group ``realcam.plugins``) are imported before any parsing, so a third-party
camera encoder is a valid registry name and ``class_path`` in every command.
"""
from __future__ import annotations

import importlib
import sys

from realcam.registry import load_plugins

# sub-command -> "module:function"; each function takes argv (list[str]) and returns an exit code.
TOOL_COMMANDS = {
    "data": "realcam.data.cli:main",
    "bench": "realcam.bench:main",
    "stream": "realcam.stream_cli:stream_main",
    "demo": "realcam.demo_cli:demo_main",
    "export": "realcam.stream_cli:export_main",
    "eval": "realcam.eval.cli:main",
    "studio": "realcam.studio.cli:studio_main",
}


LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")

SUMMARIES = {
    "fit": "train a teacher or student from a YAML config (LightningCLI; --ckpt_path resumes)",
    "validate": "run the validation loop of a config on a checkpoint",
    "test": "evaluate a checkpoint (PSNR/SSIM/LPIPS, loop closure, pose error) and write a report",
    "predict": "run a config's predict loop on a checkpoint",
    "data": "make-shards | check | bench | encode | make-ode-pairs: training data and its checks",
    "bench": "streaming FPS and latency, teacher vs student, attention backends, FLOP/s (table + JSON)",
    "stream": "re-render a video (or a synthetic scene) along a camera trajectory, frame by frame",
    "demo": "stream a held-out scene with the bundled tiny student (--from-scratch: the whole pipeline)",
    "export": "write a checkpoint as a streaming bundle (config.yaml + model.safetensors)",
    "eval": "evaluation tools: camera (RotErr, TransErr, CamMC by pose estimation), sweep (quality vs view change)",
    "studio": "steer the camera live in a browser (FastAPI + WebSocket page); bench | load measure it",
}


def _usage() -> str:
    commands = [*LIGHTNING_COMMANDS, *sorted(TOOL_COMMANDS)]
    width = max(map(len, commands))
    lines = [f"usage: realcam {{{', '.join(commands)}}} ...", "", "commands:"]
    lines += [f"  {name:<{width}}  {SUMMARIES.get(name, '')}".rstrip() for name in commands]
    lines += ["", "realcam <command> --help for its options; realcam --version; docs/cli.md"]
    return "\n".join(lines)


def _call(target: str, argv: list[str]) -> int:
    module_name, func_name = target.split(":")
    return int(getattr(importlib.import_module(module_name), func_name)(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    load_plugins()
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        import torch

        from realcam import __version__
        print(f"realcam {__version__} (torch {torch.__version__})")
        return 0
    command = argv[0]
    if argv[:2] == ["data", "make-ode-pairs"]:
        # Needs a teacher (model code), so it lives in realcam.systems; data/ stays model-free.
        from realcam.systems.ode_cli import main as make_ode_pairs

        return int(make_ode_pairs(argv[2:]) or 0)
    if argv[:2] == ["data", "encode"]:
        # Runs the VAE and the text encoder (model code), so it lives outside data/ too.
        from realcam.encode_cli import main as encode

        return int(encode(argv[2:]) or 0)
    if command in LIGHTNING_COMMANDS:
        from realcam.lightning_cli import main as lightning_main

        return int(lightning_main(argv) or 0)
    if command in TOOL_COMMANDS:
        return _call(TOOL_COMMANDS[command], argv[1:])
    print(f"realcam: unknown command {command!r}\n{_usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
