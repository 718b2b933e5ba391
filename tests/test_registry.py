import importlib.metadata
import sys
import textwrap

import pytest

import realcam
from realcam import registry
from realcam.registry import Registry, UnknownNameError


def test_register_get_build_list():
    reg = Registry("widget")

    @reg.register("round_widget")
    class Round:
        def __init__(self, size=1):
            self.size = size

    @reg.register()
    def square_widget(size=2):
        return ("square", size)

    assert "round_widget" in reg and "square_widget" in reg
    assert reg.get("round_widget") is Round
    assert reg.build("round_widget", size=3).size == 3
    assert reg.build("square_widget") == ("square", 2)
    assert reg.list() == ["round_widget", "square_widget"]
    assert reg.list("sq*") == ["square_widget"]


def test_unknown_name_lists_close_matches():
    reg = Registry("widget")
    reg.register("plucker")(object)
    with pytest.raises(UnknownNameError, match=r"unknown widget 'pluker'; did you mean 'plucker'"):
        reg.get("pluker")


def test_duplicate_registration_is_an_error():
    reg = Registry("widget")
    reg.register("a")(int)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(float)
    reg.register("a", override=True)(float)
    assert reg.get("a") is float


def test_builtin_registries_are_filled():
    assert {"plucker", "extrinsics_mlp"} <= set(realcam.list_camera_encoders())
    assert {"math", "sdpa", "flex"} <= set(realcam.list_attention_backends())
    assert {"dit", "tiny", "wan1.3b"} <= set(realcam.list_backbones())
    assert "pixel" in realcam.list_codecs()


def test_entry_point_plugin_is_discovered(tmp_path, monkeypatch):
    (tmp_path / "fake_realcam_plugin.py").write_text(textwrap.dedent("""
        from realcam.modules.camera import CameraEncoder
        from realcam.registry import CAMERA_ENCODERS

        @CAMERA_ENCODERS.register("fake_plugin_encoder")
        class FakeEncoder(CameraEncoder):
            def forward(self, c2w, K, image_size, grid):
                return c2w.new_zeros(c2w.shape[0], c2w.shape[1], 1, self.dim)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = importlib.metadata.EntryPoint(name="fake", value="fake_realcam_plugin", group=registry.PLUGIN_GROUP)

    def fake_entry_points(group=None, **kw):
        return [ep] if group == registry.PLUGIN_GROUP else []

    monkeypatch.setattr(registry.importlib.metadata, "entry_points", fake_entry_points)
    assert "fake_plugin_encoder" not in realcam.list_camera_encoders()
    try:
        assert registry.load_plugins(force=True) == ["fake"]
        assert "fake_plugin_encoder" in realcam.list_camera_encoders()
        enc = realcam.CAMERA_ENCODERS.build("fake_plugin_encoder", dim=8)
        assert enc.dim == 8
    finally:
        realcam.CAMERA_ENCODERS._entries.pop("fake_plugin_encoder", None)
        sys.modules.pop("fake_realcam_plugin", None)


def test_broken_plugin_is_skipped_not_fatal(monkeypatch, caplog):
    ep = importlib.metadata.EntryPoint(name="broken", value="no_such_module_xyz", group=registry.PLUGIN_GROUP)
    monkeypatch.setattr(registry.importlib.metadata, "entry_points",
                        lambda group=None, **kw: [ep] if group == registry.PLUGIN_GROUP else [])
    assert registry.load_plugins(force=True) == []
    assert "failed to load" in caplog.text


def test_cli_loads_plugins_before_parsing(monkeypatch):
    from realcam import cli

    calls = []
    monkeypatch.setattr(cli, "load_plugins", lambda: calls.append("loaded"))
    assert cli.main(["--help"]) == 0
    assert calls == ["loaded"]
