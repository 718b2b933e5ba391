"""LightningModules: they only wire injected parts (denoisers, codec, schedule) together."""
from realcam.systems.teacher import TeacherModule

__all__ = ["TeacherModule"]
