"""Plain ``nn.Module`` building blocks; nothing here knows about Lightning."""
from realcam.modules import attention, flow, samplers, cond, camera, codecs, rope, cache, backbone  # noqa: F401
from realcam.modules import wan_vae  # noqa: F401  (registers the wan codec; diffusers loads only when one is built)
