"""The one-line description of the machine a run used, for result tables and benchmark output."""

import functools
import os
import platform
from pathlib import Path

import torch

__all__ = ["cpuinfo_field", "machine_summary"]


@functools.cache
def cpuinfo_field(name: str) -> str:
    """The first value of field ``name`` (``model name``, ``vendor_id``, ...) in /proc/cpuinfo; ``""`` where there is
    none or the file cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == name:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _cpu_model() -> str:
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


def _native_bf16() -> str:
    checks = {"amx": torch.cpu._is_amx_tile_supported(), "avx512_bf16": torch.cpu._is_avx512_bf16_supported()}
    return ", ".join(name for name, ok in checks.items() if ok) or "no"


def machine_summary(device: str | torch.device | None = None, threads: int = 0) -> str:
    """One line: the device a run used first, then the CPU and torch.

    A CUDA ``device`` gives ``GPU <name> (<memory> GiB); CPU ...``; a CPU device gives ``CPU ...`` and names any GPU
    the run left unused. The CPU part is its model, cores, torch threads (``threads``, else torch's current number)
    and native bfloat16 support (AMX, AVX512-BF16), then the torch version.

    Args:
        device: the run's device (``"cpu"``, ``"cuda:1"``, ...); ``None``: the device the bundle picks by default,
            the first GPU if there is one.
        threads: the torch threads the run used; 0: ``torch.get_num_threads()``.

    Returns:
        the description, one line.

    Example:
        >>> machine_summary("cpu").startswith("CPU ")
        True
    """
    device = torch.device(device if device is not None else ("cuda:0" if torch.cuda.is_available() else "cpu"))
    cpu = (
        f"CPU {_cpu_model()}, {os.cpu_count()} cores ({threads or torch.get_num_threads()} torch threads), "
        f"native bf16: {_native_bf16()}"
    )
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"GPU {props.name} ({props.total_memory / 2**30:.0f} GiB); {cpu}; torch {torch.__version__}"
    unused = f"; unused GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}; torch {torch.__version__}{unused}"
