"""``python -m mgrad demo``: MGRAD-UNet over a synthetic 3D volume through MONAI's SliceInferer."""

import time
from collections.abc import Sequence

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
    """Build MGRAD-UNet, segment a random ``size x size x slices`` volume slice by slice, report what it took.

    Args:
        features: encoder widths of the five levels.
        in_channels: input channels.
        out_channels: classes, background included.
        size: height and width of each slice.
        slices: slices of the random volume.
        seed: seed of the weights and the volume.

    Returns:
        ``{"network", "parameters", "gflops_per_forward" (convolution FLOPs of one train-mode
        ``1 x in_channels x size x size`` forward, all heads), "volume_shape", "output_shape"
        (``[1, out_channels, size, size, slices]``), "seconds_per_slice"}``; :func:`format_demo` lays it out.

    Example:
        >>> demo(features=(8, 16, 32, 64, 128), in_channels=1, size=32, slices=2)["output_shape"]
        [1, 9, 32, 32, 2]
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
        "network": f"MGRADUNet(in_channels={in_channels}, out_channels={out_channels}, features={tuple(features)})",
        "parameters": params,
        "gflops_per_forward": round(gflops, 2),
        "volume_shape": list(volume.shape),
        "output_shape": list(logits.shape),
        "seconds_per_slice": round(per_slice, 3),
    }
    return report


def format_demo(report: dict) -> str:
    """The :func:`demo` report as text lines."""
    return "\n".join(
        [
            report["network"],
            f"  parameters:            {report['parameters']:,}",
            f"  conv GFLOPs / forward: {report['gflops_per_forward']:.2f} (train mode, all heads)",
            f"  SliceInferer:          {report['volume_shape']} -> {report['output_shape']}",
            f"  eval time per slice:   {report['seconds_per_slice']:.3f} s",
        ]
    )
