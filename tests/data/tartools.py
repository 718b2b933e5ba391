"""Test helper: plant corruption in a finished shard."""
import io
import tarfile
from pathlib import Path


def rewrite_member(path: Path, member: str, data: bytes) -> None:
    """Replace one member's bytes in a tar (to plant a corrupt sample)."""
    with tarfile.open(path) as tar:
        items = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for m, payload in items:
            payload = data if m.name == member else payload
            m.size = len(payload)
            tar.addfile(m, io.BytesIO(payload))
