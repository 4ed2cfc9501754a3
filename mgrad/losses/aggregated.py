"""Aggregated loss (Algorithm 1 of the paper): one loss term for every non-empty subset of the prediction maps."""

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.nn.modules.loss import _Loss

from mgrad.losses.aggregated_dice_ce import aggregated_dice_ce, fusable_dice_ce, fusable_shapes

__all__ = ["AggregatedLoss", "subset_matrix"]


def subset_matrix(n: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """The ``(2**n - 1, n)`` 0/1 matrix whose row ``s`` marks the maps in non-empty subset ``s`` (bits of ``s + 1``)."""
    codes = torch.arange(1, 2**n, device=device).unsqueeze(1)
    return ((codes >> torch.arange(n, device=device)) & 1).to(dtype)


class AggregatedLoss(_Loss):
    """Algorithm 1: ``loss(sum of the maps in S, target)`` for each of the ``2**n - 1`` non-empty subsets ``S``.

    The subset sums are formed in one step (a 0/1 subset matrix and one ``einsum``) and ``loss`` is evaluated on
    each of them (any loss: MONAI's Dice, DiceCE, DiceFocal, Tversky, GeneralizedDice, or your own). A softmax
    ``DiceCELoss`` on class-index targets (the MGRAD-UNet loss;
    :func:`~mgrad.losses.aggregated_dice_ce.fusable_dice_ce` says which settings) runs as one fused operation
    instead (:func:`~mgrad.losses.aggregated_dice_ce.aggregated_dice_ce`): the same values and gradients, computed in
    float32 (float64 for float64 maps), in under half the memory.

    Args:
        loss: the loss ``L(input, target) -> scalar`` of each subset sum, e.g. ``monai.losses.DiceCELoss``.
        reduction: over subsets: ``"sum"`` (Algorithm 1, as released), ``"mean"`` or ``"none"`` (one value a subset,
            in the order of :func:`subset_matrix`).
        fused: compute a fusable ``DiceCELoss`` as one operation (default); ``False`` evaluates it subset by subset
            like any other loss.

    ``forward(input, target)``: ``input`` is ``n`` prediction maps of one shape ``(B, C, *spatial)`` (a sequence, or
    a tensor ``(n, B, C, *spatial)``), ``target`` what ``loss`` takes, e.g. class indices ``(B, 1, *spatial)``.

    Returns:
        a scalar for ``"sum"`` and ``"mean"``, a ``(2**n - 1,)`` tensor for ``"none"``.

    Example::

        >>> loss = AggregatedLoss(DiceCELoss(softmax=True, to_onehot_y=True))
        >>> maps = [torch.randn(2, 9, 64, 64) for _ in range(5)]         # e.g. MGRADOutput.side_preds
        >>> loss(maps, torch.randint(0, 9, (2, 1, 64, 64)))              # sum over the 31 subsets
    """

    def __init__(self, loss: Callable[[Tensor, Tensor], Tensor], reduction: str = "sum", fused: bool = True) -> None:
        super().__init__(reduction=reduction)
        if reduction not in ("sum", "mean", "none"):
            raise ValueError(f'reduction must be "sum", "mean" or "none", got "{reduction}".')
        self.loss = loss
        self.fused = fused and fusable_dice_ce(loss)

    def forward(self, input: Sequence[Tensor] | Tensor, target: Tensor) -> Tensor:
        """``input``: n prediction maps of one shape ``(B, C, *spatial)``, as a sequence or stacked on dim 0."""
        maps = input if isinstance(input, Tensor) else torch.stack(_same_shape(input))
        subsets = subset_matrix(maps.shape[0], maps.dtype, maps.device)
        if self.fused and fusable_shapes(maps, target):
            losses = aggregated_dice_ce(maps, subsets, target, self.loss)
        else:
            sums = torch.einsum("sn,n...->s...", subsets, maps)
            losses = torch.stack([self.loss(subset_sum, target) for subset_sum in sums])
        if self.reduction == "sum":
            return losses.sum()
        if self.reduction == "mean":
            return losses.mean()
        return losses


def _same_shape(maps: Sequence[Tensor]) -> Sequence[Tensor]:
    if len(maps) == 0:
        raise ValueError("AggregatedLoss needs at least one prediction map.")
    shapes = {tuple(m.shape) for m in maps}
    if len(shapes) != 1:
        raise ValueError(f"AggregatedLoss needs prediction maps of one shape, got {sorted(shapes)}.")
    return maps
