"""Regional compilation: each region of MGRAD-UNet compiles without a graph break and computes what eager mode does,
in training (feedback passes; bfloat16 autocast with the feedback kept in float32; float16 autocast, whose first pass
keeps float16: each region compiled for both kinds of pass) and in the bundle's network; so do
the exact feedback's split products (CUDA's training convolutions) and the fused aggregated loss."""

import copy
import os
import shutil

import pytest
import torch
from bundle_fixtures import REPO, config_files, tiny_overrides

from mgrad.inferers import fold_batch_norms
from mgrad.losses import AggregatedLoss, MGRADLoss
from mgrad.losses.mgrad_loss import default_segmentation_loss
from mgrad.networks import MGRADUNet, compile_regions
from mgrad.networks.precision import FeedbackPrecisionConv2d, feedback_free_pass, split_bfloat16_conv

SMALL = {"features": (4, 8, 16), "rfb_channels": 4}


def two_passes(net: MGRADUNet, x: torch.Tensor, target: torch.Tensor, amp: torch.dtype | None) -> torch.Tensor:
    with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
        out = net(x)
        loss = MGRADLoss()(out, target)
        out = net(x, net.feedback_from(out))
        return loss + MGRADLoss()(out, target)


def test_regions_hold_every_parameter_once():
    net = MGRADUNet(2, 1, 3, **SMALL)
    in_regions = [id(p) for region in net.regions() for p in region.parameters()]
    assert sorted(in_regions) == sorted(id(p) for p in net.parameters())


@pytest.mark.parametrize("amp", [None, torch.bfloat16, torch.float16])
def test_compiled_regions_train_as_eager(amp):
    torch.manual_seed(0)
    eager = MGRADUNet(2, 1, 3, **SMALL)
    compiled = compile_regions(copy.deepcopy(eager), backend="eager", fullgraph=True)  # a graph break fails
    assert all(getattr(region, "_compiled_call_impl", None) is not None for region in compiled.regions())
    assert list(compiled.state_dict()) == list(eager.state_dict())
    x = torch.rand(2, 1, 32, 32)
    target = torch.randint(0, 3, (2, 1, 32, 32))
    losses = [two_passes(net, x, target, amp) for net in (eager, compiled)]
    for loss in losses:
        loss.backward()
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=1e-6)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=name)
    # validation folds the batch norms of a copy, as with an eager network
    eager.eval(), compiled.eval()
    torch.testing.assert_close(fold_batch_norms(compiled)(x), eager(x), rtol=1e-4, atol=1e-5)


def test_a_compiled_convolution_computes_each_pass_in_its_own_precision():
    # compiled for the first pass (float16 kept), it must compile again for a pass with feedback (float32)
    conv = FeedbackPrecisionConv2d(2, 3, 3, padding=1).train()
    compiled = torch.compile(conv, backend="eager", fullgraph=True)
    x = torch.rand(1, 2, 8, 8)
    with torch.autocast("cpu", dtype=torch.float16):
        dtypes = []
        for feedback_free in (True, False, True):
            with feedback_free_pass(feedback_free):
                dtypes.append(compiled(x).dtype)
    assert dtypes == [torch.float16, torch.float32, torch.float16]


def test_split_products_and_fused_loss_compile_without_graph_break():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=g, requires_grad=True)
    w = torch.randn(6, 4, 3, 3, generator=g, requires_grad=True)
    b = torch.randn(6, generator=g, requires_grad=True)
    target = torch.randint(0, 3, (2, 1, 16, 16), generator=g)
    loss = AggregatedLoss(default_segmentation_loss(squared_pred=True))

    def step(x, w, b):
        y = split_bfloat16_conv(x, w, b, (1, 1), (1, 1), (1, 1), 1, torch.float32)
        return loss(y.unflatten(1, (2, 3)).movedim(1, 0), target)  # 2 maps of 3 classes

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)  # a graph break fails
    values = [f(x, w, b) for f in (step, compiled)]
    grads = [torch.autograd.grad(v, (x, w, b)) for v in values]
    torch.testing.assert_close(values[1], values[0])
    for got, want in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, want)


def test_bundle_network_compiled_on_request(tmp_path, monkeypatch):
    from monai.bundle import ConfigParser

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)  # restored after the test

    parser = ConfigParser()
    parser.read_config(config_files(REPO / "bundle", "train"))
    cache = tmp_path / "cache"
    for key, value in tiny_overrides(tmp_path, tmp_path / "data").items():
        parser[key] = value
    assert not parser.get_parsed_content("compile")
    parser["compile"], parser["compile_backend"], parser["compile_cache_dir"] = True, "eager", str(cache)
    network = parser.get_parsed_content("network")
    assert all(getattr(region, "_compiled_call_impl", None) is not None for region in network.regions())
    assert cache.is_dir() and os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(cache.resolve())


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="Inductor on CPU needs a C++ compiler")
def test_compiled_inference_matches_plain_path_and_compiles_again_for_new_weights():
    from mgrad.inferers import VolumeSliceInferer

    torch.manual_seed(0)
    net = MGRADUNet(2, 1, 3, features=(4, 8), rfb_channels=4).eval()
    volume = torch.rand(1, 1, 16, 16, 3)  # 3 slices, batches of 2: the last batch is padded to the compiled shape
    plain = VolumeSliceInferer((16, 16), sw_batch_size=2, fast=False)
    # Inductor with frozen weights on CPU; float32 on every CPU (where bfloat16 is native, the default would use it)
    compiled = VolumeSliceInferer((16, 16), sw_batch_size=2, low_precision=False, compile=True)
    with torch.inference_mode():
        torch.testing.assert_close(compiled(volume, net), plain(volume, net), rtol=1e-4, atol=1e-5)
    assert isinstance(compiled._folded[2], torch._dynamo.eval_frame.OptimizedModule)
    with torch.no_grad():  # trained weights change: the frozen constants of the first compilation must not be used
        for p in net.parameters():
            p.mul_(1.5)
    with torch.inference_mode():
        expected = plain(volume, net)
        torch.testing.assert_close(compiled(volume, net), expected, rtol=1e-4, atol=1e-5)


def test_bundle_inferer_compiled_on_request(tmp_path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_files(REPO / "bundle", "inference"))
    for key, value in tiny_overrides(tmp_path, tmp_path / "data").items():
        parser[key] = value
    assert not parser.get_parsed_content("inferer").compile
    parser["compile_inference"] = True
    assert parser.get_parsed_content("inferer", lazy=False).compile
