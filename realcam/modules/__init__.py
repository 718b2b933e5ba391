"""Plain ``nn.Module`` building blocks; nothing here knows about Lightning."""
from realcam.modules import attention, flow, samplers, cond, camera, codecs, wan_vae, rope, cache, backbone  # noqa: F401
