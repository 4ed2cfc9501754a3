"""Performance options keep the numerics: activation checkpointing, bf16 autocast on CPU, the fast inference path."""

import copy
import math
import threading
from collections import Counter

import pytest
import torch
from monai.networks.blocks import Convolution
from torch.nn import ReLU
from torch.utils._python_dispatch import TorchDispatchMode

from mgrad.engines import MGRADTrainer
from mgrad.inferers import (
    ConvReLU,
    VolumeSliceInferer,
    cudnn_autotuning,
    eager_autocast_in_torchscript,
    fast_path_available,
    fold_batch_norms,
    fuse_conv_relu,
)
from mgrad.losses import MGRADLoss
from mgrad.networks import MGRADUNet, precision

SMALL = {"features": (8, 16, 32), "rfb_channels": 8}


def small_net(**kwargs) -> MGRADUNet:
    torch.manual_seed(0)
    return MGRADUNet(2, 1, 3, **{**SMALL, **kwargs})


def squares(n: int = 4, size: int = 32, seed: int = 0) -> list:
    """Batches of 2: a bright square (class 1) and a dark square (class 2) on noise."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        label = torch.zeros(2, 1, size, size, dtype=torch.long)
        for b in range(2):
            for cls in (1, 2):
                r, c = torch.randint(0, size // 2, (2,), generator=g).tolist()
                label[b, 0, r : r + size // 3, c : c + size // 3] = cls
        image = (label == 1).float() - 0.5 * (label == 2).float() + 0.2 * torch.randn(label.shape, generator=g)
        batches.append({"image": image, "label": label})
    return batches


def two_passes(net: MGRADUNet, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    out = net(x)
    loss = MGRADLoss()(out, target)
    out = net(x, net.feedback_from(out))
    return loss + MGRADLoss()(out, target)


@pytest.mark.parametrize("mode,name", [(True, "all"), ("all", "all"), ("rfb", "rfb"), ("selective", "selective")])
def test_checkpointing_same_loss_gradients_and_batch_norm_statistics(mode, name):
    plain, ckpt = small_net(), small_net(checkpointing=mode)
    assert plain.checkpointing == "none" and ckpt.checkpointing == name
    ckpt.load_state_dict(plain.state_dict())
    batch = squares(1)[0]
    losses = [two_passes(net, batch["image"], batch["label"]) for net in (plain, ckpt)]
    for loss in losses:
        loss.backward()
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=1e-6)
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
    # running statistics are updated once per forward pass, not again by the recomputation
    for (name, a), b in zip(plain.named_buffers(), ckpt.buffers()):
        assert torch.equal(a, b), name
    assert int(ckpt.encoder[0].conv1.adn.N.num_batches_tracked) == 2


@pytest.mark.parametrize("checkpointing", [True, "selective"])
def test_checkpointing_under_bf16_autocast(checkpointing):
    plain, ckpt = small_net(), small_net(checkpointing=checkpointing)
    batch = squares(1)[0]
    losses = []
    for net in (plain, ckpt):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = two_passes(net, batch["image"], batch["label"])
        loss.backward()
        losses.append(loss)
    assert math.isfinite(losses[1].item())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-3, atol=1e-3)
    for p, q in zip(plain.parameters(), ckpt.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=0.05, atol=1e-3)


class CountOperators(TorchDispatchMode):
    """Counts the operators that run (not those selective checkpointing answers from its cache), by name, with
    the kernel size of the convolutions, ``("convolution", (3, 3))``, ``("split_bfloat16_product", (1, 1))``, and
    the operands' dtype of their backward passes, ``("convolution_backward", torch.bfloat16)``."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in ("convolution", "split_bfloat16_product"):
            self.counts[(name, tuple(args[1].shape[2:]))] += 1  # args[1]: the weight
        elif name == "convolution_backward":
            self.counts[(name, args[1].dtype)] += 1  # args[1]: the input
        else:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


def convolutions_by_kernel(net: MGRADUNet, parts) -> Counter:
    """How many convolutions of each kernel size ``parts`` of ``net`` hold."""
    return Counter(m.kernel_size for part in parts for m in part.modules() if isinstance(m, torch.nn.Conv2d))


def test_what_the_backward_pass_recomputes():
    """``"all"`` recomputes every convolution of the checkpointed blocks (all but the side heads, less the last of
    a block, whose output its backward pass does not need); ``"selective"`` keeps the outputs of the 3x3 ones and
    recomputes the same 1x1, 1xk and kx1 ones, and the batch norms of every block as ``"all"`` does."""
    batch = squares(1)[0]
    counts = {}
    for checkpointing in ("all", "selective"):
        net = small_net(checkpointing=checkpointing)
        loss = MGRADLoss()(net(batch["image"]), batch["label"])
        with CountOperators() as backward:
            loss.backward()
        counts[checkpointing] = backward.counts
    blocks = convolutions_by_kernel(net, [*net.encoder, *net.rfbs, net.msd, net.grad])
    assert sorted(blocks) == [(1, 1), (1, 3), (1, 5), (1, 7), (3, 1), (3, 3), (5, 1), (7, 1)]
    for k in blocks:
        kept = k == (3, 3)
        assert counts["selective"][("convolution", k)] == (0 if kept else counts["all"][("convolution", k)])
        assert counts["all"][("convolution", k)] >= blocks[k] - (2 if k == (1, 1) else 0)
    assert counts["all"][("convolution", (3, 3))] == blocks[(3, 3)]
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert counts["selective"]["native_batch_norm"] == counts["all"]["native_batch_norm"] == norms


def test_selective_checkpointing_keeps_the_split_products(monkeypatch):
    """Where training convolutions run as split-bfloat16 products (CUDA; here the CPU, under bfloat16 autocast),
    selective checkpointing keeps their outputs as it keeps a convolution's, with the same gradients as without
    checkpointing, and their backward convolutions compute in autocast's dtype."""
    monkeypatch.setattr(precision, "SPLIT_PRODUCT_DEVICES", {"cpu", "cuda"})
    batch = squares(1)[0]
    grads, counts = [], []
    for checkpointing in ("none", "selective"):
        net = small_net(checkpointing=checkpointing)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(batch["image"])
            second = net(batch["image"], net.feedback_from(out))  # a pass with feedback: split products
            loss = MGRADLoss()(second, batch["label"])
        with CountOperators() as backward:
            loss.backward()
        grads.append([p.grad for p in net.parameters()])
        counts.append(backward.counts)
    blocks = convolutions_by_kernel(net, [*net.encoder, *net.rfbs, net.msd, net.grad])
    plain, selective = counts
    recomputed = {k: selective[("split_bfloat16_product", k)] for k in blocks}
    assert sum(plain[("split_bfloat16_product", k)] for k in blocks) == 0
    assert recomputed[(3, 3)] == 0
    assert all(recomputed[k] >= blocks[k] - (2 if k == (1, 1) else 0) for k in blocks if k != (3, 3))
    for counted in counts:  # every convolution's backward pass in bfloat16
        assert counted[("convolution_backward", torch.bfloat16)] == sum(blocks.values()) + len(net.side_heads.heads)
        assert counted[("convolution_backward", torch.float32)] == 0
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_checkpointing_modes():
    assert small_net(checkpointing=False).checkpointing == "none"
    assert small_net(checkpointing="none").checkpointing == "none"
    with pytest.raises(ValueError, match="checkpointing must be"):
        small_net(checkpointing="encoder")


def test_checkpointing_is_off_in_eval_and_keeps_torchscript(tmp_path):
    from monai.networks.utils import convert_to_torchscript

    net = small_net(checkpointing=True)
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        expected = small_net().eval()(x)
        torch.testing.assert_close(net.eval()(x), expected)
    scripted = convert_to_torchscript(net, tmp_path / "net.ts", verify=True, inputs=[x], rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), expected, rtol=1e-4, atol=1e-5)


def make_trainer(net: MGRADUNet, data: list, **kwargs) -> MGRADTrainer:
    return MGRADTrainer(
        device=torch.device("cpu"),
        max_epochs=kwargs.pop("max_epochs", 1),
        train_data_loader=data,
        network=net,
        optimizer=torch.optim.AdamW(net.parameters(), lr=1e-2),
        loss_function=MGRADLoss(),
        **kwargs,
    )


@pytest.mark.parametrize("amp", [False, True])
def test_trainer_with_checkpointing_matches_plain(amp):
    data = squares(2)
    results = []
    for checkpointing in (False, True, "selective"):
        net = small_net(checkpointing=checkpointing)
        trainer = make_trainer(net, data, amp=amp)
        trainer.run()
        results.append((trainer.state.pass_losses, net.state_dict()))
    (losses, state), *checkpointed = results
    tol = 5e-3 if amp else 1e-5
    for ckpt_losses, ckpt_state in checkpointed:
        torch.testing.assert_close(ckpt_losses, losses, rtol=tol, atol=tol)
        for name in state:
            torch.testing.assert_close(ckpt_state[name].float(), state[name].float(), rtol=tol, atol=tol, msg=name)


@pytest.mark.parametrize(
    "feedback_precision,encoder,decoder",
    [
        ("autocast", torch.bfloat16, torch.bfloat16),
        ("split", torch.bfloat16, torch.float32),
        ("full", torch.float32, torch.float32),
    ],
)
def test_amp_on_cpu_runs_in_bfloat16_without_scaler_warnings(recwarn, feedback_precision, encoder, decoder):
    net = small_net(feedback_precision=feedback_precision)
    seen = []
    net.rfbs[0].fuse.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    net.msd.pred.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    trainer = make_trainer(net, squares(1), amp=True)
    trainer.run()
    assert seen == [encoder, decoder] * 3
    assert math.isfinite(trainer.state.output[0]["loss"])
    assert not [w for w in recwarn if "GradScaler" in str(w.message)]


def trained_net() -> MGRADUNet:
    net = small_net()
    make_trainer(net, squares(4), max_epochs=8, feedback_passes=1).run()
    return net.eval()


def test_inference_autotunes_cudnn_for_its_call_only(monkeypatch):
    """The fast path autotunes cuDNN while it runs and restores the run's setting after (a validation inside
    training must not leave the training's convolutions to be autotuned), and never in deterministic mode."""
    for benchmark, deterministic, active, within in [
        (False, False, True, True),
        (False, False, False, False),
        (True, False, False, True),
        (False, True, True, False),
    ]:
        monkeypatch.setattr(torch.backends.cudnn, "benchmark", benchmark)  # restored after the test
        monkeypatch.setattr(torch.backends.cudnn, "deterministic", deterministic)
        with cudnn_autotuning(active):
            assert torch.backends.cudnn.benchmark is within
        assert torch.backends.cudnn.benchmark is benchmark
    with pytest.raises(RuntimeError), cudnn_autotuning(True):  # restored when the inference fails too
        raise RuntimeError
    assert torch.backends.cudnn.benchmark is False


def test_fast_inference_path_agrees_with_plain_path():
    net = trained_net()
    data = squares(3, seed=1)
    # a volume (1, 1, H, W, D) of 6 slices along the last axis
    volume = torch.cat([b["image"] for b in data]).permute(1, 2, 3, 0).unsqueeze(0)
    with torch.inference_mode():
        plain = VolumeSliceInferer(roi_size=(32, 32), fast=False)(volume, net)
        fast = VolumeSliceInferer(roi_size=(32, 32), fast=True)(volume, copy.deepcopy(net))
        auto = VolumeSliceInferer(roi_size=(32, 32), sw_batch_size=3)(volume, copy.deepcopy(net))
        # the default on CPUs without native bfloat16: folded and channels-last in float32
        fast32 = VolumeSliceInferer(roi_size=(32, 32), fast=True, low_precision=False)(volume, copy.deepcopy(net))
    assert plain.dtype == fast.dtype == auto.dtype == fast32.dtype == torch.float32
    assert plain.shape == fast.shape == auto.shape == fast32.shape == (1, 3, 32, 32, 6)
    agree = (fast.argmax(1) == plain.argmax(1)).float().mean().item()
    assert agree >= 0.999
    assert (auto.argmax(1) == plain.argmax(1)).float().mean().item() >= 0.999
    torch.testing.assert_close(fast32, plain, atol=1e-4, rtol=1e-4)  # folding changes the rounding only
    cpu = torch.device("cpu")
    assert isinstance(fast_path_available(cpu), bool)
    plain_inferer, forced = VolumeSliceInferer((32, 32), fast=False), VolumeSliceInferer((32, 32), fast=True)
    default, float32 = VolumeSliceInferer((32, 32)), VolumeSliceInferer((32, 32), low_precision=False)
    assert [i.uses_fast_path(cpu) for i in (plain_inferer, forced, default, float32)] == [False, True, True, True]
    assert plain_inferer.uses_low_precision(cpu) is False and forced.uses_low_precision(cpu) is True
    assert default.uses_low_precision(cpu) == fast_path_available(cpu) and float32.uses_low_precision(cpu) is False


def test_fast_inference_path_freezes_a_torchscript_network():
    """A TorchScript network (MONAI Deploy's) gets its batch norms folded by ``torch.jit.freeze``, as the fast path
    folds a PyTorch one: the same function in float32, no batch norm left, channels-last weights (so channels-last
    activations), the network itself unchanged; and in bfloat16 autocast acts on it operation by operation, so it
    computes the PyTorch network's very numbers."""
    eager = with_batch_norm_statistics(small_net())
    net = torch.jit.script(eager)
    volume = torch.rand(1, 1, 32, 32, 5, generator=torch.Generator().manual_seed(0))
    inferer = VolumeSliceInferer(roi_size=(32, 32), fast=True, low_precision=False, sw_batch_size=2)
    with torch.inference_mode():
        plain = VolumeSliceInferer(roi_size=(32, 32), fast=False)(volume, net)
        fast = inferer(volume, net)
        low = [VolumeSliceInferer(roi_size=(32, 32), fast=True, sw_batch_size=2)(volume, n) for n in (net, eager)]
    torch.testing.assert_close(fast, plain, atol=1e-4, rtol=1e-4)
    frozen = inferer._folded[2]
    assert "batch_norm" not in str(frozen.graph) and "batch_norm" in str(net.inlined_graph)
    assert net.training is False and len(list(net.parameters())) > len(list(frozen.parameters())) == 0
    weights = [c.output().toIValue() for c in frozen.graph.findAllNodes("prim::Constant")]
    weights = [w for w in weights if isinstance(w, torch.Tensor) and w.dim() == 4]
    assert len(weights) == 69 and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    assert next(net.parameters()).is_contiguous()  # frozen from a channels-last copy
    with torch.inference_mode():  # a network frozen already (it has no training flag) runs as it is
        torch.testing.assert_close(VolumeSliceInferer((32, 32), fast=True, low_precision=False)(volume, frozen), plain)
    assert torch.equal(low[0], low[1]) and not torch.equal(low[0], fast)
    assert torch._C._jit_set_autocast_mode(True) is True  # TorchScript's own autocast back on after the call


def test_eager_autocast_in_torchscript_is_shared_by_calls_in_other_threads():
    """Two inferers' calls overlapping in two threads: the setting stays off until the later one ends, then the one from
    before returns (with each call restoring what it found, the first to end turned it on under the other, which then
    left it off for good)."""

    def autocast_pass_on() -> bool:
        on = torch._C._jit_set_autocast_mode(True)
        torch._C._jit_set_autocast_mode(on)
        return on

    entered, leave = threading.Event(), threading.Event()

    def other_call() -> None:
        with eager_autocast_in_torchscript():
            entered.set()
            leave.wait(timeout=60)

    other = threading.Thread(target=other_call)
    other.start()
    assert entered.wait(timeout=60) and not autocast_pass_on()
    with eager_autocast_in_torchscript():
        leave.set()  # the other thread's call ends first, while this one is still inside
        other.join(timeout=60)
        assert not other.is_alive() and not autocast_pass_on()
    assert autocast_pass_on()
    with eager_autocast_in_torchscript(active=False):
        assert autocast_pass_on()


def with_batch_norm_statistics(net: MGRADUNet) -> MGRADUNet:
    """``net`` in eval mode with random running statistics, so that folding them changes every convolution."""
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    return net.eval()


def test_fused_convolutions_compute_the_folded_network():
    """Each convolution followed by a ReLU alone becomes one ``ConvReLU`` (one cuDNN call on CUDA); the rest stays,
    the parameters keep their names, and off CUDA it is the same arithmetic."""
    net = with_batch_norm_statistics(small_net())
    folded = fold_batch_norms(net)
    fused = fuse_conv_relu(fold_batch_norms(net))
    convolutions = [m for m in fused.modules() if isinstance(m, torch.nn.Conv2d)]
    replaced = [m for m in fused.modules() if isinstance(m, ConvReLU)]
    blocks = [m for m in net.modules() if isinstance(m, Convolution)]
    with_relu = [m for m in blocks if type(getattr(getattr(m, "adn", None), "A", None)) is ReLU]
    # every conv-norm-ReLU block: each encoder stage's first (3), all fifteen of each RFB (45), eleven of the decoders;
    # not the encoder stages' second and residual convolutions, the decoders' last ones and the side heads
    assert len(replaced) == len(with_relu) == 59 and len(convolutions) == 59 + 3 * 2 + 4 + 3
    assert folded.state_dict().keys() == fused.state_dict().keys()
    x = torch.rand(2, 1, 32, 32)
    with torch.inference_mode():
        assert torch.equal(fused(x), folded(x))
        volume = torch.rand(1, 1, 32, 32, 5)
        plain = VolumeSliceInferer((32, 32), low_precision=False)(volume, net)
        fast = VolumeSliceInferer((32, 32), low_precision=False, fuse_activations=True)(volume, net)
    assert torch.equal(plain, fast)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="cuDNN's fused convolution and ReLU needs CUDA")
def test_fused_convolutions_on_cuda_give_the_labels_of_the_fast_path():
    net = with_batch_norm_statistics(small_net()).cuda()
    volume = torch.rand(1, 1, 32, 32, 24, device="cuda")
    with torch.inference_mode():
        fast = VolumeSliceInferer((32, 32), sw_batch_size=12)(volume, net)
        fused = VolumeSliceInferer((32, 32), sw_batch_size=12, fuse_activations=True)(volume, net)
    assert fused.dtype == torch.float32 and fused.shape == fast.shape
    assert (fused.argmax(1) == fast.argmax(1)).float().mean().item() >= 0.999
