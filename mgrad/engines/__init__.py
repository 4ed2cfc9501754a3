"""Engines for MGRAD-UNet: the gated-feedback trainer and a failure-tolerant whole-volume evaluator."""

from mgrad.engines.evaluator import CaseFailures, TolerantDataset, VolumeEvaluator, raise_for_failures
from mgrad.engines.seeding import seed_training
from mgrad.engines.trainer import MGRADTrainer, NonFiniteLossError

__all__ = [
    "CaseFailures",
    "MGRADTrainer",
    "NonFiniteLossError",
    "TolerantDataset",
    "VolumeEvaluator",
    "raise_for_failures",
    "seed_training",
]
