"""The MGRAD-UNet training loss: both decoders' logits plus deep supervision of the side predictions."""

from collections.abc import Sequence

from monai.losses import DeepSupervisionLoss, DiceCELoss
from torch import Tensor
from torch.nn.modules.loss import _Loss

from mgrad.losses.aggregated import AggregatedLoss

__all__ = ["MGRADLoss", "default_segmentation_loss"]

SIDE_WEIGHTS_RELEASED = (0.7, 0.7, 0.7, 0.7, 0.7)
SIDE_WEIGHTS_TABLE2 = (1.0, 1.0, 1.0, 1.0, 1.0)


def default_segmentation_loss(squared_pred: bool = False) -> DiceCELoss:
    """``L = 0.3 * CE + 0.7 * Dice``: softmax Dice over all classes, background included, pooled over the batch.

    These are the released code's weights; the paper's text gives them the other way round (0.3 Dice, 0.7 CE).

    Args:
        squared_pred: the Dice's denominator. ``True``: ``sum p**2 + sum t**2``, the released loss's form, so each
            class's Dice term is ``1 - (2 sum p t + 1e-5) / (sum p**2 + sum t**2 + 1e-5)``; ``False`` (MONAI's
            default): ``sum p + sum t``, whose gradient differs (by 14% on a typical case).

    Returns:
        a ``monai.losses.DiceCELoss`` taking logits ``(B, C, *spatial)`` and class indices ``(B, 1, *spatial)``.

    Example::

        >>> loss = default_segmentation_loss(squared_pred=True)
        >>> loss(torch.randn(2, 4, 32, 32), torch.randint(0, 4, (2, 1, 32, 32)))   # a scalar
    """
    return DiceCELoss(
        include_background=True,
        to_onehot_y=True,
        softmax=True,
        batch=True,
        squared_pred=squared_pred,
        lambda_dice=0.7,
        lambda_ce=0.3,
    )


class MGRADLoss(_Loss):
    """``L(P1) + L(P2) + deep supervision of the side predictions S_1..S_n`` (eq. 10-13).

    Args:
        loss: ``L``; default :func:`default_segmentation_loss` with ``squared_pred`` (which takes class-index
            targets; one-hot targets are turned into indices for it).
        deep_supervision: ``"aggregated"`` (default; :class:`AggregatedLoss` over all non-empty subsets of the side
            predictions, as the released Synapse code, Table 1), ``"weighted"`` (the paper's weighted loss, eq.
            12-13, through ``monai.losses.DeepSupervisionLoss``) or ``"none"``.
        side_weights: the weights ``w_i`` of ``"weighted"``, at least one per side prediction (the first ones are
            used; fewer raise ``ValueError``); default 0.7 each for the five of the default network (a variant in the
            released code). The released ACDC scripts (Table 2) train with all weights 1.0: :meth:`table2`.
        weight_mode: ``DeepSupervisionLoss``'s weight mode where ``side_weights`` is ``None``.
        squared_pred: the Dice denominator of the default ``L`` (see :func:`default_segmentation_loss`; ``True`` is
            the released form); only without ``loss``.

    ``forward(output, target)`` takes the network's train-mode :class:`~mgrad.networks.MGRADOutput` (or any
    sequence ``(pred1, pred2, features1, features2, side_preds)``) and a target of class indices ``(B, 1, ...)``
    or one-hot ``(B, C, ...)``, and returns a scalar. A plain tensor (the eval-mode fused logits) is scored with
    ``L`` alone.

    Example::

        >>> loss = MGRADLoss(squared_pred=True)                      # the released Table 1 loss
        >>> out = net(images)                                         # MGRADOutput, train mode
        >>> loss(out, labels)                                         # labels (B, 1, H, W): a scalar
        >>> MGRADLoss.table2()(out, labels)                           # the released ACDC (Table 2) loss
    """

    def __init__(
        self,
        loss: _Loss | None = None,
        deep_supervision: str = "aggregated",
        side_weights: Sequence[float] | None = SIDE_WEIGHTS_RELEASED,
        weight_mode: str = "same",
        squared_pred: bool = False,
    ) -> None:
        super().__init__()
        if loss is not None and squared_pred:
            raise ValueError("squared_pred sets the default loss; give it to your own loss instead.")
        self.index_targets = loss is None
        self.side_weights: list[float] | None = None
        self.loss = default_segmentation_loss(squared_pred) if loss is None else loss
        if deep_supervision == "aggregated":
            self.side_loss: _Loss | None = AggregatedLoss(self.loss)
        elif deep_supervision == "weighted":
            self.side_weights = None if side_weights is None else list(side_weights)
            self.side_loss = DeepSupervisionLoss(self.loss, weight_mode=weight_mode, weights=self.side_weights)
        elif deep_supervision == "none":
            self.side_loss = None
        else:
            raise ValueError(f'deep_supervision must be "aggregated", "weighted" or "none", got "{deep_supervision}".')
        self.deep_supervision = deep_supervision

    @classmethod
    def table2(cls, squared_pred: bool = True) -> "MGRADLoss":
        """The loss of the released ACDC scripts (the paper's Table 2): the weighted side loss with every weight 1.0
        and the released Dice form: ``MGRADLoss(deep_supervision="weighted", side_weights=(1.0,) * 5,
        squared_pred=True)``.

        Example::

            >>> loss = MGRADLoss.table2()
        """
        return cls(deep_supervision="weighted", side_weights=SIDE_WEIGHTS_TABLE2, squared_pred=squared_pred)

    def forward(self, output: Sequence | Tensor, target: Tensor) -> Tensor:
        if not isinstance(output, Tensor) and len(output) != 5:
            raise ValueError(
                "MGRADLoss takes the network's train-mode output (MGRADOutput: pred1, pred2, features1, features2, "
                f"side_preds) or one tensor of logits, got a {type(output).__name__} of {len(output)} items."
            )
        pred1 = output if isinstance(output, Tensor) else output[0]
        target = self._check_target(pred1, target)
        if isinstance(output, Tensor):
            return self.loss(output, target)
        total = self.loss(output[0], target) + self.loss(output[1], target)
        if self.side_loss is not None:
            side_preds = list(output[4])
            if self.side_weights is not None and len(self.side_weights) < len(side_preds):
                # DeepSupervisionLoss would silently fall back to weight_mode's weights
                raise ValueError(
                    f"side_weights holds {len(self.side_weights)} weights for {len(side_preds)} side predictions "
                    "(one per encoder stage): give one weight per side prediction."
                )
            total = total + self.side_loss(side_preds, target)
        return total

    def _check_target(self, pred: Tensor, target: Tensor) -> Tensor:
        if self.index_targets and (pred.dim() < 3 or pred.shape[1] < 2):  # the default loss
            raise ValueError(
                f"MGRADLoss takes logits (B, C, *spatial) of at least 2 classes, background included (its Dice and CE "
                f"take the softmax over C), got shape {list(pred.shape)}: a binary task has out_channels=2."
            )
        if target.shape[0] != pred.shape[0] or target.shape[2:] != pred.shape[2:]:
            raise ValueError(
                f"target shape {list(target.shape)} does not match the prediction {list(pred.shape)}: "
                "expected the same batch size and spatial size."
            )
        if target.shape[1] not in (1, pred.shape[1]):
            raise ValueError(
                f"target has {target.shape[1]} channels; expected 1 (class indices) or {pred.shape[1]} (one-hot)."
            )
        if self.index_targets and target.shape[1] > 1:
            target = target.argmax(dim=1, keepdim=True)
        return target
