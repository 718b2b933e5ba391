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
