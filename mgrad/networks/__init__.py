"""MGRAD-UNet and its building blocks as MONAI-style networks."""

from mgrad.networks.blocks import DifferentialDecoder, ReceptiveFieldBlock, ResidualEncoderStage, SideHeads
from mgrad.networks.compile import compile_regions
from mgrad.networks.mgrad_unet import MGRADOutput, MGRADUNet, MGRADUnet, MgradUNet

__all__ = [
    "MGRADUNet",
    "MGRADUnet",
    "MgradUNet",
    "MGRADOutput",
    "ResidualEncoderStage",
    "ReceptiveFieldBlock",
    "DifferentialDecoder",
    "SideHeads",
    "compile_regions",
]
