"""MGRADTrainer: MONAI's SupervisedTrainer with MGRAD-UNet's gated feedback passes in each iteration."""

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.transforms import Decollated
from monai.utils import CommonKeys as Keys
from torch import Tensor, nn

__all__ = ["MGRADTrainer", "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; see :class:`MGRADTrainer` for which steps were applied."""


def unwrap(network: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel``/``DataParallel``/``torch.compile`` wrappers."""
    while True:
        inner = getattr(network, "module", None) or getattr(network, "_orig_mod", None)
        if inner is None:
            return network
        network = inner


class MGRADTrainer(SupervisedTrainer):
    """A :class:`monai.engines.SupervisedTrainer` whose iteration runs ``feedback_passes`` passes over the batch.

    Pass 1 runs without feedback; each later pass is fed the previous pass's detached decoder difference
    (``network.feedback_from(output)``). As released, every pass computes its loss and takes its own optimizer
    step (``step_per_pass=True``, 3 passes: 3 steps per batch); with ``step_per_pass=False`` the pass losses are
    summed and the batch takes one step. All other arguments are ``SupervisedTrainer``'s, and every MONAI/ignite
    handler works as with it. ``engine.state.output`` holds ``image``, ``label``, ``pred`` (the last pass's output,
    detached) and ``loss`` (the mean over passes); ``engine.state.pass_losses`` holds each pass's loss.

    A non-finite loss stops training with :class:`NonFiniteLossError` (naming the epoch, iteration and pass) without
    a host synchronisation per pass:

    - with an optimizer that skips a step on the device (a fused one, e.g. ``torch.optim.AdamW(..., fused=True)``;
      recommended on CUDA) or with the float16 gradient scaler, every step with a non-finite loss is skipped on
      the device, and each iteration's losses, copied to the host without blocking, are checked at the end of the
      next one (or of the epoch), once that one is queued: the host waits for the previous iteration at most,
      never for the one it has just queued, so the device always has an iteration's work before it. The error
      names the iteration whose loss was not finite;
    - otherwise on CPU (where reading a value costs no synchronisation) each pass's loss is checked before its step,
      which is then not applied;
    - otherwise on CUDA the losses are checked once at the end of the iteration: that iteration's steps are applied
      to the network in memory, but nothing is saved after the error (checkpoints already written are kept).

    Args:
        feedback_passes: passes per batch (3 as released; 1 is plain supervised training).
        step_per_pass: one optimizer step per pass (as released) or one per batch.
        amp: mixed precision: float16 autocast with a gradient scaler on CUDA, bfloat16 autocast on CPU.
        channels_last: run the network and its inputs in channels-last memory format (2D only).
        grad_clip_norm: clip the gradients' global norm to this value before each step (``None``: no clipping).

    Example::

        >>> net = MGRADUNet(spatial_dims=2, in_channels=1, out_channels=4)
        >>> trainer = MGRADTrainer(
        ...     device=torch.device("cuda"), max_epochs=300, train_data_loader=loader, network=net.cuda(),
        ...     optimizer=torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-4, fused=True),
        ...     loss_function=MGRADLoss(squared_pred=True), amp=True, channels_last=True,
        ... )
        >>> trainer.run()   # trainer.state.pass_losses: (3,), the last iteration's loss of each pass
    """

    def __init__(
        self,
        *args: Any,
        feedback_passes: int = 3,
        step_per_pass: bool = True,
        channels_last: bool = False,
        grad_clip_norm: float | None = None,
        decollate: bool = True,
        **kwargs: Any,
    ) -> None:
        if feedback_passes < 1:
            raise ValueError(f"feedback_passes must be at least 1, got {feedback_passes}.")
        if kwargs.get("accumulation_steps", 1) != 1:
            raise ValueError(
                "MGRADTrainer steps within each batch; gradient accumulation across batches is not supported."
            )
        with _no_scaler_warnings():
            super().__init__(*args, decollate=decollate, **kwargs)
        self.feedback_passes = feedback_passes
        self.step_per_pass = step_per_pass
        self.channels_last = channels_last
        self.grad_clip_norm = grad_clip_norm
        if channels_last:
            self.network.to(memory_format=torch.channels_last)
        self._unchecked: _PendingLosses | None = None  # an iteration's losses not yet checked
        # an epoch's last losses are checked when it ends (its skipped steps left the weights as they were)
        self.add_event_handler(Events.EPOCH_COMPLETED, MGRADTrainer._check_unchecked)
        self.add_event_handler(Events.COMPLETED, MGRADTrainer._check_unchecked)

    def _register_decollate(self) -> None:
        """MONAI's decollation of each iteration's batch and output, but with ``detach=False``: MONAI's
        ``detach=True`` turns every 0-d tensor into a Python number, so reading the loss (``.item()``) waited for the
        device every iteration. The items' ``loss`` stays a 0-d tensor on the device (handlers read it as MONAI's
        float: ``from_engine(["loss"], first=True)``); nothing in the output requires grad (the prediction and the
        losses are detached), so nothing else changes."""

        @self.on(IterationEvents.MODEL_COMPLETED)
        def _decollate_data(engine: "MGRADTrainer") -> None:
            transform = Decollated(keys=None, detach=False)
            if isinstance(engine.state.batch, (list, dict)):
                engine.state.batch = transform(engine.state.batch)
            if isinstance(engine.state.output, (list, dict)):
                engine.state.output = transform(engine.state.output)

    def run(self) -> None:
        """``SupervisedTrainer.run`` without the warnings of MONAI's building its CUDA gradient scaler (see
        :func:`_no_scaler_warnings`)."""
        with _no_scaler_warnings():
            return super().run()

    def _autocast(self, device: torch.device) -> torch.autocast:
        if device.type == "cuda":
            return torch.autocast("cuda", enabled=self.amp, **self.amp_kwargs)
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.amp)

    def _uses_scaler(self) -> bool:
        """float16 autocast on CUDA needs the gradient scaler; bfloat16 (``amp_kwargs={"dtype": torch.bfloat16}``,
        and always on CPU) has float32's range and needs none."""
        float16 = (self.amp_kwargs or {}).get("dtype", torch.float16) == torch.float16
        return bool(self.amp) and self.state.device.type == "cuda" and float16

    def _skips_on_device(self) -> bool:
        """Whether a step with a non-finite loss can be skipped on the device: by the gradient scaler, or by a fused
        optimizer given ``found_inf`` (the protocol ``torch.amp.GradScaler`` uses with it)."""
        return self._uses_scaler() or getattr(self.optimizer, "_step_supports_amp_scaling", False)

    def _step(self, loss: Tensor) -> None:
        scaler = self.scaler if self._uses_scaler() else None
        if scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        self.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if self.grad_clip_norm is not None:
            if scaler is not None:
                scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip_norm)
        if scaler is not None:  # skips the step where the gradients are not finite
            scaler.step(self.optimizer)
            scaler.update()
        elif self._skips_on_device():
            self.optimizer.found_inf = (~torch.isfinite(loss.detach())).float()
            self.optimizer.grad_scale = None
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf, self.optimizer.grad_scale
        else:
            self.optimizer.step()

    def _check_unchecked(self) -> None:
        """Check the losses of the last iteration that :meth:`_iteration` left unchecked (see the class docstring)."""
        if self._unchecked is not None:
            pending, self._unchecked = self._unchecked, None
            self._check_finite(pending.wait(), 0, pending.epoch, pending.iteration)

    def _check_finite(
        self, losses: Tensor, first_pass: int, epoch: int | None = None, iteration: int | None = None
    ) -> None:
        """Raise :class:`NonFiniteLossError` if any of ``losses`` (passes ``first_pass``, ...) is not finite;
        ``epoch`` and ``iteration`` (default: the current ones) name where they were computed."""
        if bool(torch.isfinite(losses).all()):
            return
        k = int((~torch.isfinite(losses)).nonzero()[0, 0])
        applied = not self._skips_on_device() and losses.numel() > 1
        epoch = self.state.epoch if epoch is None else epoch
        iteration = self.state.iteration if iteration is None else iteration
        raise NonFiniteLossError(
            f"Loss is {losses[k].item()} at epoch {epoch}, iteration {iteration}, "
            f"feedback pass {first_pass + k + 1}; training stopped, "
            + (
                "this iteration's steps are applied in memory and nothing is saved after this error "
                if applied
                else "the steps of non-finite losses were not applied "
            )
            + "(checkpoints already written are kept)."
        )

    def _iteration(self, engine: "MGRADTrainer", batchdata: dict[str, Tensor]) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        inputs, targets = batch[0], batch[1]
        args, kwargs = (batch[2], batch[3]) if len(batch) == 4 else ((), {})
        if engine.channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        engine.network.train()
        model = unwrap(engine.network)
        # where a step cannot be skipped on the device, a CPU checks each pass (a free read); CUDA once at the end
        check_each_pass = not engine._skips_on_device() and inputs.device.type != "cuda"

        feedback: list[Tensor] | None = None
        losses: list[Tensor] = []
        output: Any = None
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        for k in range(engine.feedback_passes):
            output = None  # the previous pass's output (its feedback is taken): freed before this pass's forward
            with engine._autocast(inputs.device):
                # pass 1 calls the network as any MONAI trainer does, so any network trains with feedback_passes=1
                extra = kwargs if feedback is None else {**kwargs, "feedback": feedback}
                output = engine.inferer(inputs, engine.network, *args, **extra)
                engine.fire_event(IterationEvents.FORWARD_COMPLETED)
                loss = engine.loss_function(output, targets).mean()
            engine.fire_event(IterationEvents.LOSS_COMPLETED)
            if check_each_pass:
                engine._check_finite(loss.detach().reshape(1), k)
            losses.append(loss)
            if k + 1 < engine.feedback_passes:
                feedback = model.feedback_from(output)
            if engine.step_per_pass:
                engine._step(loss)
                if k + 1 < engine.feedback_passes:
                    engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        if not engine.step_per_pass:
            engine._step(torch.stack(losses).sum())

        pass_losses = torch.stack([loss.detach() for loss in losses])
        if engine._skips_on_device():  # this iteration's non-finite steps were skipped: check the previous one's
            pending = _PendingLosses(pass_losses, engine.state.epoch, engine.state.iteration)
            engine._check_unchecked()
            engine._unchecked = pending
        elif not check_each_pass:
            engine._check_finite(pass_losses, 0)
        engine.state.output[Keys.PRED] = type(output)(*_detach(output)) if isinstance(output, tuple) else output
        engine.state.output[Keys.LOSS] = pass_losses.mean()
        engine.state.pass_losses = pass_losses
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


class _PendingLosses:
    """An iteration's pass losses on their way to the host: on CUDA copied into pinned memory without blocking, with
    an event marking their arrival, so that :meth:`wait` waits for that iteration's work only, not for the work
    queued after it; elsewhere the losses themselves."""

    def __init__(self, losses: Tensor, epoch: int, iteration: int) -> None:
        self.epoch, self.iteration = epoch, iteration
        self.losses, self.arrived = losses, None
        if losses.is_cuda:
            with torch.cuda.device(losses.device):
                self.losses = torch.empty(losses.shape, dtype=losses.dtype, pin_memory=True)
                self.losses.copy_(losses, non_blocking=True)
                self.arrived = torch.cuda.Event()
                self.arrived.record()

    def wait(self) -> Tensor:
        """The losses, on the host where they were on CUDA."""
        if self.arrived is not None:
            self.arrived.synchronize()
        return self.losses


@contextmanager
def _no_scaler_warnings() -> Iterator[None]:
    """Silence MONAI's Trainer building a CUDA GradScaler (in ``__init__`` and ``run``): on CPU, where this trainer
    runs bfloat16 autocast, which needs none (see ``_step``), the scaler warns and disables itself; on CUDA, MONAI
    builds it through ``torch.cuda.amp.GradScaler``, which torch deprecates with a warning in every run.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*GradScaler", category=UserWarning)
        warnings.filterwarnings("ignore", message=r".*GradScaler", category=FutureWarning)
        yield


def _detach(output: tuple) -> list:
    return [[t.detach() for t in x] if isinstance(x, list) else x.detach() for x in output]
