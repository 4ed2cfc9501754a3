"""Starting a training run from a checkpoint trained for other classes or input channels (fine-tuning).

Every tensor whose name and shape fit the new network is loaded; the others (typically the segmentation heads for
another number of classes, or the first convolution for another number of channels) keep their fresh
initialisation, and the report says which.
"""

import logging
import os
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.networks.utils import copy_model_state
from torch import nn

__all__ = ["PretrainedLoader", "load_pretrained"]

logger = logging.getLogger(__name__)


def load_pretrained(network: nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Load into ``network`` every tensor of checkpoint ``path`` whose name and shape fit; initialise the rest.

    Args:
        network: the network to start from the checkpoint (changed in place).
        path: a checkpoint written by the bundle (``{"model": state_dict, ...}``) or a bare state dict.

    Returns:
        ``{"loaded": [names], "left_out": {name: reason}, "unused": [checkpoint names not in the network]}``;
        ``left_out`` lists the network's tensors that kept their initialisation, with the shapes that differ.

    Example:
        >>> report = load_pretrained(MGRADUNet(2, 1, 4), "synapse/model.pt")  # doctest: +SKIP
        >>> report["left_out"]  # doctest: +SKIP
        {'msd.pred.conv.weight': 'checkpoint (9, 16, 1, 1), network (4, 16, 1, 1)', ...}
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained checkpoint {path} not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"pretrained checkpoint {path} cannot be read: {e}") from e
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"pretrained checkpoint {path} holds no model weights")
    own = network.state_dict()
    _, loaded, _ = copy_model_state(network, state, inplace=True)
    left_out = {}
    for name, tensor in own.items():
        if name in loaded:
            continue
        if name in state and hasattr(state[name], "shape"):
            left_out[name] = f"checkpoint {tuple(state[name].shape)}, network {tuple(tensor.shape)}"
        else:
            left_out[name] = "not in the checkpoint"
    if not loaded:
        raise ValueError(f"pretrained checkpoint {path} has no tensor that fits the network: is it another network?")
    return {"loaded": sorted(loaded), "left_out": left_out, "unused": sorted(set(state) - set(own))}


class PretrainedLoader:
    """Ignite handler: :func:`load_pretrained` into ``network`` when the engine starts, logging what was left out.

    Attach it before a resume loader, so that resuming an interrupted fine-tuning run restores its own weights.
    ``report`` holds the result after the engine started.

    Args:
        load_path: the pretrained checkpoint.
        network: the network being trained.

    Example:
        >>> PretrainedLoader("synapse/model.pt", network).attach(trainer)  # doctest: +SKIP
    """

    def __init__(self, load_path: str, network: nn.Module) -> None:
        self.load_path, self.network = load_path, network
        self.report: dict[str, Any] | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        self.report = load_pretrained(self.network, self.load_path)
        left_out = self.report["left_out"]
        logger.info(
            f"Pretrained weights from {self.load_path}: {len(self.report['loaded'])} tensors loaded, "
            f"{len(left_out)} initialised afresh"
            + (": " + "; ".join(f"{k} ({v})" for k, v in left_out.items()) if left_out else ".")
        )
