"""``python -m mgrad demo``: MGRAD-UNet over a synthetic 3D volume through MONAI's SliceInferer."""

import time
from typing import Sequence

import torch
from monai.inferers import SliceInferer
from torch.utils.flop_counter import FlopCounterMode

from mgrad.networks import MGRADUNet


def demo(
    features: Sequence[int] = (64, 128, 256, 512, 1024),
    in_channels: int = 3,
    out_channels: int = 9,
    size: int = 224,
    slices: int = 4,
    seed: int = 0,
) -> dict:
    """Build MGRAD-UNet, segment a random ``size x size x slices`` volume slice by slice, print what it took.

    Prints the parameter count, the convolution FLOPs of one train-mode ``1 x in_channels x size x size``
    forward (all heads), the eval output shape and the time per slice; returns the same as a dict.
    """
    torch.manual_seed(seed)
    net = MGRADUNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, features=tuple(features))
    params = sum(p.numel() for p in net.parameters())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net.train()(torch.rand(1, in_channels, size, size))
    gflops = counter.get_total_flops() / 1e9

    volume = torch.rand(1, in_channels, size, size, slices)
    inferer = SliceInferer(spatial_dim=2, roi_size=(size, size), sw_batch_size=1)
    start = time.perf_counter()
    with torch.no_grad():
        logits = inferer(volume, net.eval())
    per_slice = (time.perf_counter() - start) / slices
    report = {
        "parameters": params,
        "gflops_per_forward": round(gflops, 2),
        "volume_shape": list(volume.shape),
        "output_shape": list(logits.shape),
        "seconds_per_slice": round(per_slice, 3),
    }
    print(f"MGRADUNet(in_channels={in_channels}, out_channels={out_channels}, features={tuple(features)})")
    print(f"  parameters:            {params:,}")
    print(f"  conv GFLOPs / forward: {gflops:.2f} (1x{in_channels}x{size}x{size}, train mode, all heads)")
    print(f"  SliceInferer:          {list(volume.shape)} -> {list(logits.shape)}")
    print(f"  eval time per slice:   {per_slice:.3f} s")
    return report
