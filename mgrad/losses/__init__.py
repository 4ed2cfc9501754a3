"""MGRAD-UNet's losses as MONAI-style losses (subclasses of ``torch.nn.modules.loss._Loss``)."""

from mgrad.losses.aggregated import AggregatedLoss
from mgrad.losses.mgrad_loss import MGRADLoss

__all__ = ["AggregatedLoss", "MGRADLoss"]
