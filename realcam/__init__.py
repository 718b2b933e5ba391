"""realcam: real-time, camera-controlled video-to-video generation.

Importing the package fills every registry with the built-in entries, timm style, so
``realcam.list_camera_encoders()`` works right after ``import realcam``.
"""
__version__ = "0.1.0"

from realcam.registry import (  # noqa: E402
    ALL_REGISTRIES,
    ATTENTION_BACKENDS,
    BACKBONES,
    CAMERA_ENCODERS,
    CODECS,
    LOOPAUG_STRATEGIES,
    MULTIVIEW_SOURCES,
    Registry,
    load_plugins,
)
from realcam import modules as _modules  # noqa: E402,F401  (registers built-ins)
from realcam import data as _data  # noqa: E402,F401
from realcam.pretrained import load_pretrained, save_pretrained  # noqa: E402

list_camera_encoders = CAMERA_ENCODERS.list
list_attention_backends = ATTENTION_BACKENDS.list
list_backbones = BACKBONES.list
list_codecs = CODECS.list
list_loopaug_strategies = LOOPAUG_STRATEGIES.list
list_multiview_sources = MULTIVIEW_SOURCES.list

__all__ = [
    "__version__", "Registry", "load_plugins", "ALL_REGISTRIES",
    "CAMERA_ENCODERS", "ATTENTION_BACKENDS", "BACKBONES", "CODECS", "LOOPAUG_STRATEGIES", "MULTIVIEW_SOURCES",
    "list_camera_encoders", "list_attention_backends", "list_backbones", "list_codecs",
    "list_loopaug_strategies", "list_multiview_sources", "load_pretrained", "save_pretrained",
]
