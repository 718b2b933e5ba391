"""The layers of docs/architecture.md hold in the code: imports point down, never back up.

Every import counts, the lazy ones inside functions too: ``modules/`` knows nothing of Lightning, data or
training; ``losses/`` are functions over tensors and modules; ``data/`` knows nothing of models; inference
(``realcam.streaming`` and what it needs: rollout, network building, the bundle format) knows nothing of
Lightning or the training systems. No module imports itself back through a cycle.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "realcam"

FORBIDDEN = {
    "modules": ("lightning", "realcam.systems", "realcam.data", "realcam.losses", "realcam.streaming",
                "realcam.metrics", "realcam.bench", "realcam.cli", "realcam.stream_cli", "realcam.demo_cli",
                "realcam.lightning_cli"),
    "losses": ("lightning", "realcam.systems", "realcam.data", "realcam.streaming", "realcam.bench", "realcam.cli",
               "realcam.stream_cli", "realcam.demo_cli", "realcam.lightning_cli"),
    "streaming.py": ("lightning", "pytorch_lightning", "torchmetrics", "realcam.systems", "realcam.losses",
                     "realcam.metrics", "realcam.bench", "realcam.cli", "realcam.stream_cli", "realcam.demo_cli",
                     "realcam.lightning_cli"),
    "rollout.py": ("lightning", "torchmetrics", "realcam.systems", "realcam.streaming", "realcam.data"),
    "networks.py": ("lightning", "torchmetrics", "realcam.systems", "realcam.streaming", "realcam.data"),
    "bundle.py": ("lightning", "torchmetrics", "realcam.systems", "realcam.streaming", "realcam.data"),
    "stream_sources.py": ("lightning", "torchmetrics", "realcam.systems", "realcam.modules", "realcam.streaming",
                          "realcam.cli", "realcam.stream_cli", "realcam.demo_cli"),
    # the studio drives the public StreamingGenerator API only (docs/studio.md), never the model internals
    "studio": ("lightning", "realcam.systems", "realcam.modules", "realcam.losses", "realcam.lightning_cli"),
    "data": ("realcam.modules", "realcam.systems", "realcam.losses", "realcam.streaming", "realcam.bench",
             "realcam.metrics",
             "realcam.stream_cli", "realcam.demo_cli", "realcam.lightning_cli"),
    "eval": ("lightning", "realcam.systems", "realcam.modules", "realcam.losses", "realcam.streaming",
             "realcam.bench", "realcam.lightning_cli", "realcam.demo_cli"),
}


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, ``from realcam import geometry`` counted as ``realcam.geometry``."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{alias.name}" for alias in node.names}
    return out


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_point_down(layer):
    bad = []
    paths = [PACKAGE / layer] if layer.endswith(".py") else sorted((PACKAGE / layer).rglob("*.py"))
    for path in paths:
        for name in sorted(imports_of(path)):
            hit = next((f for f in FORBIDDEN[layer] if name == f or name.startswith(f + ".")), None)
            if hit:
                bad.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not bad, f"realcam/{layer} must not import {FORBIDDEN[layer]}:\n" + "\n".join(bad)


def test_streaming_loads_no_training_stack():
    """Inference in a fresh interpreter: importing realcam.streaming loads neither Lightning nor torchmetrics."""
    code = ("import sys, realcam.streaming; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('lightning', 'pytorch_lightning', 'torchmetrics')); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)


def _module_graph() -> dict[str, set[str]]:
    """realcam module -> the realcam modules it imports at module level (lazy imports in functions excluded)."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        deps = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {d for d in deps if d.startswith("realcam")}
    # ``from realcam import geometry`` depends on realcam.geometry; a package's own parents load first anyway
    return {name: {d for d in deps if d in graph and d != name and not name.startswith(d + ".")
                   and not any(x.startswith(d + ".") for x in deps & graph.keys())}
            for name, deps in graph.items()}


def test_no_import_cycles():
    graph = _module_graph()
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                cycle = trail[trail.index(dep):] + [dep] if dep in trail else [name, dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, trail + [dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
