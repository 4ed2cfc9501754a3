"""Postprocessing of each volume (inversion, writing) in a worker thread while the next volume is inferred."""

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from monai.engines.utils import IterationEvents, engine_apply_transform
from monai.engines.workflow import Workflow

__all__ = ["BackgroundPostprocessing"]


class BackgroundPostprocessing:
    """Runs a workflow's ``postprocessing`` in one worker thread, in the order of the iterations, so that the
    inversion and writing of a volume overlap the loading and inference of the next ones.

    Inline, a volume's postprocessing (undoing the resampling, the argmax, compressing and writing the NIfTI) holds up
    the next volume's inference (about 35 ms an ACDC volume on a 2-core CPU, where an H200's network pass took about
    20 ms of the 55 ms each volume took end to end). Here each iteration's decollated batch and output items are
    handed to the worker when the model completes; at most ``max_pending`` items (volumes) wait for it (their
    outputs, on the engine's device, are kept until then), so a fast network does not pile up volumes in memory. The
    worker's torch operations release the GIL as the main thread's do, so the two overlap on a GPU and on a CPU with
    cores to spare.

    A failing postprocessing is reported through ``on_failure(batch item, exception)``, as an inline one would be
    (a :class:`mgrad.engines.VolumeEvaluator` records the case and goes on). :meth:`wait` returns once everything
    queued is done; :meth:`close` also stops the worker. ``engine.state.output`` keeps the network's outputs, not
    the postprocessed ones: handlers that need those (metrics) need the postprocessing inline.

    Args:
        transform: the postprocessing, as a workflow's ``postprocessing`` (applied to each decollated item).
        on_failure: called in the engine's thread with the item (``(batch, output)`` of one volume) and the error.
        max_pending: items (volumes) handed to the worker and not yet done, at most.

    Example::

        >>> background = BackgroundPostprocessing(postprocessing, on_failure=record)
        >>> background.attach(evaluator)   # an evaluator built with postprocessing=None and decollate=True
    """

    def __init__(
        self,
        transform: Callable[..., Any],
        on_failure: Callable[[tuple[Any, Any], BaseException], None],
        max_pending: int = 2,
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}.")
        self.transform, self.on_failure, self.max_pending = transform, on_failure, max_pending
        self._executor: ThreadPoolExecutor | None = None
        self._pending: deque[tuple[tuple[Any, Any], Future]] = deque()

    def attach(self, engine: Workflow) -> None:
        """Postprocess each of ``engine``'s iterations once its model completes (after its decollation)."""
        engine.add_event_handler(IterationEvents.MODEL_COMPLETED, self.submit)

    def submit(self, engine: Workflow) -> None:
        """Hand the iteration's decollated items to the worker, each once fewer than ``max_pending`` wait; the
        worker gets copies of the items' dicts, so ``engine.state`` keeps the network's outputs."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="postprocessing")
        batch, output = engine.state.batch, engine.state.output
        items = list(zip(batch, output)) if isinstance(batch, list) and isinstance(output, list) else [(batch, output)]
        for item in items:
            while len(self._pending) >= self.max_pending:
                self._finish_oldest()
            copies = tuple(dict(part) if isinstance(part, dict) else part for part in item)
            self._pending.append((item, self._executor.submit(engine_apply_transform, *copies, self.transform)))

    def wait(self) -> None:
        """Return once every item handed to the worker is postprocessed (failures reported)."""
        while self._pending:
            self._finish_oldest()

    def close(self) -> None:
        """:meth:`wait`, then stop the worker."""
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    def _finish_oldest(self) -> None:
        item, future = self._pending.popleft()
        error = future.exception()
        if error is not None:
            self.on_failure(item, error)
