"""write_atomic: the old file or the new one, never a torn one, and no temporary left behind."""
import pytest

from realcam.atomic import write_atomic


def test_write_replace_and_a_failed_write(tmp_path):
    path = tmp_path / "sub" / "index.json"
    assert write_atomic(path, "{}\n") == path and path.read_text() == "{}\n"       # folder made, text as utf-8
    write_atomic(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    with pytest.raises(TypeError):
        write_atomic(path, 12345)                                                   # fails after the temp exists
    assert path.read_bytes() == b"\x00\x01" and sorted(p.name for p in path.parent.iterdir()) == ["index.json"]
