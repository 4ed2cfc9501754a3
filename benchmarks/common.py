"""Helpers shared by the benchmarks: peak resident memory, a fresh process per configuration, the machine (the
package's :func:`mgrad.hardware.machine_summary`), a trained MGRAD-UNet from its checkpoint."""

import json
import os
import resource
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from mgrad.hardware import machine_summary

BUNDLE_COMMON = Path(__file__).resolve().parents[1] / "bundle" / "configs" / "common.json"

__all__ = [
    "PRESET_WIDTHS",
    "memory_kib",
    "start_memory",
    "peak_mib_since",
    "PeakMemory",
    "exact_memory",
    "in_fresh_process",
    "machine_summary",
    "trained_mgrad_unet",
]

PRESET_WIDTHS = {
    name: {"features": tuple(preset["features"]), "rfb_channels": preset["rfb_channels"]}
    for name, preset in json.loads(BUNDLE_COMMON.read_text())["size_presets"].items()
}
"""MGRADUNet's widths in the bundle's presets, read from its ``size_presets``."""


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


class PeakMemory:
    """The peak memory of a measured stretch, from construction or :meth:`restart` on: on CUDA the peak of allocated
    GPU memory, all of it (a training step's or an inference's footprint) or, with ``above_start``, above what was
    allocated at the start (what one operation adds); elsewhere this process's peak resident memory above its
    resident memory at the start (Linux; see :func:`exact_memory`).

    Example::

        >>> memory = PeakMemory(device)
        >>> trainer.run()
        >>> memory.mib()
    """

    def __init__(self, device: Any, above_start: bool = False) -> None:
        self.cuda, self.above_start = device.type == "cuda", above_start
        self.restart()

    def restart(self) -> None:
        """Measure from now on."""
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            self.start = start_memory()

    def mib(self) -> float:
        """The peak since the start, in MiB."""
        if not self.cuda:
            return peak_mib_since(self.start)
        import torch

        return (torch.cuda.max_memory_allocated() - (self.start if self.above_start else 0)) / 2**20


def exact_memory() -> None:
    """Make the peak memory of the processes :func:`in_fresh_process` starts from now on follow their live tensors:
    glibc's mmap threshold fixed at 64 KiB (read by each new process's glibc at its start), so every freed tensor's
    memory goes back to the system, where by default glibc keeps freed blocks of up to 32 MiB. The page faults this
    costs slow every allocation."""
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(64 * 1024)


def in_fresh_process(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``func(*args, **kwargs)`` in a new (spawned) Python process, so that its peak memory is its own."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(func, *args, **kwargs).result()


def trained_mgrad_unet(path: str | Path, **kwargs: Any):
    """A 2D MGRAD-UNet with the weights of the checkpoint at ``path`` (a bundle's ``model.pt``), its widths and
    classes read from the weights; ``kwargs`` go to ``MGRADUNet`` (``feedback_precision``, ...)."""
    import torch

    from mgrad.networks import MGRADUNet

    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    levels = sorted({int(k.split(".")[1]) for k in state if k.startswith("encoder.")})
    network = MGRADUNet(
        spatial_dims=2,
        in_channels=state["encoder.0.conv1.conv.weight"].shape[1],
        out_channels=state["side_heads.heads.0.conv.weight"].shape[0],
        features=[state[f"encoder.{i}.conv1.conv.weight"].shape[0] for i in levels],
        rfb_channels=state["side_heads.heads.0.conv.weight"].shape[1],
        **kwargs,
    )
    network.load_state_dict(state)
    return network
