"""Dependencies tell the truth: every third-party module realcam imports belongs to a distribution that setup.cfg
declares in install_requires, or, for an optional feature, in one of its extras and then only imported inside the
function that needs it; and every distribution install_requires declares is imported somewhere in realcam."""
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


def _names(text: str) -> set[str]:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return {normalize(re.split(r"[\[<>=!~ ;]", line, maxsplit=1)[0]) for line in lines}


def setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg


def declared() -> set[str]:
    return _names(setup_cfg()["options"]["install_requires"])


def optional() -> set[str]:
    """Distributions of the extras that are not dev tooling (optional features: ``pip install realcam[NAME]``)."""
    extras = setup_cfg()["options.extras_require"]
    return set().union(*(_names(extras[name]) for name in extras if name != "dev")) - declared()


def top_level_imports() -> set[str]:
    """Third-party modules imported at a module's top level anywhere in realcam (not inside a function)."""
    found = set()
    for path in (REPO / "realcam").rglob("*.py"):
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


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
    need, extra, eager = declared(), optional(), top_level_imports()
    used: set[str] = set()
    for module, files in sorted(imported().items()):
        owners = {normalize(d) for d in dists.get(module, [])} or {normalize(module)}
        if owners & extra and not owners & need:        # an optional feature's library
            assert module not in eager, (f"{module} is an optional extra but {sorted(files)} import it at the top "
                                         f"of a module: import it inside the function that needs it")
            continue
        assert owners & need, (f"{module} (imported by {sorted(files)}) comes from {sorted(owners)}, which "
                               f"setup.cfg's install_requires does not declare")
        used |= owners & need
    assert need - used == set(), f"declared but never imported by realcam: {sorted(need - used)}"
