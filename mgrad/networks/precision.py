"""Convolutions that keep float32 accuracy in training where low precision is in force, for MGRAD-UNet's feedback.

The feedback adds ``lambda * (G - M)`` (``lambda = 1e-3``) to the RFB outputs: a change of about 0.5% of the logits.
float16 and bfloat16 autocast, and TF32 convolutions on CUDA (float16's 10-bit mantissa), round each convolution's
operands with a relative error of 2**-11 to 2**-8, as large as the change itself, so the second pass's change of the
logits is mostly rounding noise. :func:`use_feedback_precision` turns the convolutions of a module into
:class:`FeedbackPrecisionConv1d`/``2d``/``3d``, which in train mode, where low precision is in force, compute in
float32 instead:

- on CUDA as *split bfloat16* products (:func:`split_bfloat16_conv`): three float32 convolutions of the bfloat16
  parts and float32 remainders of the operands, whose products TF32 tensor cores compute exactly, for about 16 bits
  of mantissa (three TF32 convolutions cost less than one full float32 convolution). The backward pass runs in the
  autocast precision (one convolution backward, as without this module);
- elsewhere (CPU) as a plain float32 convolution.

The output is float32, so the elementwise work that follows (norms, activations, interpolation, sums) runs in
float32 too. In eval mode, and where no low precision is in force (plain float32 on CPU, float64), the convolutions
are exactly ``nn.ConvNd``'s; TorchScript compiles them as such.

A pass that carries no feedback (MGRAD-UNet's first pass, inside :func:`feedback_free_pass`) only computes the
feedback of the next one, whose change of the logits is linear in it: a relative error of the feedback is the same
relative error of that change, not a loss of it. There the convolutions keep the low precision where it keeps an
11-bit significand (float16 autocast, and TF32, PyTorch's default for float32 convolutions on a GPU: the full-size
network's feedback 1.8-2.2% off at initialisation) and compute in float32 under bfloat16 autocast (8 bits: 15% off).
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FeedbackPrecisionConv1d",
    "FeedbackPrecisionConv2d",
    "FeedbackPrecisionConv3d",
    "feedback_free_pass",
    "float32_needed",
    "in_feedback_free_pass",
    "low_precision_in_force",
    "split_bfloat16_conv",
    "use_feedback_precision",
]


AUTOCAST_DEVICE_TYPES = frozenset(
    t
    for t in ("cpu", "cuda", "xpu", "mps", "hpu", "mtia", "xla", "ipu", "maia", "privateuseone")
    if torch.amp.is_autocast_available(t)
)
"""The device types autocast can be enabled on (not ``"meta"``), read once: ``torch.compile`` of torch < 2.13 does
not trace ``torch.amp.is_autocast_available``, and each call of it in a compiled region broke the graph."""


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is enabled for ``device_type`` ("cpu", "cuda", ...)."""
    return device_type in AUTOCAST_DEVICE_TYPES and torch.is_autocast_enabled(device_type)


def low_precision_in_force(x: Tensor) -> bool:
    """True where a convolution of ``x`` would round its operands below float32: autocast enabled on ``x``'s device,
    or a float32 CUDA tensor with TF32 convolutions allowed (``torch.backends.cudnn.allow_tf32``, on by default)."""
    if autocast_enabled(x.device.type):
        return True
    return x.is_cuda and x.dtype == torch.float32 and torch.backends.cudnn.allow_tf32


_feedback_free = False
"""Whether the forward pass running now carries no feedback (see :func:`feedback_free_pass`). A module global, not a
class attribute: ``torch.compile`` guards a compiled region on a global it reads, where torch 2.11 did not guard on
a class attribute and ran the passes with feedback with the code compiled for the first pass."""


@contextmanager
def feedback_free_pass(active: bool = True) -> Iterator[None]:
    """Within: a forward pass that carries no feedback (``active``) or one that does (``False``); see the module's
    docstring. ``MGRADUNet.forward`` enters it for every pass, and its activation checkpointing again for each
    recomputation.

    Example::

        >>> with feedback_free_pass(feedback is None):
        ...     out = decoder(rfb_outputs)
    """
    global _feedback_free
    previous, _feedback_free = _feedback_free, active
    try:
        yield
    finally:
        _feedback_free = previous


def in_feedback_free_pass() -> bool:
    """Whether the code runs inside :func:`feedback_free_pass` (``active=True``)."""
    return _feedback_free


def float32_needed(x: Tensor) -> bool:
    """Whether a training convolution of ``x`` computes in float32: where low precision is in force
    (:func:`low_precision_in_force`), in a pass that carries feedback, and in one that carries none under bfloat16
    autocast."""
    if not low_precision_in_force(x):
        return False
    device_type = x.device.type
    if autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.bfloat16:
        return True
    return not _feedback_free  # read last: a compiled region is specialised on it only where it matters


def split_bfloat16(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(hi, lo)``, float32: ``hi`` is ``x`` rounded to bfloat16, ``lo = x - hi`` exactly (at most 2**-8 of ``x``)."""
    hi = x.bfloat16().float()
    return hi, x - hi


def split_bfloat16_conv(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    grad_dtype: torch.dtype,
) -> Tensor:
    """``conv(x, weight) + bias`` in float32 from bfloat16 parts and remainders (forward); backward in ``grad_dtype``.

    With ``x = x_hi + x_lo`` and ``weight = w_hi + w_lo`` (:func:`split_bfloat16`) the forward is
    ``conv(x_hi, w_hi) + conv(x_lo, w_hi) + conv(x_hi, w_lo)``: three float32 convolutions. TF32 represents the
    bfloat16 parts exactly and rounds the low parts to its 11 bits (an error of 2**-19 of the operand, where rounding
    them to bfloat16 would cost 2**-16 and two more passes over the input), and float32 holds every product exactly;
    the term left out, ``conv(x_lo, w_lo)``, is at most 2**-16 of the product. The backward pass is one convolution
    backward of ``x`` and ``weight`` in ``grad_dtype``.

    The parts are computed here, where ``torch.compile`` can fuse them with the work before them; the three
    convolutions are one operator, ``torch.ops.mgrad.split_bfloat16_product``, so that selective activation
    checkpointing keeps its output as it keeps a convolution's (``MGRADUNet(checkpointing="selective")``).

    Args:
        x: input ``(B, C_in, *spatial)``, any floating dtype.
        weight: ``(C_out, C_in / groups, *kernel)``; ``bias``: ``(C_out,)`` or ``None``.
        stride, padding, dilation, groups: as for ``F.conv2d`` (one entry per spatial dimension).
        grad_dtype: the dtype of the backward convolution (autocast's, or float32).

    Returns:
        ``(B, C_out, *spatial_out)``, float32.

    Example::

        >>> y = split_bfloat16_conv(x, conv.weight, conv.bias, [1, 1], [1, 1], [1, 1], 1, torch.float16)
    """
    with torch.no_grad():
        x_hi, x_lo = split_bfloat16(x.float())
        w_hi, w_lo = split_bfloat16(weight.float())
    return split_bfloat16_product(
        x, weight, bias, x_hi, x_lo, w_hi, w_lo, list(stride), list(padding), list(dilation), groups, grad_dtype
    )


def _convolution(x: Tensor) -> Callable[..., Tensor]:
    return (F.conv1d, F.conv2d, F.conv3d)[x.dim() - 3]


@torch.library.custom_op("mgrad::split_bfloat16_product", mutates_args=())
def split_bfloat16_product(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    x_hi: Tensor,
    x_lo: Tensor,
    w_hi: Tensor,
    w_lo: Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    grad_dtype: torch.dtype,
) -> Tensor:
    """The three convolutions of :func:`split_bfloat16_conv`, given the parts; ``x`` and ``weight`` for the
    backward pass, which gives gradients to them (and ``bias``) only."""
    conv, args = _convolution(x_hi), (stride, padding, dilation, groups)
    # the bias rides on the first convolution, the other two add in place: no further pass, no new tensor
    y = conv(x_hi, w_hi, None if bias is None else bias.float(), *args)
    y += conv(x_lo, w_hi, None, *args)
    y += conv(x_hi, w_lo, None, *args)
    return y


@split_bfloat16_product.register_fake
def _split_bfloat16_product_shape(x, weight, bias, x_hi, x_lo, w_hi, w_lo, stride, padding, dilation, groups, _):
    """The output's shape, dtype and layout, for ``torch.compile`` and other tracing (fake tensors)."""
    return _convolution(x_hi)(x_hi, w_hi, None if bias is None else bias.float(), stride, padding, dilation, groups)


def _save_for_backward(ctx, inputs, output) -> None:
    x, weight, bias, *_, stride, padding, dilation, groups, grad_dtype = inputs
    ctx.save_for_backward(x.to(grad_dtype), weight)
    ctx.conv_args = (stride, padding, dilation, groups, bias is not None)


def _backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
    x, weight = ctx.saved_tensors
    stride, padding, dilation, groups, has_bias = ctx.conv_args
    mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False]
    transposed, output_padding = False, [0] * len(stride)
    grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
        grad.to(x.dtype),
        x,
        weight.to(x.dtype),
        None,
        stride,
        padding,
        dilation,
        transposed,
        output_padding,
        groups,
        mask,
    )
    grad_b = grad.sum([0, *range(2, grad.dim())]) if has_bias and ctx.needs_input_grad[2] else None
    grad_x = None if grad_x is None else grad_x.float()
    grad_w = None if grad_w is None else grad_w.to(weight.dtype)
    return (grad_x, grad_w, grad_b, *[None] * 9)


split_bfloat16_product.register_autograd(_backward, setup_context=_save_for_backward)


SPLIT_PRODUCT_DEVICES = {"cuda"}
"""The device types whose float32 training convolutions run as split-bfloat16 products (:func:`split_bfloat16_conv`):
where TF32 tensor cores make three of them cheaper than one float32 convolution."""


class FeedbackPrecisionMixin:
    """The ``forward`` of :class:`FeedbackPrecisionConv1d`/``2d``/``3d`` (see the module's docstring)."""

    def forward(self, input: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            if self.training and float32_needed(input):
                return self.float32_forward(input)
        return self._conv_forward(input, self.weight, self.bias)

    @torch.jit.unused
    def float32_forward(self, input: Tensor) -> Tensor:
        device_type = input.device.type
        # the backward pass computes in autocast's dtype: read before autocast is disabled for the forward
        grad_dtype = torch.get_autocast_dtype(device_type) if autocast_enabled(device_type) else torch.float32
        with torch.autocast(device_type, enabled=False):
            if device_type not in SPLIT_PRODUCT_DEVICES:
                return self._conv_forward(input.float(), self.weight.float(), self.bias)
            return split_bfloat16_conv(
                input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups, grad_dtype
            )


class FeedbackPrecisionConv1d(FeedbackPrecisionMixin, nn.Conv1d):
    """``nn.Conv1d`` computing in float32 in train mode where low precision is in force."""


class FeedbackPrecisionConv2d(FeedbackPrecisionMixin, nn.Conv2d):
    """``nn.Conv2d`` computing in float32 in train mode where low precision is in force."""


class FeedbackPrecisionConv3d(FeedbackPrecisionMixin, nn.Conv3d):
    """``nn.Conv3d`` computing in float32 in train mode where low precision is in force."""


FEEDBACK_PRECISION_CONVS = {
    nn.Conv1d: FeedbackPrecisionConv1d,
    nn.Conv2d: FeedbackPrecisionConv2d,
    nn.Conv3d: FeedbackPrecisionConv3d,
}


def use_feedback_precision(module: nn.Module) -> nn.Module:
    """Turn every ``nn.Conv1d``/``2d``/``3d`` in ``module`` into its feedback-precision variant, in place.

    Parameters, buffers, state-dict keys and hooks are kept (only each convolution's class changes), so weights load
    and save as before.

    Args:
        module: the module whose convolutions change (zero padding only).

    Returns:
        ``module`` itself.

    Example::

        >>> decoder = use_feedback_precision(DifferentialDecoder(2, 64, 9, 5))
        >>> with torch.autocast("cpu", dtype=torch.bfloat16):
        ...     logits, stages = decoder([r.float() for r in rfb_outputs])  # float32 logits and stage features
    """
    for m in module.modules():
        variant = FEEDBACK_PRECISION_CONVS.get(type(m))
        if variant is None:
            continue
        if m.padding_mode != "zeros":
            raise ValueError(f"use_feedback_precision needs zero padding, got padding_mode={m.padding_mode!r}.")
        m.__class__ = variant
    return module
