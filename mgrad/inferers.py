"""Whole-volume inference: MONAI's SliceInferer over the slice axis, with a fast path chosen by the hardware."""

from typing import Any, Callable, Optional, Sequence

import torch
from monai.inferers import SliceInferer
from torch import Tensor

__all__ = ["VolumeSliceInferer", "fast_path_available"]


def fast_path_available(device: torch.device) -> bool:
    """True on CUDA and on CPUs with native bfloat16 arithmetic (AMX or AVX512-BF16), where low precision pays."""
    if device.type == "cuda":
        return True
    if device.type == "cpu":
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    return False


class VolumeSliceInferer(SliceInferer):
    """``SliceInferer`` that runs a 2D network over every slice along ``spatial_dim`` (default 2: the last axis of
    ``(B, C, H, W, D)``), optionally on the fast path.

    The fast path is autocast (bfloat16 on CPU, float16 on CUDA) with channels-last memory format, plus cuDNN
    autotuning on CUDA; the output is float32 either way. ``fast=None`` takes it where
    :func:`fast_path_available` says the hardware supports it; ``True``/``False`` force it on or off.
    Other arguments are ``SliceInferer``'s (``roi_size``, ``sw_batch_size``, ``overlap``, ...).
    """

    def __init__(self, roi_size: Sequence[int], spatial_dim: int = 2, fast: Optional[bool] = None, **kwargs: Any):
        super().__init__(spatial_dim=spatial_dim, roi_size=roi_size, **kwargs)
        self.fast = fast

    def uses_fast_path(self, device: torch.device) -> bool:
        return fast_path_available(device) if self.fast is None else self.fast

    def __call__(self, inputs: Tensor, network: Callable[..., Tensor], *args: Any, **kwargs: Any) -> Tensor:
        if not self.uses_fast_path(inputs.device):
            return super().__call__(inputs, network, *args, **kwargs)
        device_type = inputs.device.type
        if device_type == "cuda":
            torch.backends.cudnn.benchmark = True
        if isinstance(network, torch.nn.Module):
            network.to(memory_format=torch.channels_last)

        def fast_network(x: Tensor, *a: Any, **k: Any) -> Tensor:
            x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
            return network(x, *a, **k).float()

        dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
        with torch.autocast(device_type, dtype=dtype):
            return super().__call__(inputs, fast_network, *args, **kwargs)
