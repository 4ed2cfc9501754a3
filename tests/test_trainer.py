import math

import pytest
import torch
from ignite.engine import Events
from monai.handlers import StatsHandler, from_engine

from mgrad.engines import MGRADTrainer, NonFiniteLossError, seed_training
from mgrad.engines.trainer import _PendingLosses
from mgrad.losses import MGRADLoss
from mgrad.networks import MGRADUNet


def toy_batches(n: int = 4, size: int = 16, seed: int = 0) -> list:
    """Bright squares on noise: class 1 inside the square, 0 elsewhere."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        label = torch.zeros(2, 1, size, size, dtype=torch.long)
        for b in range(2):
            r, c = torch.randint(0, size // 2, (2,), generator=g).tolist()
            label[b, 0, r : r + size // 2, c : c + size // 2] = 1
        image = label.float() + 0.3 * torch.randn(label.shape, generator=g)
        batches.append({"image": image, "label": label})
    return batches


class RecordingNet(MGRADUNet):
    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__(2, 1, 2, features=(4, 8, 16), rfb_channels=4)
        self.calls: list = []

    def forward(self, x, feedback=None):
        self.calls.append(feedback)
        return super().forward(x, feedback)


def make_trainer(net, data, **kwargs) -> MGRADTrainer:
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2)
    return MGRADTrainer(
        device=torch.device("cpu"),
        max_epochs=kwargs.pop("max_epochs", 1),
        train_data_loader=data,
        network=net,
        optimizer=optimizer,
        loss_function=MGRADLoss(),
        **kwargs,
    )


class CountingOptimizer(torch.optim.SGD):
    steps = 0

    def step(self, closure=None):
        CountingOptimizer.steps += 1
        return super().step(closure)


@pytest.mark.parametrize("step_per_pass,steps", [(True, 3), (False, 1)])
def test_passes_feedback_and_steps(step_per_pass, steps):
    net = RecordingNet()
    data = toy_batches(1)
    CountingOptimizer.steps = 0
    trainer = MGRADTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=data,
        network=net,
        optimizer=CountingOptimizer(net.parameters(), lr=1e-3),
        loss_function=MGRADLoss(),
        step_per_pass=step_per_pass,
    )
    trainer.run()
    assert len(net.calls) == 3 and net.calls[0] is None
    assert all(len(f) == 3 and not any(t.requires_grad for t in f) for f in net.calls[1:])
    assert CountingOptimizer.steps == steps
    pass_losses, out = trainer.state.pass_losses, trainer.state.output[0]  # decollated, as SupervisedTrainer's
    assert pass_losses.shape == (3,) and out["loss"] == pytest.approx(pass_losses.mean().item())
    assert isinstance(out["loss"], torch.Tensor)  # not read on the host (on CUDA: a synchronisation)
    assert out["pred"][0].shape == (2, 16, 16) and not out["pred"][0].requires_grad


def test_single_pass_is_plain_supervised_training():
    net = RecordingNet()
    make_trainer(net, toy_batches(2), feedback_passes=1).run()
    assert net.calls == [None, None]


def test_training_lowers_the_loss_with_handlers():
    net = RecordingNet()
    data = toy_batches(4)
    trainer = make_trainer(
        net,
        data,
        max_epochs=6,
        train_handlers=[StatsHandler(tag_name="train_loss", output_transform=from_engine(["loss"], first=True))],
    )
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output[0]["loss"]))
    trainer.run()
    assert sum(losses[-4:]) < 0.7 * sum(losses[:4])


@pytest.mark.parametrize("decollate", [True, False])
def test_history_records_each_epochs_mean_loss(tmp_path, decollate):
    """TrainingHistory keeps the iterations' losses where they were computed (a tensor on the device, decollated or
    not) and writes each epoch's mean."""
    import json

    from mgrad.handlers import TrainingHistory

    trainer = make_trainer(RecordingNet(), toy_batches(3), max_epochs=2, decollate=decollate)
    TrainingHistory(str(tmp_path)).attach(trainer)
    losses = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: losses.append(float((e.state.output[0] if decollate else e.state.output)["loss"])),
    )
    trainer.run()
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["epoch"] == [1, 2] and history["iteration"] == [3, 6] and history["epoch_length"] == [3, 3]
    assert history["loss"] == pytest.approx([sum(losses[:3]) / 3, sum(losses[3:]) / 3], rel=1e-12)
    assert (tmp_path / "curves.png").is_file()


def test_bf16_autocast_and_channels_last_and_clipping():
    net = RecordingNet()
    trainer = make_trainer(net, toy_batches(1), amp=True, channels_last=True, grad_clip_norm=0.5)
    trainer.run()
    assert math.isfinite(trainer.state.output[0]["loss"])
    assert net.encoder[0].conv1.conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_non_finite_loss_stops_before_the_step():
    net = RecordingNet()
    data = toy_batches(1)
    data[0]["image"][0, 0, 0, 0] = float("nan")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match="Loss is nan at epoch 1, iteration 1, feedback pass 1"):
        make_trainer(net, data).run()
    assert all(torch.equal(before[name], p) for name, p in net.named_parameters())


@pytest.mark.parametrize("step_per_pass", [True, False])
def test_non_finite_loss_skipped_on_device_by_a_fused_optimizer(step_per_pass):
    net = RecordingNet()
    data = toy_batches(2)
    data[1]["image"][0, 0, 0, 0] = float("nan")
    after_first = {}
    trainer = MGRADTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=data,
        network=net,
        optimizer=torch.optim.AdamW(net.parameters(), lr=1e-2, fused=True),
        loss_function=MGRADLoss(),
        step_per_pass=step_per_pass,
    )
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: after_first.update({k: p.clone() for k, p in net.named_parameters()})
    )
    with pytest.raises(NonFiniteLossError, match="iteration 2, feedback pass 1; .* were not applied"):
        trainer.run()
    assert after_first and all(torch.equal(after_first[name], p) for name, p in net.named_parameters())
    assert all(s["step"].item() == (3 if step_per_pass else 1) for s in trainer.optimizer.state.values())


def test_fused_optimizer_losses_checked_one_iteration_later_without_waiting():
    """Each iteration's losses are checked at the end of the next one: iteration 3 is queued (and its finite steps
    applied) before iteration 2's non-finite loss is read, and the error still names iteration 2."""
    net = RecordingNet()
    data = toy_batches(4)
    data[1]["image"][0, 0, 0, 0] = float("nan")
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2, fused=True)
    trainer = MGRADTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=data,
        network=net,
        optimizer=optimizer,
        loss_function=MGRADLoss(),
    )
    started = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: started.append(e.state.iteration))
    with pytest.raises(NonFiniteLossError, match="epoch 1, iteration 2, feedback pass 1; .* were not applied"):
        trainer.run()
    assert started == [1, 2, 3]  # raised inside iteration 3; iteration 4 never ran
    assert all(s["step"].item() == 6 for s in optimizer.state.values())  # 3 steps each in iterations 1 and 3


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(
                not torch.cuda.is_available(), reason="no CUDA device: the losses' copy to the host needs one"
            ),
        ),
    ],
)
def test_losses_reach_the_host_without_blocking(device):
    losses = torch.tensor([1.0, float("nan"), 3.0], device=device)
    pending = _PendingLosses(losses, 1, 2)
    values = pending.wait()
    assert values.device.type == "cpu" and (device == "cpu" or values.is_pinned())
    torch.testing.assert_close(values, losses.cpu(), equal_nan=True)
    assert (pending.epoch, pending.iteration) == (1, 2)


def test_rejects_bad_options():
    with pytest.raises(ValueError, match="feedback_passes"):
        make_trainer(RecordingNet(), toy_batches(1), feedback_passes=0)
    with pytest.raises(ValueError, match="accumulation"):
        make_trainer(RecordingNet(), toy_batches(1), accumulation_steps=2)


@pytest.mark.parametrize(
    "deterministic,benchmark,autotuned", [(False, False, False), (False, True, True), (True, True, False)]
)
def test_seed_training_seeds_and_chooses_cudnn_algorithms(deterministic, benchmark, autotuned, monkeypatch):
    for flag in ("deterministic", "benchmark"):  # restored after the test
        monkeypatch.setattr(torch.backends.cudnn, flag, not autotuned if flag == "benchmark" else not deterministic)
    draws = []
    for _ in range(2):
        seed_training(3, deterministic, benchmark)
        draws.append(torch.rand(4))
        assert torch.backends.cudnn.deterministic is deterministic
        assert torch.backends.cudnn.benchmark is autotuned
    assert torch.equal(draws[0], draws[1])
