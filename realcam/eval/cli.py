"""``realcam eval <tool>``: the evaluation tools, one sub-command each.

A tool is one entry of ``EVAL_COMMANDS`` (name -> ``"module:function"`` taking argv and returning an exit code,
plus a one-line summary); adding one is adding a line here.
"""
from __future__ import annotations

import importlib
import sys

EVAL_COMMANDS = {
    "camera": ("realcam.eval.camera_cli:main",
               "camera accuracy of a generated video: RotErr, TransErr, CamMC against the requested trajectory"),
    "sweep": ("realcam.eval.sweep:main",
              "quality against the view change: model vs source copy per rotation bin (table, plot, JSON)"),
}


def usage() -> str:
    width = max(map(len, EVAL_COMMANDS))
    lines = [f"usage: realcam eval {{{', '.join(EVAL_COMMANDS)}}} ...", "", "tools:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in EVAL_COMMANDS.items()]
    lines += ["", "realcam eval <tool> --help for its options; docs/metrics.md"]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in EVAL_COMMANDS:
        print(f"realcam eval: unknown tool {argv[0]!r}\n{usage()}", file=sys.stderr)
        return 2
    module_name, func_name = EVAL_COMMANDS[argv[0]][0].split(":")
    return int(getattr(importlib.import_module(module_name), func_name)(argv[1:]) or 0)
