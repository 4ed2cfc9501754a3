"""A one-line description of the machine a run used, for result tables."""

import os
import platform
from pathlib import Path

import torch

__all__ = ["describe_hardware"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_hardware(device: str | torch.device | None = None) -> str:
    """The GPU (name and memory) for a CUDA ``device``, else the CPU model and core count; plus the torch version.

    ``device=None`` describes the device the bundle picks by default (the first GPU if there is one).

    Example:
        >>> describe_hardware("cpu").startswith("CPU")
        True
    """
    device = torch.device(device if device is not None else ("cuda:0" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        what = f"GPU {props.name} ({props.total_memory / 2**30:.0f} GiB)"
    else:
        what = f"CPU {_cpu_model()} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    return f"{what}, torch {torch.__version__}"
