"""Experiment tracking with MONAI's bundle ``--tracking mlflow``: the best model recorded with the run."""

from collections.abc import Iterable
from typing import Any

from monai.handlers import MLFlowHandler
from monai.utils import ensure_tuple

__all__ = ["track_best_model"]


def track_best_model(handlers: Iterable[Any], path: str) -> None:
    """Add ``path`` (the best model, e.g. ``models/model.pt``) to the artifacts of each ``MLFlowHandler`` in
    ``handlers``, which log it when training completes.

    ``python -m monai.bundle run ... --tracking mlflow`` appends an ``MLFlowHandler`` to ``train#handlers``; without
    ``--tracking`` there is none and this does nothing. Call it from the config's ``initialize``:
    ``"$mgrad.tracking.track_best_model(@train#handlers, @ckpt_dir + '/model.pt')"``.

    Example:
        >>> track_best_model(trainer_handlers, "models/model.pt")
    """
    for handler in handlers:
        if isinstance(handler, MLFlowHandler):
            handler.artifacts = (*ensure_tuple(handler.artifacts), path)
