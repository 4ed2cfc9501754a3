"""MGRAD-UNet: multi-gated reverse attention multi-scale differential UNet (Scientific Reports, 2024)."""

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, NamedTuple

import torch
from monai.networks.layers.factories import Pool
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from mgrad.networks.blocks import DifferentialDecoder, ReceptiveFieldBlock, ResidualEncoderStage, SideHeads
from mgrad.networks.precision import (
    feedback_free_pass,
    float32_needed,
    in_feedback_free_pass,
    use_feedback_precision,
)

__all__ = ["MGRADUNet", "MGRADOutput", "MGRADUnet", "MgradUNet"]


class MGRADOutput(NamedTuple):
    """What :class:`MGRADUNet` returns in train mode; every list is ordered finest level first.

    Shapes below: ``B`` the batch, ``C`` ``out_channels``, ``F`` ``rfb_channels``, ``spatial`` the input's size.

    Example::

        >>> out = MGRADUNet(2, 1, 3, features=(8, 16, 32), rfb_channels=8)(torch.rand(2, 1, 32, 32))
        >>> out.pred1.shape, out.features1[2].shape, len(out.side_preds)   # (2, 3, 32, 32), (2, 8, 8, 8), 3
    """

    pred1: Tensor
    """Logits of the multi-scale differential decoder (MSD), ``(B, out_channels, *spatial)``."""
    pred2: Tensor
    """Logits of the gate-control reverse-attention differential decoder (GRAD), ``(B, C, *spatial)``."""
    features1: list[Tensor]
    """MSD stage features ``M_1..M_L``, level ``i`` of shape ``(B, F, *spatial / 2**i)``."""
    features2: list[Tensor]
    """GRAD stage features ``G_1..G_L``, shaped as ``features1``."""
    side_preds: list[Tensor]
    """SideConv logits ``S_1..S_L`` of the MSD stages, each upsampled to ``(B, C, *spatial)``."""


class MGRADUNet(nn.Module):
    """MGRAD-UNet, as in the authors' released model, for any ``spatial_dims`` (2 in the paper).

    A residual encoder of ``len(features)`` stages (max-pool 2 between them) feeds one receptive field block
    (RFB) per stage, each reducing its stage to ``rfb_channels``. Two differential pyramid decoders follow: the
    multi-scale differential decoder (MSD) and the gate-control reverse-attention differential decoder (GRAD),
    gated by the MSD's stage features. SideConv heads give one full-size side prediction per MSD stage.

    The gated feedback input (eq. 7) adds ``feedback_scale * (G_i - M_i)`` of the previous pass, detached, to
    the RFB outputs ``R_i`` (the released model adds it after the RFB, with a constant scale); see
    :meth:`feedback_from`. Without feedback (``feedback=None``) the network encodes normally.

    Differences from the released model: it takes ``in_channels`` as given (the released model repeats one channel
    to three), and the MSD has no copy of the GRAD's top gate convolution, which the released model builds but
    never uses (37k parameters fewer).

    Args:
        spatial_dims: number of spatial dimensions of the input.
        in_channels: number of input channels.
        out_channels: number of output channels (classes, background included).
        features: widths of the encoder stages; every spatial size must be a multiple of ``2**(len(features)-1)``.
        rfb_channels: width of the RFB outputs and of both decoders.
        feedback_scale: the factor ``lambda`` of the feedback signal.
        act: activation type and arguments (MONAI style).
        norm: normalisation type and arguments (MONAI style).
        checkpointing: activation checkpointing in training (``torch.utils.checkpoint``, non-reentrant): a
            checkpointed block keeps only its inputs and outputs in the forward pass and is recomputed in the
            backward pass. ``False``/``"none"``: off; ``True``/``"all"``: each encoder stage, each RFB and each
            decoder (the lowest memory, for about one more forward pass of time); ``"rfb"``: the receptive field
            blocks only (their many full-size maps are the largest share of the activations; less memory saved,
            less recomputed); ``"selective"``: the blocks of ``"all"``, but the output of every 3x3 convolution is
            kept (selective activation checkpointing, :func:`keep_convolution_outputs`), so the backward pass
            recomputes only the cheaper work between them: batch norms, activations, 1x1 and factorised 1xk
            convolutions, interpolation, sums and differences (a float32 training step of the full-size network
            at batch 12 kept 0.47 of the memory of none, ``"all"`` 0.39; at batch 2 on a CPU it ran at 0.82x the
            speed of none, ``"all"`` at 0.75x). Batch-norm running statistics are restored after each
            recomputation, so they are updated once per forward pass, exactly as without checkpointing. No effect in
            eval mode, without gradients or in TorchScript.
        feedback_precision: what computes in float32 in train mode where low precision is in force (autocast
            on the input's device, or float32 on CUDA with TF32 convolutions allowed). The feedback changes the
            logits by about 0.5% (``feedback_scale`` 1e-3), at the resolution of float16, bfloat16 and TF32, and the
            change is sensitive to rounding anywhere in the network. ``"full"`` (default): in a pass with feedback,
            every convolution and everything between them computes in float32 (on CUDA each convolution as a split
            bfloat16 product on TF32 tensor cores, on CPU as a float32 convolution; see
            :mod:`mgrad.networks.precision`); the change of the logits keeps float32's accuracy. A pass without
            feedback (the first) only computes the next pass's feedback, whose effect is linear in it: it keeps
            float16 and TF32 (the feedback then about 2% off, and with it the change) and computes in float32 under
            bfloat16. ``"split"``: the encoder and the RFBs stay in the low precision
            (their rounding is the same in every pass), the feedback is added to the RFB outputs in float32 and
            the decoders and side heads compute in float32: cheaper; the change is exact for the low-precision RFB
            outputs, which can differ from float32's enough to change it by tens of percent. ``"autocast"``: all in
            the low precision, as any network (fastest; the change is then mostly rounding noise). Plain float32 on
            CPU, float64 and eval mode compute the same for every choice: inference keeps the fast path.

    In train mode ``forward`` returns an :class:`MGRADOutput`; in eval mode only the fused logits
    ``pred1 + pred2`` (the released model predicts ``argmax(softmax(P1 + P2))``), so MONAI inferers, handlers
    and TorchScript export take it as any segmentation network.

    Example::

        >>> net = MGRADUNet(spatial_dims=2, in_channels=1, out_channels=9)
        >>> x = torch.rand(2, 1, 224, 224)
        >>> out = net(x)                          # train mode
        >>> out.pred1.shape, len(out.side_preds)   # (2, 9, 224, 224), 5
        >>> out = net(x, net.feedback_from(out))  # the next gated feedback pass
        >>> net.eval()(x).shape                   # (2, 9, 224, 224): fused logits
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (64, 128, 256, 512, 1024),
        rfb_channels: int = 64,
        feedback_scale: float = 1e-3,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = ("batch", {"affine": True}),
        checkpointing: bool | str = False,
        feedback_precision: str = "full",
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"MGRADUNet takes spatial_dims 1, 2 or 3, got {spatial_dims}.")
        if len(features) < 2:
            raise ValueError(f"MGRADUNet needs at least 2 encoder stages, got features={tuple(features)}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.rfb_channels = rfb_channels
        self.num_levels = len(features)
        self.size_multiple = 2 ** (self.num_levels - 1)
        self.feedback_scale = float(feedback_scale)
        mode = ("all" if checkpointing else "none") if isinstance(checkpointing, bool) else checkpointing
        if mode not in ("none", "all", "rfb", "selective"):
            raise ValueError(
                f'checkpointing must be False, True, "none", "all", "rfb" or "selective", got {checkpointing!r}.'
            )
        self.checkpointing: str = mode
        if feedback_precision not in ("full", "split", "autocast"):
            raise ValueError(f'feedback_precision must be "full", "split" or "autocast", got {feedback_precision!r}.')
        self.feedback_precision: str = feedback_precision

        widths = [in_channels, *features]
        self.encoder = nn.ModuleList(
            [ResidualEncoderStage(spatial_dims, widths[i], widths[i + 1], act, norm) for i in range(self.num_levels)]
        )
        self.pool = Pool["max", spatial_dims](kernel_size=2)
        self.rfbs = nn.ModuleList([ReceptiveFieldBlock(spatial_dims, f, rfb_channels, act, norm) for f in features])
        self.msd = DifferentialDecoder(spatial_dims, rfb_channels, out_channels, self.num_levels, act, norm)
        self.grad = DifferentialDecoder(
            spatial_dims, rfb_channels, out_channels, self.num_levels, act, norm, gated=True
        )
        self.side_heads = SideHeads(spatial_dims, rfb_channels, out_channels, self.num_levels)
        float32_parts = {"full": [self], "split": [self.msd, self.grad, self.side_heads], "autocast": []}
        for part in float32_parts[feedback_precision]:
            use_feedback_precision(part)

    def check_input(self, x: Tensor, feedback: list[Tensor] | None) -> None:
        """Raise ``ValueError`` for an input or a feedback the network cannot take."""
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"MGRADUNet(spatial_dims={self.spatial_dims}) expects input (B, C, {self.spatial_dims} spatial dims), "
                f"got shape {list(x.shape)}."
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"MGRADUNet(in_channels={self.in_channels}) got an input of {x.shape[1]} channels, "
                f"shape {list(x.shape)}."
            )
        for size in x.shape[2:]:
            if size % self.size_multiple != 0:
                raise ValueError(
                    f"MGRADUNet needs every spatial size to be a multiple of {self.size_multiple} "
                    f"({self.num_levels} stages), got spatial size {list(x.shape[2:])}; resize or pad the input."
                )
        if feedback is None:
            return
        if not torch.jit.is_scripting():
            _check_feedback_type(feedback)
        if len(feedback) != self.num_levels:
            raise ValueError(f"feedback must hold {self.num_levels} maps (one per level), got {len(feedback)}.")
        for i, f in enumerate(feedback):
            expected = [x.shape[0], self.rfb_channels] + [size >> i for size in x.shape[2:]]
            if list(f.shape) != expected:
                raise ValueError(
                    f"feedback map {i} has shape {list(f.shape)}, expected {expected} for the input {list(x.shape)}: "
                    "the feedback comes from the previous pass over the same batch (feedback_from)."
                )

    def forward(self, x: Tensor, feedback: list[Tensor] | None = None) -> Tensor | MGRADOutput:
        """Encode ``x``, add the feedback (if any) to the RFB outputs and decode with both decoders.

        Args:
            x: input ``(B, in_channels, *spatial)``; every spatial size a multiple of ``2**(len(features)-1)``.
            feedback: ``len(features)`` maps, level ``i`` of shape ``(B, rfb_channels, *spatial / 2**i)``, added to
                the RFB outputs (:meth:`feedback_from` of the previous pass's output); ``None`` for the first pass.

        Returns:
            In train mode an :class:`MGRADOutput` (decoder logits ``(B, out_channels, *spatial)``, stage features
            of both decoders, side logits); in eval mode the fused logits ``pred1 + pred2``,
            ``(B, out_channels, *spatial)``.

        Example::

            >>> net = MGRADUNet(spatial_dims=2, in_channels=1, out_channels=3, features=(8, 16, 32), rfb_channels=8)
            >>> out = net(torch.rand(2, 1, 32, 32))
            >>> out.pred2.shape, [f.shape[-1] for f in out.features1]   # (2, 3, 32, 32), [32, 16, 8]
        """
        if not torch.jit.is_tracing():  # a traced graph (ONNX export) would hold the checks as constants, with warnings
            self.check_input(x, feedback)
        if torch.jit.is_scripting():
            return self._forward(x, feedback)
        with feedback_free_pass(feedback is None):  # what computes in float32 differs (mgrad.networks.precision)
            return self._forward(x, feedback)

    def _forward(self, x: Tensor, feedback: list[Tensor] | None) -> Tensor | MGRADOutput:
        rfb_out: list[Tensor] = []
        h = x
        for i, (stage, rfb) in enumerate(zip(self.encoder, self.rfbs)):
            if i > 0:
                h = self.pool(h)
            h = stage(h) if torch.jit.is_scripting() else self._block(stage, "all", h)
            rfb_out.append(rfb(h) if torch.jit.is_scripting() else self._block(rfb, "rfb", h))
        if not torch.jit.is_scripting():
            if self.training and self.feedback_precision != "autocast" and float32_needed(rfb_out[0]):
                # the decoders compute in float32 where low precision is in force (see mgrad.networks.precision)
                rfb_out = [r.float() if r.dtype in (torch.float16, torch.bfloat16) else r for r in rfb_out]
        if feedback is not None:
            rfb_out = [r + f for r, f in zip(rfb_out, feedback)]
        if torch.jit.is_scripting():
            pred1, features1 = self.msd(rfb_out)
            pred2, features2 = self.grad(rfb_out, features1)
        else:
            pred1, features1 = self._block(self.msd, "all", rfb_out)
            pred2, features2 = self._block(self.grad, "all", rfb_out, features1)
        if not self.training:
            return pred1 + pred2
        return MGRADOutput(pred1, pred2, features1, features2, self.side_heads(features1))

    @torch.jit.unused
    def regions(self) -> list[nn.Module]:
        """The blocks that :func:`mgrad.networks.compile_regions` compiles one by one: each encoder stage, each
        receptive field block, both decoders and the side heads (every parameter lies in exactly one of them)."""
        return [*self.encoder, *self.rfbs, self.msd, self.grad, self.side_heads]

    def _block(self, block: nn.Module, checkpointed_by: str, *args: Any) -> Any:
        """``block(*args)``, checkpointed in training where ``checkpointing`` is ``"all"``, ``"selective"`` or
        ``checkpointed_by``."""
        if self.checkpointing in ("all", "selective", checkpointed_by) and self.training and torch.is_grad_enabled():
            return _checkpoint(block, *args, selective=self.checkpointing == "selective")
        return block(*args)

    @torch.jit.export
    def feedback_from(self, output: MGRADOutput) -> list[Tensor]:
        """The next pass's feedback (eq. 7): ``feedback_scale * (G_i - M_i)`` of a train-mode output, detached.

        Args:
            output: the previous pass's train-mode output.

        Returns:
            ``len(features)`` maps, level ``i`` of shape ``(B, rfb_channels, *spatial / 2**i)``, finest first.

        Example::

            >>> out = net(x)
            >>> out = net(x, net.feedback_from(out))   # the second pass
        """
        if not torch.jit.is_scripting():
            _check_train_output(output)
        return [self.feedback_scale * (g - m).detach() for g, m in zip(output.features2, output.features1)]


@torch.jit.unused
def _check_feedback_type(feedback: Any) -> None:
    if not isinstance(feedback, (list, tuple)) or not all(isinstance(f, Tensor) for f in feedback):
        raise ValueError(
            f"feedback must be a list of tensors, one per level (feedback_from), got {type(feedback).__name__}."
        )


@torch.jit.unused
def _check_train_output(output: Any) -> None:
    if not (hasattr(output, "features1") and hasattr(output, "features2")):
        raise ValueError(
            f"feedback_from takes the train-mode output of the network (an MGRADOutput), got {type(output).__name__}: "
            "in eval mode the network returns the fused logits only."
        )


class KeepBatchNormStatistics:
    """Context manager restoring the running statistics of every batch norm in ``module`` on exit.

    Used as the recomputation context of activation checkpointing: the recomputed forward normalises with the batch
    statistics as the original forward did, and its second update of the running statistics is undone.
    """

    def __init__(self, module: nn.Module) -> None:
        self.norms = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
        self.saved: list[list[Tensor | None]] = []

    def __enter__(self) -> "KeepBatchNormStatistics":
        self.saved = [
            [None if b is None else b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)]
            for m in self.norms
        ]
        return self

    def __exit__(self, *exc: Any) -> None:
        with torch.no_grad():
            for m, saved in zip(self.norms, self.saved):
                for buffer, value in zip((m.running_mean, m.running_var, m.num_batches_tracked), saved):
                    if buffer is not None and value is not None:
                        buffer.copy_(value)
        self.saved = []


def _checkpoint(module: Callable[..., Any], *args: Any, selective: bool = False) -> Any:
    """``module(*args)`` under non-reentrant activation checkpointing (``selective``: keeping the outputs that
    :func:`keep_convolution_outputs` names), batch-norm statistics updated once, the recomputation in the backward
    pass computing in the precision of the forward pass (with or without feedback)."""
    feedback_free = in_feedback_free_pass()

    def contexts() -> tuple[AbstractContextManager, AbstractContextManager]:
        if not selective:
            return nullcontext(), _recomputation(module, feedback_free)
        caching, cached = create_selective_checkpoint_contexts(keep_convolution_outputs)
        return caching, _recomputation(module, feedback_free, cached)

    return checkpoint(
        module,
        *args,
        use_reentrant=False,
        preserve_rng_state=False,  # MGRAD-UNet has no randomness (no dropout)
        context_fn=contexts,
    )


@contextmanager
def _recomputation(
    module: nn.Module, feedback_free: bool, cached: AbstractContextManager | None = None
) -> Iterator[None]:
    # the batch-norm statistics are saved and restored outside selective checkpointing's cache, which replays the
    # region's operations only
    with KeepBatchNormStatistics(module), feedback_free_pass(feedback_free), cached or nullcontext():
        yield


_CONVOLUTIONS = (torch.ops.aten.convolution.default, torch.ops.mgrad.split_bfloat16_product.default)


def keep_convolution_outputs(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    """The policy of ``MGRADUNet(checkpointing="selective")`` (``torch.utils.checkpoint``'s selective activation
    checkpointing): keep the output of every convolution whose kernel spans two or more axes (3x3, dilated or not),
    the split-bfloat16 products of :mod:`mgrad.networks.precision` included; recompute every other operation in the
    backward pass, the 1x1 convolutions and the receptive field blocks' factorised 1xk and kx1 ones among them.

    The kept outputs are what the backward pass of the batch norms after them needs; what they feed (the normalised,
    activated maps that the next convolution saves as its input, the sums, differences and interpolations of the
    decoders) costs one elementwise pass to recompute, and the convolutions recomputed cost less than the ones kept
    (at level 0: 64 multiply-adds an output for a 1x1, 192-448 for a 1xk, 576 for a 3x3; all the recomputed ones
    together about a tenth of the forward pass's).
    """
    if op in _CONVOLUTIONS and sum(k > 1 for k in args[1].shape[2:]) >= 2:  # args[1]: the weight
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


MGRADUnet = MgradUNet = MGRADUNet
