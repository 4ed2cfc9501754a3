"""mgrad: MGRAD-UNet for MONAI (2D segmentation of 3D CT and MRI volumes)."""

__version__ = "0.1.0"
