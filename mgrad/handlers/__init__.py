"""Ignite/MONAI handlers that mgrad's bundle uses beside MONAI's own."""

from mgrad.handlers.checkpoint import (
    AtomicCheckpointSaver,
    AtomicDiskSaver,
    KeyMetricState,
    ModelLoader,
    ResumeCheckpointLoader,
)
from mgrad.handlers.training import TimeBudget, TrainingHistory, ValidateAtEnd, completed_epochs

__all__ = [
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "KeyMetricState",
    "ModelLoader",
    "ResumeCheckpointLoader",
    "TimeBudget",
    "TrainingHistory",
    "ValidateAtEnd",
    "completed_epochs",
]
