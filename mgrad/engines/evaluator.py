"""Whole-volume evaluation that keeps going past a broken case and reports every failure at the end."""

import logging
from typing import Any

from ignite.engine import Events
from monai.data import Dataset
from monai.engines import SupervisedEvaluator

from mgrad.data.errors import read_error
from mgrad.engines.background import BackgroundPostprocessing
from mgrad.errors import root_cause

__all__ = ["ERROR_KEY", "TolerantDataset", "VolumeEvaluator", "CaseFailures", "raise_for_failures"]

ERROR_KEY = "error"
logger = logging.getLogger(__name__)


def _case_name(item: Any) -> str:
    if isinstance(item, dict):
        item = item.get("image", item)
    meta = getattr(item, "meta", None)
    if meta is not None and "filename_or_obj" in meta:
        item = meta["filename_or_obj"]
    if isinstance(item, (list, tuple)) and len(item) == 1:
        item = item[0]
    return str(item)


def _message(case: str, error: BaseException) -> str:
    cause = root_cause(error)
    if cause is not error and "LoadImage" in str(error):  # Compose's "applying transform <...LoadImaged ...>"
        return str(read_error(case, cause))
    error = cause
    text = str(error).strip() or type(error).__name__
    return text if case in text else f"{case}: {text}"


class TolerantDataset(Dataset):
    """``monai.data.Dataset`` whose items that fail to load or transform become ``{"error": message}``.

    The message names the file (the image path of the item) and the problem.
    """

    def _transform(self, index: int) -> Any:
        try:
            return super()._transform(index)
        except Exception as e:  # noqa: BLE001 - every failure becomes a reported case
            return {ERROR_KEY: _message(_case_name(self.data[index]), e)}


class CaseFailures(RuntimeError):
    """Some cases of a run failed; ``failures`` lists one message per case."""

    def __init__(self, failures: list[str], total: int) -> None:
        self.failures = failures
        lines = "\n".join(f"  {f}" for f in failures)
        super().__init__(f"{len(failures)} of {total} cases failed:\n{lines}")


class VolumeEvaluator(SupervisedEvaluator):
    """``SupervisedEvaluator`` over whole volumes that records a failing case and goes on with the next.

    A case fails where its item holds ``"error"`` (see :class:`TolerantDataset`) or where inference or
    postprocessing (e.g. inversion and saving) raises. ``engine.state.failures`` holds one message per failed case,
    naming its file; they are logged together when the run completes.

    Args:
        args, kwargs: those of ``monai.engines.SupervisedEvaluator``.
        background_postprocessing: postprocess each volume (``postprocessing``: inversion, writing) in a worker
            thread while the next one is inferred (:class:`mgrad.engines.background.BackgroundPostprocessing`, at
            most ``max_pending`` volumes waiting); ``run`` returns once all are done. For inference: handlers and
            metrics then see the network's outputs, not the postprocessed ones. Needs ``decollate=True``; a bool
            (``TypeError`` otherwise: a command line's ``"false"`` would read as true).
        max_pending: volumes waiting for the background postprocessing, at most.

    Example::

        >>> evaluator = VolumeEvaluator(device, loader, network, inferer=inferer, postprocessing=post,
        ...                             background_postprocessing=True)
        >>> evaluator.run(); raise_for_failures(evaluator)
    """

    def __init__(
        self, *args: Any, background_postprocessing: bool = False, max_pending: int = 2, **kwargs: Any
    ) -> None:
        if not isinstance(background_postprocessing, bool):  # "false" from a command line would read as true
            raise TypeError(f"background_postprocessing must be True or False, got {background_postprocessing!r}.")
        self.background: BackgroundPostprocessing | None = None
        if background_postprocessing and kwargs.get("postprocessing") is not None:
            if not kwargs.get("decollate", True):
                raise ValueError("background_postprocessing needs decollate=True.")
            self.background = BackgroundPostprocessing(kwargs.pop("postprocessing"), self._record, max_pending)
        super().__init__(*args, **kwargs)
        self.add_event_handler(Events.STARTED, self._reset_failures)
        if self.background is not None:
            self.background.attach(self)
            for event in (Events.EPOCH_COMPLETED, Events.TERMINATE):  # before COMPLETED's handlers read the results
                self.add_event_handler(event, lambda _: self.background.wait())
        self.add_event_handler(Events.COMPLETED, self._log_failures)

    def run(self, global_epoch: int = 1) -> None:
        """``SupervisedEvaluator.run``; with background postprocessing it returns once every volume handed over is
        postprocessed, also where the run stops early."""
        try:
            super().run(global_epoch)
        finally:
            if self.background is not None:  # what was queued is written even where the run stopped early
                self.background.close()

    def _record(self, item: tuple[Any, Any], error: BaseException) -> None:
        self.state.failures.append(_message(_case_name(item[0]), error))

    def _reset_failures(self, engine: "VolumeEvaluator") -> None:
        engine.state.failures = []

    def _log_failures(self, engine: "VolumeEvaluator") -> None:
        if engine.state.failures:
            logger.error(str(CaseFailures(engine.state.failures, engine.state.iteration)))

    def _iteration(self, engine: "VolumeEvaluator", batchdata: dict[str, Any]) -> dict[str, Any]:
        if ERROR_KEY in batchdata:
            engine.state.failures.extend(batchdata[ERROR_KEY])
            engine.state.output = {}
            return {}
        try:
            return super()._iteration(engine, batchdata)
        except Exception as e:  # noqa: BLE001 - the case is reported, the run goes on
            engine.state.failures.append(_message(_case_name(batchdata), e))
            engine.state.output = {}
            return {}


def raise_for_failures(evaluator: VolumeEvaluator) -> None:
    """Raise :class:`CaseFailures` after a run in which any case failed (a non-zero exit for the CLI)."""
    failures = getattr(evaluator.state, "failures", [])
    if failures:
        raise CaseFailures(failures, evaluator.state.iteration)
