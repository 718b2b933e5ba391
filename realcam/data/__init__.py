"""Multiview sources, LoopAug strategies, shards and the DataModule; nothing here knows about models.

Importing this package fills ``MULTIVIEW_SOURCES`` (``synthetic``, ``multicam_folder``) and
``LOOPAUG_STRATEGIES`` (``none``, ``pingpong``, ``orbit_return``, ``camera_cycle``).
"""
from realcam.data import clip, loopaug, multicam, synthetic, video  # noqa: F401  (fill the registries)
from realcam.data.clip import MultiviewClip
from realcam.data.loopaug import CameraCycle, LoopSequence, NoLoop, OrbitReturn, PingPong, revisit_map
from realcam.data.multicam import MulticamFolderSource
from realcam.data.render import Scene
from realcam.data.synthetic import SyntheticSource, benchmark_render, make_scene
from realcam.data.video import probe_video, read_video, side_by_side, write_video

__all__ = [
    "MultiviewClip", "LoopSequence", "NoLoop", "PingPong", "OrbitReturn", "CameraCycle", "revisit_map",
    "MulticamFolderSource", "Scene", "SyntheticSource", "benchmark_render", "make_scene",
    "probe_video", "read_video", "side_by_side", "write_video",
]
