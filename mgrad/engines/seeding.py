"""Seeding a training run without giving up cuDNN's fastest algorithms."""

import torch
from monai.utils import set_determinism

__all__ = ["seed_training"]


def seed_training(seed: int | None, deterministic: bool = False) -> None:
    """Seed every random generator (:func:`monai.utils.set_determinism`) and choose cuDNN's algorithms, for a
    training run (the bundle's ``train.json``) or an inference run (``inference.json``).

    MONAI's ``set_determinism(seed)`` also turns cuDNN's deterministic mode on and its autotuning off, which on a GPU
    runs MGRAD-UNet's convolutions with slower algorithms. Here the seed fixes the data order, the augmentations and
    the initial weights either way; ``deterministic`` chooses between bit-reproducible GPU runs (cuDNN deterministic,
    no autotuning) and the fastest algorithms (autotuned once per input shape, not bit-reproducible from run to run).
    No effect on the CPU's arithmetic.

    Args:
        seed: the seed; ``None`` restores the unseeded generators and cuDNN's flags as MONAI does.
        deterministic: cuDNN's deterministic mode (``True``) or autotuning (``False``).

    Example::

        >>> seed_training(0)                      # seeded; cuDNN autotunes
        >>> torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
        (True, False)
    """
    set_determinism(seed=seed)
    if seed is not None:
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic
