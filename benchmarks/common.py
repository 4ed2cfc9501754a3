"""Helpers shared by the benchmarks: peak resident memory, a fresh process per configuration, the machine."""

import os
import platform
import resource
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

__all__ = ["memory_kib", "start_memory", "peak_mib_since", "in_fresh_process", "machine_summary"]


def memory_kib(field: str) -> int:
    """VmRSS or VmHWM (peak, after a reset) of this process in KiB; the lifetime peak where /proc is missing."""
    try:
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith(field)).split()[1])
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def start_memory() -> int:
    """Reset this process's peak resident memory (Linux) and return its current resident memory in KiB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current size
    except OSError:
        pass
    return memory_kib("VmRSS")


def peak_mib_since(base_kib: int) -> float:
    """Peak resident memory since :func:`start_memory` returned ``base_kib``, above it, in MiB."""
    return (memory_kib("VmHWM") - base_kib) / 1024


def in_fresh_process(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``func(*args, **kwargs)`` in a new (spawned) Python process, so that its peak memory is its own."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(func, *args, **kwargs).result()


def machine_summary(threads: int = 0) -> str:
    """One line: CPU model and cores, native bfloat16 support, torch version and threads (``threads``, else torch's
    default), CUDA device if any."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    bf16 = [
        name
        for name, ok in (
            ("amx", torch.cpu._is_amx_tile_supported()),
            ("avx512_bf16", torch.cpu._is_avx512_bf16_supported()),
        )
        if ok
    ]
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{model}, {os.cpu_count()} cores ({threads or torch.get_num_threads()} torch threads), "
        f"native bf16: {', '.join(bf16) or 'no'}; torch {torch.__version__}; {cuda}"
    )
