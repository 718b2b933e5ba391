"""Checking a device string once, at the edge, so a typo or a missing GPU is named with the fix."""
from __future__ import annotations

import torch


def checked_device(device: str | torch.device, field: str = "device") -> torch.device:
    """``torch.device(device)``, or a ValueError naming ``field`` when the string is not a device or this machine
    has no such device (a CUDA index past the GPU count, CUDA or MPS absent)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{field}={str(device)!r} is not a torch device: use cpu, cuda, cuda:N or mps") from err
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{field}={str(device)!r} but torch sees no CUDA GPU on this machine (none present, no "
                             f"driver, or a CPU-only torch build): use {field}=cpu")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"{field}={str(device)!r} but this machine has {count} CUDA GPU(s): use cuda:0 to "
                             f"cuda:{count - 1}")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"{field}={str(device)!r} but MPS is not available here: use {field}=cpu")
    return dev
