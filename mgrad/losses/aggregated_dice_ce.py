"""The aggregated loss with MONAI's softmax DiceCE as one fused operation.

Algorithm 1 scores ``2**n - 1`` subset sums of the side maps, 31 for the five of MGRAD-UNet, each ``(B, C, H, W)``.
Evaluated through ``monai.losses.DiceCELoss`` with autograd, every subset's softmax, log-softmax, one-hot products,
norms and their gradients are tensors of their own, 31 times the size of a map each. :func:`aggregated_dice_ce`
computes the same values and gradients (tested against ``DiceCELoss`` term by term) from one log-softmax: the
cross-entropy and the Dice intersections are read at the target's class (a gather, then one matrix product with the
target's one-hot rows), the predictions' sums are one reduction, and the backward pass is written out (softmax
Jacobian included). The only tensor it keeps for the backward pass is the subsets' probabilities, and its
temporaries are a few subsets' maps at a time. No operation waits for the device, and none accumulates with atomic
additions (each scatter writes one place once), so a GPU run in cuDNN's deterministic mode stays bit-reproducible.
It computes in float32 (float64 for float64 maps), autocast or not, as MONAI's loss does under autocast (softmax and
log-softmax run in float32 there).
"""

import torch
from monai.losses import DiceCELoss
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

__all__ = ["aggregated_dice_ce", "fusable_dice_ce", "fusable_shapes"]


def fusable_dice_ce(loss: object) -> bool:
    """Whether ``loss`` is a ``DiceCELoss`` that :func:`aggregated_dice_ce` computes exactly: softmax over the
    classes, class-index targets turned into one-hot (``to_onehot_y``), Dice pooled over the batch (``batch=True``),
    mean reductions, no class weights, no label smoothing, no ignored index, not Jaccard. The losses this package
    builds (:func:`~mgrad.losses.mgrad_loss.default_segmentation_loss`) are; any other loss, a subclass of
    ``DiceCELoss`` included (its ``forward`` may differ), runs unfused."""
    if type(loss) is not DiceCELoss:
        return False
    dice, ce = loss.dice, loss.cross_entropy
    return (
        dice.softmax
        and dice.to_onehot_y
        and dice.batch
        and not dice.sigmoid
        and dice.other_act is None
        and not dice.jaccard
        and dice.class_weight is None
        and dice.ignore_index is None
        and dice.reduction == "mean"
        and ce.weight is None
        and ce.label_smoothing == 0.0
        and ce.reduction == "mean"
    )


def fusable_shapes(maps: Tensor, target: Tensor) -> bool:
    """Whether :func:`aggregated_dice_ce` takes ``maps`` ``(n, B, C > 1, *spatial)`` and ``target``: class indices
    ``(B, 1, *spatial)``."""
    return maps.dim() >= 4 and maps.shape[2] > 1 and tuple(target.shape) == (maps.shape[1], 1, *maps.shape[3:])


def aggregated_dice_ce(maps: Tensor, subsets: Tensor, target: Tensor, loss: DiceCELoss) -> Tensor:
    """``loss(sum of the maps in S, target)`` for every subset ``S`` (a row of ``subsets``), for a ``loss`` that
    :func:`fusable_dice_ce` accepts.

    Args:
        maps: ``(n, B, C, *spatial)`` logits, ``C > 1``.
        subsets: ``(S, n)`` 0/1 rows, e.g. :func:`~mgrad.losses.aggregated.subset_matrix`.
        target: ``(B, 1, *spatial)`` class indices in ``[0, C)`` (any dtype).
        loss: the ``DiceCELoss`` whose settings (``lambda_dice``, ``lambda_ce``, ``squared_pred``,
            ``include_background``, ``smooth_nr``, ``smooth_dr``) are applied.

    Returns:
        ``(S,)`` losses in float32 (float64 for float64 maps), differentiable with respect to ``maps`` (once).
    """
    if not fusable_shapes(maps, target):
        raise ValueError(
            f"aggregated_dice_ce needs maps (n, B, C > 1, *spatial) and class indices (B, 1, *spatial); "
            f"got maps {list(maps.shape)} and target {list(target.shape)}."
        )
    dice = loss.dice
    settings = (
        float(loss.lambda_dice),
        float(loss.lambda_ce),
        bool(dice.squared_pred),
        0 if dice.include_background else 1,
        float(dice.smooth_nr),
        float(dice.smooth_dr),
    )
    return _AggregatedDiceCE.apply(maps, subsets, target, settings)


class _AggregatedDiceCE(torch.autograd.Function):
    """Forward: per subset ``s``, with ``p = softmax(z_s)`` over the classes, ``t`` the target's class at a pixel,
    ``N`` the pixels of the batch and ``K`` the classes in the Dice (``C``, or ``C - 1`` without background):

        ``L_s = lambda_ce * (-1/N) sum log p_t + lambda_dice * (1/K) sum_c (1 - (2 I_c + nr) / D_c)``,
        ``I_c = sum_{t = c} p_c``, ``D_c = sum p_c**q + |{t = c}| + dr`` (``q = 2`` for ``squared_pred``, else 1).

    Backward: ``dL/dp_c = lambda_dice/K * (a_c q p_c**(q-1) - b_c [t = c])`` with ``a_c = (2 I_c + nr) / D_c**2``,
    ``b_c = 2 / D_c``; through the softmax ``dz = p * (g - sum_k p_k g_k)``; plus ``lambda_ce/N * (p - onehot)``.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, maps: Tensor, subsets: Tensor, target: Tensor, settings: tuple) -> Tensor:
        lambda_dice, lambda_ce, squared, first, smooth_nr, smooth_dr = settings
        dtype = torch.promote_types(maps.dtype, torch.float32)
        with torch.autocast(maps.device.type, enabled=False):
            subsets, flat_maps = subsets.to(dtype), maps.to(dtype).flatten(1)
            labels = target.long()
            index = labels.unsqueeze(0).expand(subsets.shape[0], *labels.shape)
            prob = flat_maps.new_empty((subsets.shape[0], *maps.shape[1:]))
            logp_t = flat_maps.new_empty(index.shape)
            for rows in _chunks(subsets.shape[0]):
                sums = (subsets[rows] @ flat_maps).view(prob[rows].shape)
                logp = torch.log_softmax(sums, dim=2)
                logp_t[rows] = logp.gather(2, index[rows])
                torch.exp(logp, out=prob[rows])
            reduce = (1, *range(3, prob.dim()))
            pred_sum = torch.linalg.vector_norm(prob, 2, reduce).square() if squared else prob.sum(reduce)
            onehot = prob.new_zeros(labels.numel(), prob.shape[2]).scatter_(1, labels.reshape(-1, 1), 1.0)
            intersection = logp_t.exp().flatten(1) @ onehot
            denominator = pred_sum + onehot.sum(0) + smooth_dr
            dice = 1.0 - (2.0 * intersection + smooth_nr) / denominator
            cross_entropy = logp_t.flatten(1).sum(1).div(-labels.numel())
            losses = lambda_dice * dice[:, first:].mean(1) + lambda_ce * cross_entropy
        ctx.save_for_backward(prob, index, subsets, intersection, denominator)
        ctx.settings, ctx.maps_dtype = settings, maps.dtype
        return losses

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        prob, index, subsets, intersection, denominator = ctx.saved_tensors
        lambda_dice, lambda_ce, squared, first, smooth_nr, _ = ctx.settings
        with torch.autocast(prob.device.type, enabled=False):
            grad = grad.to(prob.dtype)
            scale = (grad * lambda_dice / (prob.shape[2] - first))[:, None]
            a = (2.0 if squared else 1.0) * scale * (2.0 * intersection + smooth_nr) / denominator.square()
            b = 2.0 * scale / denominator
            a[:, :first], b[:, :first] = 0.0, 0.0
            a = a.view(prob.shape[0], 1, prob.shape[2], *(1,) * (prob.dim() - 3))
            b_t = b.gather(1, index.flatten(1)).view(index.shape)
            ce_scale = (grad * lambda_ce / index[0].numel()).view(-1, *(1,) * (prob.dim() - 1))
            grad_maps = prob.new_zeros(subsets.shape[1], prob[0].numel())
            for rows in _chunks(prob.shape[0]):
                # with g = dL/dp = u - b [t = c] (u = a q p**(q-1)), dz = p (g - sum_k p_k g_k) + ce (p - onehot)
                # = p (u + r) - [t = c] (b_t p_t + ce), r = b_t p_t + ce - sum_k p_k u_k: four elementwise passes
                p, at = prob[rows], index[rows]
                target_term = b_t[rows] * p.gather(2, at) + ce_scale[rows]
                if squared:
                    dz = p * a[rows]
                    dz.add_(target_term - torch.linalg.vecdot(p, dz, dim=2).unsqueeze(2))
                else:
                    dz = a[rows] + (target_term - torch.linalg.vecdot(p, a[rows], dim=2).unsqueeze(2))
                dz.mul_(p).scatter_add_(2, at, -target_term)
                grad_maps.addmm_(subsets[rows].T, dz.flatten(1))
        return grad_maps.view(subsets.shape[1], *prob.shape[1:]).to(ctx.maps_dtype), None, None, None


def _chunks(subsets: int, size: int = 8) -> list[slice]:
    """Subsets a step of the forward and backward loops works on: its temporaries are ``size`` subsets' maps."""
    return [slice(start, start + size) for start in range(0, subsets, size)]
