"""Intensity presets: CT window, MRI per-volume normalisation, or nothing (data already in [0, 1])."""

from monai.config import KeysCollection
from monai.transforms import MapTransform, ScaleIntensityd, ScaleIntensityRanged

CT_WINDOW = (-125.0, 275.0)  # HU, TransUNet's Synapse preprocessing
INTENSITY_PRESETS = ("ct", "mri", "none")


def intensity_transforms(preset: str, keys: KeysCollection = "image") -> list[MapTransform]:
    """``ct``: clip to [-125, 275] HU and scale to [0, 1]; ``mri``: per-volume min-max to [0, 1] (as the SSL4MIS
    ACDC files are stored); ``none``: no change (TransUNet npz/h5 and SSL4MIS h5 are already in [0, 1])."""
    if preset == "ct":
        return [ScaleIntensityRanged(keys, a_min=CT_WINDOW[0], a_max=CT_WINDOW[1], b_min=0.0, b_max=1.0, clip=True)]
    if preset == "mri":
        return [ScaleIntensityd(keys, minv=0.0, maxv=1.0)]
    if preset == "none":
        return []
    raise ValueError(f"unknown intensity preset '{preset}'; choose one of {INTENSITY_PRESETS}")
