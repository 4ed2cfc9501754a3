from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from monai.inferers import SliceInferer
from monai.networks.utils import convert_to_torchscript
from torch.utils.flop_counter import FlopCounterMode

from mgrad.losses import MGRADLoss
from mgrad.networks import MGRADOutput, MGRADUNet
from mgrad.networks.precision import split_bfloat16_conv

SMALL = {"features": (8, 16, 32), "rfb_channels": 8}


def small_net(spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 3, **kwargs) -> MGRADUNet:
    torch.manual_seed(0)
    return MGRADUNet(spatial_dims, in_channels, out_channels, **{**SMALL, **kwargs})


@pytest.mark.parametrize(
    "spatial_dims,shape,features",
    [(2, (2, 1, 32, 48), (8, 16, 32)), (2, (1, 1, 64, 64), (4, 8, 16, 32, 64)), (3, (1, 1, 16, 8, 24), (4, 8, 16))],
)
def test_train_and_eval_shapes(spatial_dims, shape, features):
    net = MGRADUNet(spatial_dims, 1, 3, features=features, rfb_channels=4)
    levels = len(features)
    out = net.train()(torch.rand(shape))
    assert isinstance(out, MGRADOutput)
    assert out.pred1.shape == out.pred2.shape == (shape[0], 3, *shape[2:])
    assert len(out.features1) == len(out.features2) == len(out.side_preds) == levels
    for i, (m, g) in enumerate(zip(out.features1, out.features2)):
        expected = (shape[0], 4, *(s // 2**i for s in shape[2:]))
        assert m.shape == g.shape == expected
    assert all(s.shape == (shape[0], 3, *shape[2:]) for s in out.side_preds)
    with torch.no_grad():
        fused = net.eval()(torch.rand(shape))
    assert isinstance(fused, torch.Tensor) and fused.shape == (shape[0], 3, *shape[2:])


def test_eval_output_is_sum_of_decoders():
    net = small_net().eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        fused = net(x)
        net.training = True  # train-mode output, batch norm still on its running statistics
        out = net(x)
    torch.testing.assert_close(fused, out.pred1 + out.pred2)


def test_released_model_size_and_flops():
    with torch.device("meta"):
        net = MGRADUNet(spatial_dims=2, in_channels=3, out_channels=9)
        x = torch.empty(1, 3, 224, 224)
    params = sum(p.numel() for p in net.parameters())
    assert abs(params - 24_134_655) / 24_134_655 < 0.005
    with FlopCounterMode(display=False) as counter:
        net.train()(x)
    assert abs(counter.get_total_flops() - 138.95e9) / 138.95e9 < 0.005


def test_gradients_reach_every_parameter():
    net = small_net()
    out = net(torch.rand(2, 1, 32, 32))
    loss = out.pred1.sum() + out.pred2.sum() + sum(s.sum() for s in out.side_preds)
    loss.backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_feedback_changes_output_and_is_detached():
    net = small_net(feedback_scale=1.0)
    x = torch.rand(2, 1, 32, 32)
    first = net(x)
    feedback = net.feedback_from(first)
    assert len(feedback) == 3 and all(not f.requires_grad for f in feedback)
    torch.testing.assert_close(feedback[1], (first.features2[1] - first.features1[1]).detach())
    second = net(x, feedback)
    assert not torch.allclose(second.pred1, first.pred1)
    # the second pass's loss sends no gradient into the first pass's graph
    assert first.features1[0].grad_fn is not None
    grads = torch.autograd.grad(second.pred1.sum(), [*first.features1, *first.features2], allow_unused=True)
    assert all(g is None for g in grads)


def test_feedback_scale():
    net = small_net(feedback_scale=1e-3)
    out = net(torch.rand(2, 1, 32, 32))
    torch.testing.assert_close(net.feedback_from(out)[0], 1e-3 * (out.features2[0] - out.features1[0]).detach())


def test_torchscript_export(tmp_path):
    net = small_net()
    x = torch.rand(1, 1, 32, 32)
    scripted = convert_to_torchscript(net, tmp_path / "net.ts", verify=True, inputs=[x], rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net.eval()(x), rtol=1e-4, atol=1e-5)
    out = scripted.train()(torch.rand(2, 1, 32, 32))
    assert out[0].shape == (2, 3, 32, 32) and len(scripted.feedback_from(out)) == 3


def test_state_dict_round_trip():
    a, b = small_net(), MGRADUNet(2, 1, 3, **SMALL)
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x))


def test_slice_inferer_over_volume():
    net = small_net().eval()
    volume = torch.rand(1, 1, 32, 32, 5)
    with torch.no_grad():
        out = SliceInferer(spatial_dim=2, roi_size=(32, 32), sw_batch_size=2)(volume, net)
        expected = net(volume[..., 3])
    assert out.shape == (1, 3, 32, 32, 5)
    torch.testing.assert_close(out[..., 3], expected, rtol=1e-4, atol=1e-5)


def test_bundle_style_construction():
    parser = ConfigParser(
        {"net": {"_target_": "mgrad.networks.MGRADUNet", "spatial_dims": 2, "in_channels": 2, "out_channels": 4}}
    )
    net = parser.get_parsed_content("net")
    assert isinstance(net, MGRADUNet)
    assert net.msd.pred.out_channels == 4 and net.encoder[0].conv1.conv.in_channels == 2


def test_bad_sizes_raise_clear_errors():
    net = small_net()
    with pytest.raises(ValueError, match=r"multiple of 4.*\[30, 32\]"):
        net(torch.rand(1, 1, 30, 32))
    with pytest.raises(ValueError, match="spatial_dims=2"):
        net(torch.rand(1, 1, 32, 32, 8))
    with pytest.raises(ValueError, match="feedback must hold 3 maps"):
        net(torch.rand(1, 1, 32, 32), [torch.zeros(1, 8, 32, 32)])
    with pytest.raises(ValueError, match="at least 2 encoder stages"):
        MGRADUNet(2, 1, 2, features=(8,))


def test_wrong_channels_and_feedback_raise_clear_errors():
    net = small_net()
    x = torch.rand(2, 1, 32, 32)
    with pytest.raises(ValueError, match=r"in_channels=1\) got an input of 3 channels"):
        net(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="spatial_dims 1, 2 or 3, got 4"):
        MGRADUNet(4, 1, 2, **SMALL)
    feedback = net.feedback_from(net(x))
    # wrong batch, channels or size would broadcast or fail deep inside the network
    for wrong in ([f[:1] for f in feedback], [f[:, :1] for f in feedback], feedback):
        size = 64 if wrong is feedback else 32
        with pytest.raises(ValueError, match=r"feedback map 0 has shape \[\d, \d, 32, 32\], expected \[2, 8, "):
            net(torch.rand(2, 1, size, size), wrong)
    with pytest.raises(ValueError, match="feedback must be a list of tensors.*got Tensor"):
        net(x, feedback[0])
    with pytest.raises(ValueError, match="train-mode output.*got Tensor"):
        net.feedback_from(net.eval()(x))
    scripted = torch.jit.script(net.train())  # the checks compile and raise the same errors in TorchScript
    with pytest.raises(Exception, match="feedback map 1 has shape"):
        scripted(x, [feedback[0], feedback[1][:1], feedback[2]])
    assert net.train()(x, tuple(feedback)).pred1.shape == (2, 3, 32, 32)


def feedback_effect(net: MGRADUNet, x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """``net(x, feedback) - net(x, 0)`` of both decoders in train mode (both passes with feedback, as training's
    second), the feedback from a first pass, in float64; under CPU autocast in ``dtype`` where given."""
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        feedback = net.feedback_from(net.train()(x))
        second, zero = net(x, feedback), net(x, [torch.zeros_like(f) for f in feedback])
    return torch.cat([(second.pred1 - zero.pred1).flatten(), (second.pred2 - zero.pred2).flatten()]).double()


def test_feedback_survives_bfloat16_autocast():
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    tiny = {"features": (4, 8, 16), "rfb_channels": 4}
    reference = feedback_effect(small_net(**tiny).double(), x.double(), None)
    errors = {}
    for mode in ("full", "split", "autocast"):  # the same weights (same seed) in each
        effect = feedback_effect(small_net(feedback_precision=mode, **tiny), x, torch.bfloat16)
        errors[mode] = ((effect - reference).norm() / reference.norm()).item()
    # measured: full 3e-4, split 0.37 (exact for the bfloat16 RFB outputs), autocast 6 (the change is rounding noise)
    assert errors["full"] < 0.1
    assert errors["autocast"] > 0.5
    assert errors["split"] < 0.5 * errors["autocast"]


@contextmanager
def conv_output_dtypes(net: MGRADUNet) -> Iterator[list[torch.dtype]]:
    """The output dtypes of the first convolution of the encoder and of the first decoder, as they run within."""
    convs = [next(m for m in part.modules() if isinstance(m, torch.nn.Conv2d)) for part in (net.encoder, net.msd)]
    seen: list[torch.dtype] = []
    hooks = [c.register_forward_hook(lambda m, i, out: seen.append(out.dtype)) for c in convs]
    try:
        yield seen
    finally:
        for hook in hooks:
            hook.remove()


@pytest.mark.parametrize("checkpointing", [False, True])
def test_the_first_pass_keeps_float16_the_feedback_passes_compute_in_float32(checkpointing):
    """The first pass carries no feedback and only computes the next one's, whose effect is linear in it: under
    float16 autocast it keeps float16 (11-bit significand), while a pass with feedback computes in float32; under
    bfloat16 (8 bits) the first pass computes in float32 too. Checkpointing recomputes each pass as it ran."""
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    target = torch.randint(0, 3, (2, 1, 32, 32), generator=torch.Generator().manual_seed(1))
    loss = MGRADLoss()
    recomputed = 2 if checkpointing else 0  # the backward pass recomputes each checkpointed convolution once
    for dtype, first_pass_dtype in ((torch.float16, torch.float16), (torch.bfloat16, torch.float32)):
        net = small_net(checkpointing=checkpointing)
        with conv_output_dtypes(net) as seen, torch.autocast("cpu", dtype=dtype):
            first = net(x)
        assert seen == [first_pass_dtype] * 2
        with conv_output_dtypes(net) as seen:  # the backward pass outside autocast, as a trainer runs it
            loss(first, target).backward()
        assert seen == [first_pass_dtype] * recomputed
        with conv_output_dtypes(net) as seen, torch.autocast("cpu", dtype=dtype):
            second = net(x, net.feedback_from(first))
        assert seen == [torch.float32] * 2
        with conv_output_dtypes(net) as seen:
            loss(second, target).backward()
        assert seen == [torch.float32] * recomputed
    reference = feedback_effect(small_net().double(), x.double(), None)
    effect = feedback_effect(small_net(), x, torch.float16)
    assert ((effect - reference).norm() / reference.norm()).item() < 0.1  # measured 7.8e-3


def decoder_input_dtypes(net: MGRADUNet, x: torch.Tensor, device_type: str, dtype: torch.dtype) -> set:
    """The dtypes of every decoder convolution's input in an eval forward under ``dtype`` autocast."""
    seen = set()
    convs = [m for part in (net.msd, net.grad) for m in part.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks = [c.register_forward_pre_hook(lambda m, args: seen.add(args[0].dtype)) for c in convs]
    with torch.no_grad(), torch.autocast(device_type, dtype=dtype):
        net.eval()(x)
    for hook in hooks:
        hook.remove()
    return seen


def test_upsampling_keeps_the_low_precision_of_autocast(monkeypatch):
    """CUDA autocast interpolates in float32 (PyTorch's list), which made every sum and difference after an
    upsampling in the decoders float32 in a float16 forward; CPU autocast keeps the input's dtype. Emulated here:
    F.interpolate in float32 wherever autocast is enabled, as on CUDA. The decoders' convolutions still see
    bfloat16 only, and the logits are those of the unpatched forward."""
    net, x = small_net(), torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = net.eval()(x)
    interpolate = F.interpolate

    def cuda_like_interpolate(t, *args, **kwargs):
        upcast = torch.is_autocast_enabled("cpu")
        return interpolate(t.float() if upcast else t, *args, **kwargs)

    monkeypatch.setattr(F, "interpolate", cuda_like_interpolate)
    assert decoder_input_dtypes(net, x, "cpu", torch.bfloat16) == {torch.bfloat16}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(net.eval()(x), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: CUDA autocast's interpolation needs one")
def test_upsampling_keeps_float16_under_cuda_autocast():
    net, x = small_net().cuda(), torch.rand(2, 1, 32, 32, device="cuda")
    assert decoder_input_dtypes(net, x, "cuda", torch.float16) == {torch.float16}


def test_feedback_precision_keeps_float32_eval_and_weights():
    nets = {mode: small_net(feedback_precision=mode) for mode in ("full", "split", "autocast")}
    x = torch.rand(2, 1, 32, 32)
    outputs = {mode: net(x) for mode, net in nets.items()}
    for mode in ("full", "split"):  # plain float32 on CPU: bit for bit the plain network
        assert torch.equal(outputs[mode].pred1, outputs["autocast"].pred1)
        assert torch.equal(outputs[mode].side_preds[2], outputs["autocast"].side_preds[2])
        assert list(nets[mode].state_dict()) == list(nets["autocast"].state_dict())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # eval keeps the low-precision path
        fused = {mode: net.eval()(x) for mode, net in nets.items()}
    assert fused["full"].dtype == torch.bfloat16 and torch.equal(fused["full"], fused["autocast"])
    with pytest.raises(ValueError, match="feedback_precision must be"):
        small_net(feedback_precision="float32")


def test_split_bfloat16_convolution_under_tf32(monkeypatch):
    """On CUDA the three products run as TF32 convolutions, which round each operand to 11 bits (emulated here,
    round to nearest even): the split stays near float32 where one TF32 convolution is 100 times further off."""
    conv2d = F.conv2d

    def tf32(t):
        bits = t.contiguous().view(torch.int32)
        return ((bits + 0x0FFF + ((bits >> 13) & 1)) & ~0x1FFF).view(torch.float32)

    def tf32_conv2d(x, w, b=None, *args):
        return conv2d(tf32(x), tf32(w), b, *args)

    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 64, 16, 16, generator=g), torch.randn(32, 64, 3, 3, generator=g) / 24
    b = torch.randn(32, generator=g)
    exact = conv2d(x.double(), w.double(), b.double(), padding=1)

    def error(y):
        return ((y.double() - exact).norm() / exact.norm()).item()

    assert error(tf32_conv2d(x, w, b, 1, 1)) > 1e-4
    monkeypatch.setattr(F, "conv2d", tf32_conv2d)
    assert error(split_bfloat16_conv(x, w, b, (1, 1), (1, 1), (1, 1), 1, torch.float32)) < 1e-5


def test_split_bfloat16_convolution():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g, requires_grad=True)
    w = torch.randn(5, 4, 3, 3, generator=g, requires_grad=True)
    b = torch.randn(5, generator=g, requires_grad=True)
    exact = F.conv2d(x.double(), w.double(), b.double(), padding=1)
    split = split_bfloat16_conv(x, w, b, (1, 1), (1, 1), (1, 1), 1, torch.float32)
    assert split.dtype == torch.float32
    assert ((split - exact).norm() / exact.norm()).item() < 1e-4  # a bfloat16 product alone: about 4e-3
    grad = torch.randn(split.shape, generator=g)
    expected = torch.autograd.grad(F.conv2d(x, w, b, padding=1), (x, w, b), grad)
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
        split = split_bfloat16_conv(x, w, b, (1, 1), (1, 1), (1, 1), 1, dtype)
        for got, want in zip(torch.autograd.grad(split, (x, w, b), grad), expected):
            assert got.dtype == torch.float32
            torch.testing.assert_close(got, want, rtol=tol, atol=tol * want.abs().max().item())
