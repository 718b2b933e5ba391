"""Dependencies tell the truth: every third-party module realcam imports belongs to a distribution that setup.cfg
declares in install_requires, and every declared distribution is imported somewhere in realcam."""
from __future__ import annotations

import ast
import configparser
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = [line.strip() for line in cfg["options"]["install_requires"].splitlines() if line.strip()]
    return {normalize(re.split(r"[\[<>=!~ ;]", line, maxsplit=1)[0]) for line in lines}


def imported() -> dict[str, set[str]]:
    """Top-level module -> files of realcam that import it (absolute imports of non-stdlib modules)."""
    found: dict[str, set[str]] = {}
    for path in (REPO / "realcam").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top != "realcam" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def test_every_import_is_declared_and_every_declaration_imported():
    dists = packages_distributions()
    need = declared()
    used: set[str] = set()
    for module, files in sorted(imported().items()):
        owners = {normalize(d) for d in dists.get(module, [])}
        assert owners, f"{module} (imported by {sorted(files)}) is not installed: declare it in setup.cfg"
        assert owners & need, (f"{module} (imported by {sorted(files)}) comes from {sorted(owners)}, which "
                               f"setup.cfg's install_requires does not declare")
        used |= owners & need
    assert need - used == set(), f"declared but never imported by realcam: {sorted(need - used)}"
