"""Helpers shared by the benchmarks: peak resident memory, a fresh process per configuration, the machine (the
package's :func:`mgrad.hardware.machine_summary`)."""

import resource
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

from mgrad.hardware import machine_summary

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
