"""The layers of docs/architecture.md hold in the code: imports point down, never back up.

Every import counts, the lazy ones inside functions too: ``modules/`` knows nothing of Lightning, data or
training; ``losses/`` are functions over tensors and modules; ``data/`` knows nothing of models.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "realcam"

FORBIDDEN = {
    "modules": ("lightning", "realcam.systems", "realcam.data", "realcam.losses", "realcam.streaming",
                "realcam.metrics", "realcam.bench", "realcam.cli", "realcam.stream_cli", "realcam.demo_cli",
                "realcam.lightning_cli"),
    "losses": ("lightning", "realcam.systems", "realcam.data", "realcam.streaming", "realcam.bench", "realcam.cli",
               "realcam.stream_cli", "realcam.demo_cli", "realcam.lightning_cli"),
    # the studio drives the public StreamingGenerator API only (docs/studio.md), never the model internals
    "studio": ("lightning", "realcam.systems", "realcam.modules", "realcam.losses", "realcam.lightning_cli"),
    "data": ("realcam.modules", "realcam.systems", "realcam.losses", "realcam.streaming", "realcam.bench",
             "realcam.metrics",
             "realcam.stream_cli", "realcam.demo_cli", "realcam.lightning_cli"),
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
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in sorted(imports_of(path)):
            hit = next((f for f in FORBIDDEN[layer] if name == f or name.startswith(f + ".")), None)
            if hit:
                bad.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not bad, f"realcam/{layer} must not import {FORBIDDEN[layer]}:\n" + "\n".join(bad)
