"""Seeding a run, and how cuDNN chooses its algorithms."""

import torch
from monai.utils import set_determinism

__all__ = ["seed_training"]


def seed_training(seed: int | None, deterministic: bool = False, benchmark: bool = False) -> None:
    """Seed every random generator (:func:`monai.utils.set_determinism`) and choose how cuDNN picks its algorithms,
    for a training run (the bundle's ``train.json``) or an inference run (``inference.json``).

    MONAI's ``set_determinism(seed)`` also turns cuDNN's deterministic mode on, which restricts the convolutions to
    its deterministic algorithms. Here the seed fixes the data order, the augmentations and the initial weights either
    way; ``deterministic`` gives bit-reproducible GPU runs (cuDNN's deterministic algorithms); otherwise cuDNN picks
    each algorithm by its heuristics or, with ``benchmark``, by timing the candidates for every new convolution
    (autotuning; not bit-reproducible from run to run). Autotuning is off by default: on an H200 (paper preset, batch
    12, 224x224) it took about 50 s before the first training iteration ended, tuning the convolutions of the three
    passes, and the iterations then ran at 0.35 s, as untuned steps do (0.357 s); without it the first ACDC epoch
    took 39.9 s, where it had taken 90 s. No effect on the CPU's arithmetic.

    Args:
        seed: the seed; ``None`` restores the unseeded generators and cuDNN's flags as MONAI does.
        deterministic: cuDNN's deterministic mode.
        benchmark: cuDNN's autotuning (not with ``deterministic``).

    Example::

        >>> seed_training(0)                      # seeded; cuDNN's heuristics choose
        >>> torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
        (False, False)
    """
    set_determinism(seed=seed)
    if seed is not None:
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = benchmark and not deterministic
