"""Averaging softmax probabilities over test-time augmentations and over several trained networks.

:class:`SoftmaxEnsemble` wraps 2D networks: any MONAI inferer (``SliceInferer``, :class:`mgrad.inferers.
VolumeSliceInferer`) runs it like a single network, so the averaging happens slice batch by slice batch and never
holds more than one batch of extra outputs.
"""

import copy
import os
from collections.abc import Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import Tensor, nn

from mgrad.handlers import ModelLoader

__all__ = [
    "TTA_MODES",
    "EnsembleLoader",
    "SoftmaxEnsemble",
    "checkpoint_list",
    "load_networks",
    "network_copies",
    "tta_transforms",
]

TTA_MODES = ("none", "flip", "rot90")
_FLIPS: tuple[tuple[int, ...], ...] = ((), (-2,), (-1,), (-2, -1))


def tta_transforms(mode: str | None) -> list[tuple[tuple[int, ...], int]]:
    """The in-plane transforms of a TTA ``mode`` as ``(flip dims, rot90 turns)``; flips come before the turns.

    ``"none"`` (or ``None``/``False``): the identity only; ``"flip"`` (or ``True``): the four combinations of flipping
    the two in-plane axes; ``"rot90"``: those four, each also turned by 90 degrees (the eight symmetries of a square).

    Example:
        >>> len(tta_transforms("flip")), len(tta_transforms("rot90"))
        (4, 8)
    """
    if mode is None or mode is False or mode == "none":
        return [((), 0)]
    if mode is True or mode == "flip":
        return [(dims, 0) for dims in _FLIPS]
    if mode == "rot90":
        return [(dims, turns) for turns in (0, 1) for dims in _FLIPS]
    raise ValueError(f"unknown test-time augmentation {mode!r}; choose one of {TTA_MODES}")


class SoftmaxEnsemble(nn.Module):
    """Mean softmax of ``networks`` over the test-time augmentations ``tta`` of every 2D input, as log-probabilities.

    Each network sees every transformed copy of the batch; its output is transformed back and turned into
    probabilities, and the mean over all networks and copies is returned as its logarithm, so that ``softmax`` of
    the output gives the mean probabilities and ``argmax`` the most probable class: what follows an inferer
    (``AsDiscrete(argmax=True)``, inversion to the original grid, probability maps) works on it unchanged. With one
    network and no augmentation the network's own logits are returned.

    Args:
        networks: one network or several with the same ``out_channels``, each mapping ``(B, C, H, W)`` to
            ``(B, out_channels, H, W)`` logits in eval mode.
        tta: ``"none"``, ``"flip"`` or ``"rot90"`` (see :func:`tta_transforms`). ``"rot90"`` needs square inputs
            (H = W), as the bundle's slices are.

    Returns:
        ``forward(x)``: ``(B, out_channels, H, W)`` float32 log of the mean probabilities.

    Example:
        >>> nets = [torch.nn.Conv2d(1, 3, 3, padding=1) for _ in range(2)]
        >>> SoftmaxEnsemble(nets, tta="flip")(torch.rand(2, 1, 16, 16)).exp().sum(1).allclose(torch.ones(2, 16, 16))
        True
    """

    def __init__(self, networks: nn.Module | Sequence[nn.Module], tta: str | bool | None = "none") -> None:
        super().__init__()
        nets = [networks] if isinstance(networks, nn.Module) else list(networks)
        if not nets:
            raise ValueError("SoftmaxEnsemble needs at least one network")
        self.networks = nn.ModuleList(nets)
        self.transforms = tta_transforms(tta)

    def forward(self, x: Tensor) -> Tensor:
        if len(self.networks) == 1 and len(self.transforms) == 1:
            return self.networks[0](x)
        if any(turns for _, turns in self.transforms) and x.shape[-1] != x.shape[-2]:
            raise ValueError(f"rot90 test-time augmentation needs square slices, got {list(x.shape[-2:])}")
        total: Tensor | None = None
        for network in self.networks:
            for dims, turns in self.transforms:
                y = x.flip(dims) if dims else x
                y = network(y.rot90(turns, (-2, -1)) if turns else y)
                y = y.rot90(-turns, (-2, -1)) if turns else y
                probs = torch.softmax((y.flip(dims) if dims else y).float(), dim=1)
                total = probs if total is None else total + probs
        assert total is not None
        mean = total / (len(self.networks) * len(self.transforms))
        return mean.clamp_min(torch.finfo(mean.dtype).tiny).log()


def checkpoint_list(ckpt_paths: str | Sequence[str]) -> list[str]:
    """One checkpoint path or several as a non-empty list."""
    paths = [ckpt_paths] if isinstance(ckpt_paths, (str, os.PathLike)) else list(ckpt_paths)
    if not paths:
        raise ValueError("no checkpoint given: pass one path or several")
    return [str(p) for p in paths]


def network_copies(network: nn.Module, ckpt_paths: str | Sequence[str]) -> list[nn.Module]:
    """``network`` and a deep copy of it for each further checkpoint of ``ckpt_paths`` (not loaded yet: see
    :class:`EnsembleLoader`)."""
    return [network] + [copy.deepcopy(network) for _ in checkpoint_list(ckpt_paths)[1:]]


def _load(networks: Sequence[nn.Module], ckpt_paths: str | Sequence[str], map_location: Any, engine: Engine) -> None:
    for path, net in zip(checkpoint_list(ckpt_paths), networks, strict=True):
        ModelLoader(load_path=path, load_dict={"model": net}, map_location=map_location)(engine)


def load_networks(
    network: nn.Module, ckpt_paths: str | Sequence[str], map_location: str | torch.device = "cpu"
) -> list[nn.Module]:
    """``network`` loaded from the first of ``ckpt_paths`` and a copy of it loaded from each of the others.

    Every checkpoint is checked as :class:`mgrad.handlers.ModelLoader` checks one: a missing file or tensors that do
    not fit the network raise an error naming the file and the problem.

    Args:
        network: the network the checkpoints were trained as (the first checkpoint is loaded into it).
        ckpt_paths: one path or several (an ensemble, e.g. the models of the cross-validation folds).
        map_location: where the weights are loaded.

    Returns:
        one network per checkpoint, in the order of ``ckpt_paths``.

    Example:
        >>> nets = load_networks(net, ["models/fold0/model.pt", "models/fold1/model.pt"])  # doctest: +SKIP
    """
    networks = network_copies(network, ckpt_paths)
    _load(networks, ckpt_paths, map_location, Engine(lambda e, b: None))
    return networks


class EnsembleLoader:
    """Ignite handler: when the engine starts, loads checkpoint ``k`` of ``load_path`` into network ``k`` of
    ``ensemble`` (built with ``SoftmaxEnsemble(network_copies(network, load_path))``), each checked as
    :class:`mgrad.handlers.ModelLoader` checks one.

    Args:
        load_path: one checkpoint or several.
        ensemble: the :class:`SoftmaxEnsemble` of the inference.
        map_location: where the weights are loaded.

    Example:
        >>> ensemble = SoftmaxEnsemble(network_copies(net, ["a.pt", "b.pt"]), tta="flip")  # doctest: +SKIP
        >>> EnsembleLoader(["a.pt", "b.pt"], ensemble).attach(evaluator)  # doctest: +SKIP
    """

    def __init__(
        self, load_path: str | Sequence[str], ensemble: SoftmaxEnsemble, map_location: str | torch.device = "cpu"
    ) -> None:
        self.load_path, self.ensemble, self.map_location = load_path, ensemble, map_location

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        _load(list(self.ensemble.networks), self.load_path, self.map_location, engine)
