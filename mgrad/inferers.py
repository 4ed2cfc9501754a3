"""Whole-volume inference: MONAI's SliceInferer over the slice axis, with a fast path chosen by the hardware."""

import copy
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import SliceInferer
from monai.networks.blocks import Convolution
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval

from mgrad.hardware import cpuinfo_field

__all__ = [
    "ConvReLU",
    "VolumeSliceInferer",
    "cudnn_autotuning",
    "eager_autocast_in_torchscript",
    "fast_path_available",
    "fold_batch_norms",
    "fuse_conv_relu",
]


def fast_path_available(device: torch.device) -> bool:
    """True where low precision pays for inference: CUDA, CPUs with AMX, and AMD CPUs with AVX512-BF16.

    Measured with the full-size network, one thread: on an Intel Xeon with AMX the bfloat16 fast path ran 4.0-4.6x
    the plain float32 path, on an AMD EPYC with AVX512-BF16 3.35x; on an Intel Xeon with AVX512-BF16 but no AMX it
    ran 1.2x slower than the folded float32 path, which therefore stays in float32 there.
    """
    if device.type == "cuda":
        return True
    if device.type == "cpu":
        if torch.cpu._is_amx_tile_supported():
            return True
        return bool(torch.cpu._is_avx512_bf16_supported()) and cpuinfo_field("vendor_id") == "AuthenticAMD"
    return False


def fold_batch_norms(network: nn.Module) -> nn.Module:
    """An eval-mode copy of ``network`` with each batch norm that directly follows the convolution of a MONAI
    :class:`~monai.networks.blocks.Convolution` (norm first in its ``adn`` ordering) folded into that convolution's
    weights and bias. The copy computes the same function as ``network.eval()`` (up to rounding) with one elementwise
    pass less per block; ``network`` itself is not changed. Other modules are copied as they are."""
    folded = copy.deepcopy(network).eval()
    for module in folded.modules():
        if not isinstance(module, Convolution) or not isinstance(getattr(module, "adn", None), nn.Module):
            continue
        order = list(module.adn._modules)
        norm, conv = module.adn._modules.get("N"), module.conv
        if (
            order[:1] == ["N"]
            and isinstance(norm, _BatchNorm)
            and norm.track_running_stats
            and norm.running_mean is not None
            and isinstance(conv, nn.modules.conv._ConvNd)
            and not conv.transposed
        ):
            module.conv = fuse_conv_bn_eval(conv, norm)
            module.adn.N = nn.Identity()
    return folded


class ConvReLU(nn.Module):
    """``relu(conv(x))`` of a convolution with its bias (a folded batch norm's), as one cuDNN call on CUDA.

    PyTorch's cuDNN convolution leaves the bias to a separate addition, and the ReLU is another pass over the output:
    in the float16 fast path on an H200 these two took about 6 of the 20.2 ms of GPU time per batch of 12 full-size
    slices, about as much as the convolutions themselves (4.4 ms). ``torch.cudnn_convolution_relu`` is cuDNN's fused
    convolution, bias and activation. On CUDA it computes in the input's dtype, or autocast's where autocast is on
    (the weights cast once per dtype and kept); elsewhere it is the convolution and ``F.relu``, as the modules it
    replaces.

    Args:
        conv: the convolution (not transposed, zero padding given as numbers).
    """

    def __init__(self, conv: nn.modules.conv._ConvNd) -> None:
        super().__init__()
        self.conv = conv
        self._cast: dict[torch.dtype, tuple[Tensor, Tensor | None]] = {}

    def forward(self, x: Tensor) -> Tensor:
        conv = self.conv
        if not (x.is_cuda and torch.backends.cudnn.enabled):
            return F.relu(conv(x))
        dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else x.dtype
        if dtype not in self._cast:
            bias = None if conv.bias is None else conv.bias.detach().to(dtype)
            self._cast[dtype] = (conv.weight.detach().to(dtype), bias)
        weight, bias = self._cast[dtype]
        return torch.cudnn_convolution_relu(
            x.to(dtype), weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups
        )


def fuse_conv_relu(network: nn.Module) -> nn.Module:
    """Replace, in place, each MONAI :class:`~monai.networks.blocks.Convolution` of ``network`` that is a convolution
    followed by a ReLU alone (its norm folded away by :func:`fold_batch_norms`, no dropout) by a :class:`ConvReLU`.
    For the folded eval-mode copy of the fast path (``VolumeSliceInferer(fuse_activations=True)``); the function is
    the same, the parameters move into the new modules.

    Returns:
        ``network``.
    """
    for name, module in list(network.named_modules()):
        if not isinstance(module, Convolution) or not name or not isinstance(getattr(module, "adn", None), nn.Module):
            continue
        conv = module.conv
        rest = [m for m in module.adn.children() if not isinstance(m, nn.Identity)]
        if (
            isinstance(conv, nn.modules.conv._ConvNd)
            and not conv.transposed
            and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str)
            and len(rest) == 1
            and type(rest[0]) is nn.ReLU
        ):
            parent, _, child = name.rpartition(".")
            setattr(network.get_submodule(parent), child, ConvReLU(conv))
    return network


@contextmanager
def cudnn_autotuning(active: bool = True) -> Iterator[None]:
    """Within: cuDNN autotunes its convolutions (where ``active``, and not in cuDNN's deterministic mode); on exit
    the previous setting returns, so a validation inside a training run leaves the training's convolutions as
    that run chose them (untuned by default, see :func:`mgrad.engines.seed_training`)."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = saved or (active and not torch.backends.cudnn.deterministic)
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


class _EagerAutocastUsers:
    """How many calls are inside :func:`eager_autocast_in_torchscript` (in any thread), and the setting before."""

    lock = threading.Lock()
    count = 0
    saved = True


@contextmanager
def eager_autocast_in_torchscript(active: bool = True) -> Iterator[None]:
    """Within (where ``active``): TorchScript's own autocast pass is off, so autocast acts on a TorchScript network's
    operations as on a PyTorch network's, one by one. The fast path's frozen TorchScript network then computes the
    PyTorch network's very numbers under autocast, and as fast: 1.55-1.6x the unfrozen TorchScript network under
    TorchScript's pass in bfloat16 on an Intel Xeon with AMX (full-size network, one thread), 1.1x in float32.

    The setting is the process's: calls in several threads at once share it, and the setting from before the first
    returns when the last of them ends (a TorchScript network run under autocast elsewhere meanwhile has autocast act
    on its operations one by one too). Nothing where torch has no such setting."""
    set_mode = getattr(torch._C, "_jit_set_autocast_mode", None)
    if not active or set_mode is None:
        yield
        return
    users = _EagerAutocastUsers
    with users.lock:
        if users.count == 0:
            users.saved = set_mode(False)
        users.count += 1
    try:
        yield
    finally:
        with users.lock:
            users.count -= 1
            if users.count == 0:
                set_mode(users.saved)


class VolumeSliceInferer(SliceInferer):
    """``SliceInferer`` that runs a 2D network over every slice along ``spatial_dim`` (default 2: the last axis of
    ``(B, C, H, W, D)``), optionally on the fast path.

    The fast path runs an eval-mode copy of the network with its batch norms folded into the convolutions
    (:func:`fold_batch_norms`; for a TorchScript network, MONAI Deploy's, ``torch.jit.freeze`` of a channels-last copy,
    which folds them too, run under :func:`eager_autocast_in_torchscript`: the PyTorch network's numbers; kept until the
    network's weights change), in channels-last memory format, plus cuDNN autotuning on CUDA during the call
    (:func:`cudnn_autotuning`; a last, smaller batch of slices is padded to ``sw_batch_size``, so it tunes once); where
    the hardware computes low precision fast (:func:`fast_path_available`: CUDA, CPUs with AMX, AMD CPUs with
    AVX512-BF16) it runs under autocast (float16 on CUDA, bfloat16 on CPU). The output is float32 either way.
    ``fast=None`` (the default) takes the fast path everywhere, in float32 on other CPUs (folding and channels-last
    alone are 1.08-1.5x faster than the plain path there, with the same labels); ``True`` forces it with low precision
    (bfloat16 on any CPU, emulated and slow where not native), ``False`` runs the network as it is, in float32.

    ``fuse_activations=True`` also runs each convolution followed by a ReLU of the folded copy as one cuDNN call on
    CUDA (:class:`ConvReLU`; the same operations elsewhere). Off by default until timed on a GPU
    (``benchmarks/bench_inference.py --fused``, a part of the GPU check).

    ``compile=True`` also compiles the folded copy with ``torch.compile`` (static shapes: every batch of slices is
    padded to ``sw_batch_size`` on any device, so it compiles once for each precision; on CPU with
    Inductor's ``freezing``, which treats the folded weights as constants and prepacks them for oneDNN). The first
    call pays the compilation (tens of seconds; less from Inductor's on-disk cache), so it serves inference over many
    volumes with fixed weights, not validation during training, whose weights change every epoch (each change
    compiles again).

    Args:
        roi_size: the in-plane window of the 2D network (e.g. ``(224, 224)``).
        spatial_dim: the slice axis among the volume's spatial axes (2: the last of ``(B, C, H, W, D)``).
        fast: ``None``: the fast path, in low precision where the hardware supports it; ``True``: the fast path in
            low precision; ``False``: the plain float32 path.
        low_precision: overrides where the fast path runs under autocast (``False``: folded and channels-last in
            float32 on any device; ``None``: as ``fast`` says).
        fuse_activations: fuse each convolution with its ReLU in the fast path (see above).
        compile: compile the fast path's network (see above); no effect with ``fast=False``.
        compile_options: ``torch.compile``'s keyword arguments (``mode``, ``backend``, ``fullgraph``, ...).
        kwargs: ``SliceInferer``'s other arguments (``sw_batch_size``, ``overlap``, ``mode``, ...).

    ``__call__(inputs, network)`` takes a volume ``(B, C, *spatial)`` and an eval-mode 2D network.

    Returns:
        the network's output for every slice, stacked back along the slice axis: ``(B, out_channels, *spatial)``,
        float32.

    Example::

        >>> inferer = VolumeSliceInferer(roi_size=(224, 224), sw_batch_size=8)
        >>> with torch.inference_mode():
        ...     logits = inferer(torch.rand(1, 1, 224, 224, 40), net.eval())   # (1, out_channels, 224, 224, 40)
    """

    def __init__(
        self,
        roi_size: Sequence[int],
        spatial_dim: int = 2,
        fast: bool | None = None,
        low_precision: bool | None = None,
        fuse_activations: bool = False,
        compile: bool = False,
        compile_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        super().__init__(spatial_dim=spatial_dim, roi_size=roi_size, **kwargs)
        self.fast = fast
        self.low_precision = low_precision
        self.fuse_activations = fuse_activations
        self.compile = compile
        self.compile_options = dict(compile_options or {})
        self._folded: tuple[int, tuple[int, ...], nn.Module] | None = None  # (id, weight versions, copy)

    def uses_fast_path(self, device: torch.device) -> bool:
        """Whether the network runs folded and channels-last (every device unless ``fast=False``)."""
        return self.fast is not False

    def uses_low_precision(self, device: torch.device) -> bool:
        """Whether the fast path runs under autocast on ``device`` (float16 on CUDA, bfloat16 on CPU)."""
        if self.fast is False:
            return False
        if self.low_precision is not None:
            return self.low_precision
        return fast_path_available(device) if self.fast is None else self.fast

    def _fast_module(self, network: nn.Module) -> nn.Module:
        """The folded channels-last copy of an eval-mode ``network`` (compiled where ``compile``), rebuilt when any
        weight or buffer changed."""
        if getattr(network, "training", False):  # a frozen TorchScript network has no training flag: it is eval-only
            return network.to(memory_format=torch.channels_last)
        try:
            versions: tuple[int, ...] | None = tuple(t._version for t in (*network.parameters(), *network.buffers()))
        except RuntimeError:  # inference tensors have no version counter: fold again every call
            versions = None
        cached = self._folded
        if versions is None or cached is None or cached[0] != id(network) or cached[1] != versions:
            self._folded = None
            with torch.inference_mode(False), torch.no_grad():
                try:
                    if isinstance(network, torch.jit.ScriptModule):
                        # TorchScript folds its own batch norms, into constants that keep the weights' layout: a
                        # channels-last copy frozen, or the activations would run channels-first from the first
                        # convolution on (its one input channel leaves the input's layout ambiguous)
                        folded = torch.jit.freeze(copy.deepcopy(network).to(memory_format=torch.channels_last))
                    else:
                        folded = fold_batch_norms(network)
                        folded = fuse_conv_relu(folded) if self.fuse_activations else folded
                except Exception:  # a module that cannot be copied or frozen: run the network as it is
                    folded = network
                folded = folded.to(memory_format=torch.channels_last)
            if self.compile:
                folded = torch.compile(folded, dynamic=False, **self.compile_options)
            self._folded = (id(network), versions or (), folded)
        return self._folded[2]

    def __call__(self, inputs: Tensor, network: Callable[..., Tensor], *args: Any, **kwargs: Any) -> Tensor:
        if not self.uses_fast_path(inputs.device):
            return super().__call__(inputs, network, *args, **kwargs)
        device_type = inputs.device.type
        if isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            network = network.module  # inference needs no gradient synchronisation: run the module itself
        model = self._fast_module(network) if isinstance(network, nn.Module) else network

        one_shape = device_type == "cuda" or self.compile  # cuDNN autotunes, the compiler compiles, once

        def fast_network(x: Tensor, *a: Any, **k: Any) -> Tensor:
            n = x.shape[0]
            if one_shape and n < self.sw_batch_size:
                x = torch.cat([x, x[-1:].expand(self.sw_batch_size - n, *x.shape[1:])])
            x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
            return model(x, *a, **k)[:n].float()

        dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
        with (
            torch.autocast(device_type, dtype=dtype, enabled=self.uses_low_precision(inputs.device)),
            self._compiler_settings(device_type),
            cudnn_autotuning(device_type == "cuda"),
            eager_autocast_in_torchscript(isinstance(model, torch.jit.ScriptModule)),
        ):
            return super().__call__(inputs, fast_network, *args, **kwargs)

    def _compiler_settings(self, device_type: str) -> Any:
        """Inductor's ``freezing`` for a compiled fast path on CPU (weights as prepacked constants; 1.13x the
        uncompiled folded path on an Intel Xeon, one thread); elsewhere nothing."""
        if not self.compile or device_type != "cpu" or self.compile_options.get("backend", "inductor") != "inductor":
            return nullcontext()
        import torch._inductor.config

        return torch._inductor.config.patch(freezing=True)
