"""Ignite/MONAI handlers that mgrad's bundle uses beside MONAI's own."""

from mgrad.handlers.checkpoint import AtomicDiskSaver, CheckpointSaver, KeyMetricState, ModelLoader, ResumeCheckpointLoader
from mgrad.handlers.training import TimeBudget, TrainingHistory, ValidateAtEnd

__all__ = [
    "AtomicDiskSaver",
    "CheckpointSaver",
    "KeyMetricState",
    "ModelLoader",
    "ResumeCheckpointLoader",
    "TimeBudget",
    "TrainingHistory",
    "ValidateAtEnd",
]
