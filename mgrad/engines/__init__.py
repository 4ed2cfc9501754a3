"""Training engines for MGRAD-UNet."""

from mgrad.engines.trainer import MGRADTrainer, NonFiniteLossError

__all__ = ["MGRADTrainer", "NonFiniteLossError"]
