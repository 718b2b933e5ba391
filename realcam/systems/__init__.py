"""LightningModules: they only wire injected parts (denoisers, codec, schedule) together."""
from realcam.systems.student import OdeInitModule, SelfForcingDMDModule, StudentModule
from realcam.systems.teacher import TeacherModule

__all__ = ["OdeInitModule", "SelfForcingDMDModule", "StudentModule", "TeacherModule"]
