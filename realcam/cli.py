"""The ``realcam`` command: parses and dispatches, nothing more.

``realcam fit|validate|test|predict`` go to LightningCLI (realcam/lightning_cli.py); ``realcam data``,
``bench``, ``stream``, ``demo`` and ``export`` are tool commands with their own argparse parsers.
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
}


LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def _usage() -> str:
    commands = ", ".join([*LIGHTNING_COMMANDS, *sorted(TOOL_COMMANDS)])
    return f"usage: realcam {{{commands}}} ...\n  realcam <command> --help for details"


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
    if command in LIGHTNING_COMMANDS:
        from realcam.lightning_cli import main as lightning_main

        return int(lightning_main(argv) or 0)
    if command in TOOL_COMMANDS:
        module_name, func_name = TOOL_COMMANDS[command].split(":")
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(argv[1:]) or 0)
    print(f"realcam: unknown command {command!r}\n{_usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
