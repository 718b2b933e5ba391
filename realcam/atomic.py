"""Writing a file so that nobody ever sees half of it (shared by every layer, like registry and geometry)."""
from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (str as utf-8) to ``path`` through a temporary file in the same folder, flushed to disk and
    renamed over it: a reader, or a run killed halfway, sees the old file or the new one, never a torn one.
    The folder is created if needed; the temporary ``.NAME.partial`` never outlives the call."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")       # same folder, so os.replace is an atomic rename
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def check_outputs(outputs: dict[str, str | os.PathLike | None], inputs: dict[str, str | os.PathLike | None],
                  folders: tuple[str, ...] = (), suffixes: dict[str, str] | None = None) -> None:
    """Refuse, before any work, output paths that would destroy an input or each other (ValueError naming both).

    ``outputs`` / ``inputs`` map an option name (``--out``) to a path (None: not given). A file output must not
    resolve to an input, to another output, or to an existing folder, and its nearest existing parent must be a
    writable folder. An output named in ``folders`` is a folder that the command fills (or replaces): no input
    may lie inside it. ``suffixes`` maps an output option to the file suffix it must have (``{"--out": ".json"}``).
    """
    given_in = {name: Path(p).expanduser().resolve() for name, p in inputs.items() if p is not None}
    given_out = {name: Path(p).expanduser().resolve() for name, p in outputs.items() if p is not None}
    for name, suffix in (suffixes or {}).items():
        if name in given_out and given_out[name].suffix.lower() != suffix:
            hint = given_out[name] / f"result{suffix}" if given_out[name].is_dir() else given_out[name].with_suffix(suffix)
            raise ValueError(f"{name} {outputs[name]}: give a {suffix} file name (for example {hint})")
    seen: dict[Path, str] = {}
    for name, path in given_out.items():
        for other, source in given_in.items():
            inside = name in folders and path in source.parents
            if path == source or inside:
                where = "is" if path == source else "holds"
                raise ValueError(f"{name} {outputs[name]} {where} the input {other} {inputs[other]}: writing it would "
                                 f"destroy that input; choose another {name}")
        if path in seen:
            raise ValueError(f"{name} and {seen[path]} are the same file {outputs[name]}: give each its own path")
        seen[path] = name
        if name not in folders and path.is_dir():
            raise ValueError(f"{name} {outputs[name]} is a folder: give a file name inside it")
        parent = next((p for p in path.parents if p.exists()), None)
        if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK):
            raise ValueError(f"{name} {outputs[name]}: cannot write there ({parent} is not a writable folder)")
