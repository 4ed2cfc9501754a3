"""MONAI transforms for MGRAD-UNet: volume preprocessing, 2D slice sampling and augmentation, data validation."""

from mgrad.transforms.augment import Augment2Dd
from mgrad.transforms.intensity import CT_WINDOW, INTENSITY_PRESETS, intensity_transforms
from mgrad.transforms.io import LoadVolumed
from mgrad.transforms.pipelines import train_transforms, volume_transforms
from mgrad.transforms.slices import ForegroundSlicesd, RandSliceSamplerd, foreground_slices
from mgrad.transforms.validate import ValidateCased

__all__ = [
    "Augment2Dd",
    "CT_WINDOW",
    "INTENSITY_PRESETS",
    "ForegroundSlicesd",
    "LoadVolumed",
    "RandSliceSamplerd",
    "ValidateCased",
    "foreground_slices",
    "intensity_transforms",
    "train_transforms",
    "volume_transforms",
]
