"""ONNX: exporting a 2D segmentation network with dynamic batch and in-plane size, and running the exported model
through onnxruntime as a network that MONAI's inferers take."""

import copy
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.networks.utils import convert_to_onnx
from monai.utils import optional_import
from torch import Tensor, nn

from mgrad.writers import atomic_path

__all__ = ["ONNX_INPUT", "ONNX_OUTPUT", "OnnxNetwork", "export_onnx"]

ONNX_INPUT, ONNX_OUTPUT = "image", "pred"
# metadata of an exported network that takes only spatial sizes that are multiples of a number (``size_multiple``)
SIZE_MULTIPLE_KEY = "spatial_size_multiple"
# batch and both in-plane sizes are free; a network with n stages still needs sizes that are multiples of 2**(n-1)
DYNAMIC_AXES = {name: {0: "batch", 2: "height", 3: "width"} for name in (ONNX_INPUT, ONNX_OUTPUT)}


def export_onnx(
    network: nn.Module,
    filepath: str | os.PathLike,
    in_channels: int = 1,
    spatial_size: int = 64,
    dynamo: bool = False,
    opset_version: int | None = None,
    rtol: float = 1e-3,
    atol: float = 1e-3,
) -> Path:
    """Export the eval-mode ``network`` to the ONNX file ``filepath`` and check it with onnxruntime.

    The model takes ``image`` ``(B, in_channels, H, W)`` float32 and returns ``pred`` ``(B, out_channels, H, W)``,
    with B, H and W dynamic. It is traced at ``(2, in_channels, spatial_size, spatial_size)``, then onnxruntime's
    output on that input is compared with PyTorch's (``rtol``, ``atol``; ``AssertionError`` when it differs).
    A network's ``size_multiple`` (:class:`~mgrad.networks.MGRADUNet`'s) is kept in the model's metadata, so that
    :class:`OnnxNetwork` rejects the sizes the network rejects (the exported graph itself runs on any size).
    ``dynamo=False`` uses the TorchScript-based exporter (several times faster to export); ``True`` the
    ``torch.export``-based one, the default of ``torch.onnx.export`` since torch 2.9. Needs ``onnx`` and
    ``onnxruntime`` (``pip install mgrad[onnx]``).

    Args:
        network: a 2D network returning one tensor in eval mode (e.g. :class:`mgrad.networks.MGRADUNet`).
        filepath: where to write the ``.onnx`` file (through a temporary name); its folder is created.
        in_channels: input channels of ``network``.
        spatial_size: in-plane size of the example input; must be one the network accepts.
        dynamo: which ``torch.onnx`` exporter to use.
        opset_version: ONNX opset; ``None``: the exporter's default.
        rtol: relative tolerance of the onnxruntime check.
        atol: absolute tolerance of the onnxruntime check.

    Returns:
        The path written.

    Example:
        >>> net = MGRADUNet(spatial_dims=2, in_channels=1, out_channels=9)
        >>> export_onnx(net, "models/model.onnx", spatial_size=96)
    """
    for module in ("onnx", "onnxruntime"):
        if not optional_import(module)[1]:
            raise ImportError(f"ONNX export needs the '{module}' package: pip install onnx onnxruntime")
    example = torch.rand(2, in_channels, spatial_size, spatial_size)
    network = copy.deepcopy(network).to("cpu").eval()  # the caller's network keeps its device and mode
    with atomic_path(filepath) as tmp:
        model = convert_to_onnx(
            network,
            [example],
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            opset_version=opset_version,
            dynamic_axes=DYNAMIC_AXES,
            filename=str(tmp),
            verify=True,
            device=torch.device("cpu"),
            use_ort=True,
            rtol=rtol,
            atol=atol,
            use_trace=True,
            dynamo=dynamo,
        )
        multiple = getattr(network, "size_multiple", None)
        if isinstance(multiple, int):
            entry = model.metadata_props.add()
            entry.key, entry.value = SIZE_MULTIPLE_KEY, str(multiple)
            optional_import("onnx")[0].save(model, str(tmp))
    return Path(filepath)


class OnnxNetwork(nn.Module):
    """An exported ONNX model run by onnxruntime, called like the network it was exported from.

    ``forward(x)`` takes ``(B, C, H, W)`` on any device and returns the model's first output as a float32 tensor on
    ``x``'s device, so MONAI inferers (``SliceInferer``, ``SlidingWindowInferer``) and evaluators use it in place of
    the PyTorch network. It has no parameters and no gradient; ``train()``/``eval()`` change nothing. A model
    written by :func:`export_onnx` from a network with ``size_multiple`` raises ``ValueError`` for other sizes.

    Args:
        path: the ``.onnx`` file.
        providers: onnxruntime execution providers in order of preference; ``None``: CUDA where onnxruntime has it,
            then CPU.

    Example:
        >>> net = OnnxNetwork("models/model.onnx")
        >>> net(torch.rand(4, 1, 96, 96)).shape
        torch.Size([4, 9, 96, 96])
    """

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] | None = None) -> None:
        super().__init__()
        ort, has_ort = optional_import("onnxruntime")
        if not has_ort:
            raise ImportError("running an ONNX model needs the 'onnxruntime' package: pip install onnxruntime")
        if not Path(path).is_file():
            raise FileNotFoundError(f"ONNX model {path} not found: export one first (python -m mgrad export)")
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.path = str(path)
        self.session = ort.InferenceSession(self.path, providers=list(providers))
        self.input_name = self.session.get_inputs()[0].name
        multiple = self.session.get_modelmeta().custom_metadata_map.get(SIZE_MULTIPLE_KEY)
        self.size_multiple = int(multiple) if multiple is not None else None

    def forward(self, x: Tensor) -> Tensor:
        if self.size_multiple is not None and any(size % self.size_multiple for size in x.shape[2:]):
            raise ValueError(
                f"ONNX model {self.path} needs every spatial size to be a multiple of {self.size_multiple}, got "
                f"spatial size {list(x.shape[2:])}; resize or pad the input."
            )
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        out = self.session.run(None, {self.input_name: array})[0]
        return torch.from_numpy(out).to(x.device)
