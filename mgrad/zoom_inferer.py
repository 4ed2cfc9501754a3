"""The published (TransUNet) test procedure as a MONAI inferer: per-slice cubic zoom, fp32 argmax, nearest zoom back."""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type
from scipy.ndimage import zoom
from torch import Tensor

__all__ = ["ZoomSliceInferer", "protocol_inferer", "zoom_slice_labels"]


@contextmanager
def _exact_float32(device: torch.device) -> Iterator[None]:
    """float32 arithmetic without autocast and, on CUDA, without TF32 convolutions and matrix products."""
    with torch.autocast(device.type, enabled=False):
        if device.type != "cuda":
            yield
            return
        saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def zoom_slice_labels(
    volume: np.ndarray, network: Callable[[Tensor], Tensor], roi_size: Sequence[int], batch_size: int, device: Any
) -> np.ndarray:
    """Label map of one channel-first volume ``(C, H, W, D)`` under the published test procedure.

    Every slice ``[:, :, :, z]`` is zoomed to ``roi_size`` with a cubic spline (``scipy.ndimage.zoom``, order 3;
    a slice already of that size is used as it is), the network runs on batches of ``batch_size`` slices in float32,
    the argmax over its output channels is zoomed back to ``(H, W)`` with nearest neighbour (order 0), and the
    slices are stacked again. Returns an int64 ``(H, W, D)`` array.
    """
    channels, height, width, depth = volume.shape
    size = (int(roi_size[0]), int(roi_size[1]))
    factors, back = (size[0] / height, size[1] / width), (height / size[0], width / size[1])
    zoomed = np.empty((depth, channels, *size), np.float32)
    for z in range(depth):
        for c in range(channels):
            plane = volume[c, :, :, z]
            zoomed[z, c] = plane if plane.shape == size else zoom(plane, factors, order=3)
    labels = np.empty((height, width, depth), np.int64)
    with torch.no_grad():
        for start in range(0, depth, batch_size):
            batch = torch.from_numpy(zoomed[start : start + batch_size]).to(device)
            argmax = network(batch).float().argmax(dim=1).cpu().numpy()
            for offset, plane in enumerate(argmax):
                same = plane.shape == (height, width)
                labels[:, :, start + offset] = plane if same else zoom(plane, back, order=0)
    return labels


class ZoomSliceInferer(Inferer):
    """The published test procedure (TransUNet's ``test_single_volume``, used by the paper) for a 2D network on
    ``(B, C, H, W, D)`` volumes: see :func:`zoom_slice_labels`. The network runs in float32 (no autocast, no TF32,
    no folded fast path); for MGRAD-UNet its eval-mode output is ``P1 + P2``, so the argmax is that of ``P1 + P2``.

    Returns the label maps one-hot encoded as float32 ``(B, num_classes, H, W, D)`` on the input's device, so that
    the bundle's postprocessing (``Invertd`` to the original orientation, then ``AsDiscreted(argmax=True)``) gives
    the label maps back unchanged.

    Args:
        roi_size: the network's input size ``(H', W')`` (224 x 224 in the paper).
        num_classes: the network's output channels (background included).
        sw_batch_size: slices per network call.

    Example:
        >>> import torch
        >>> net = torch.nn.Conv2d(1, 3, 1)
        >>> ZoomSliceInferer((32, 32), num_classes=3)(torch.rand(1, 1, 50, 40, 4), net).shape
        torch.Size([1, 3, 50, 40, 4])
    """

    def __init__(self, roi_size: Sequence[int], num_classes: int, sw_batch_size: int = 1) -> None:
        super().__init__()
        if len(roi_size) != 2:
            raise ValueError(f"roi_size must give the 2D input size (H, W), got {roi_size}")
        if sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be >= 1, got {sw_batch_size}")
        self.roi_size = tuple(int(s) for s in roi_size)
        self.num_classes, self.sw_batch_size = int(num_classes), sw_batch_size

    def __call__(self, inputs: Tensor, network: Callable[..., Tensor], *args: Any, **kwargs: Any) -> Tensor:
        if inputs.dim() != 5:
            raise ValueError(f"expected (B, C, H, W, D) volumes, got shape {tuple(inputs.shape)}")
        if isinstance(network, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            network = network.module
        volumes = torch.as_tensor(inputs).detach().float().cpu().numpy()
        outputs = []
        with _exact_float32(inputs.device):
            for volume in volumes:
                label = zoom_slice_labels(
                    volume, lambda x: network(x, *args, **kwargs), self.roi_size, self.sw_batch_size, inputs.device
                )
                index = torch.from_numpy(label).to(inputs.device)[None]
                one_hot = torch.zeros((self.num_classes, *label.shape), dtype=torch.float32, device=inputs.device)
                outputs.append(one_hot.scatter_(0, index, 1.0))
        output = torch.stack(outputs)
        if isinstance(inputs, MetaTensor):  # the input's metadata, as MONAI's inferers keep it (file names, affine)
            return convert_to_dst_type(output, MetaTensor([]).copy_meta_from(inputs, copy_attr=False))[0]
        return output


def protocol_inferer(protocol: str, default: Inferer, transunet: Inferer) -> Inferer:
    """The inferer of a test ``protocol``: ``default`` (MONAI's) for ``"default"``, ``transunet`` (a
    :class:`ZoomSliceInferer`) for ``"transunet"``; any other name raises ``ValueError`` listing both."""
    choices = {"default": default, "transunet": transunet}
    if protocol not in choices:
        raise ValueError(f"unknown protocol '{protocol}'; choose one of {sorted(choices)}")
    return choices[protocol]
