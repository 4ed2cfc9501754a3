import itertools

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss
from torch.nn.modules.loss import _Loss

import mgrad.losses
from mgrad.losses import AggregatedLoss, MGRADLoss
from mgrad.losses.aggregated import subset_matrix
from mgrad.losses.aggregated_dice_ce import aggregated_dice_ce, fusable_dice_ce
from mgrad.losses.mgrad_loss import default_segmentation_loss
from mgrad.networks import MGRADOutput


def naive_aggregated(loss, maps, target):
    total = 0.0
    for r in range(1, len(maps) + 1):
        for subset in itertools.combinations(range(len(maps)), r):
            total = total + loss(sum(maps[i] for i in subset), target)
    return total


def test_losses_are_monai_style():
    assert all(issubclass(getattr(mgrad.losses, name), _Loss) for name in mgrad.losses.__all__)


def test_subset_matrix():
    m = subset_matrix(3)
    assert m.tolist() == [[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 1], [1, 1, 1]]
    assert subset_matrix(5).shape == (31, 5) and len({tuple(r) for r in subset_matrix(5).tolist()}) == 31


def test_aggregated_loss_hand_computed():
    def mse(x, t):
        return ((x - t) ** 2).mean()

    a, b, t = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -1.0]]), torch.tensor([[0.0, 0.0]])
    # subsets {a}: (1+4)/2, {b}: (9+1)/2, {a+b}: (16+1)/2
    assert AggregatedLoss(mse)([a, b], t).item() == pytest.approx(2.5 + 5.0 + 8.5)
    assert AggregatedLoss(mse, reduction="mean")([a, b], t).item() == pytest.approx(16.0 / 3)
    assert AggregatedLoss(mse, reduction="none")([a, b], t).tolist() == pytest.approx([2.5, 5.0, 8.5])

    def mse_or_zero(x, t):  # data-dependent control flow and a host read: a vectorised (vmap) call could not run it
        return mse(x, t) if (x.abs().sum() > 3).item() else x.sum() * 0

    assert AggregatedLoss(mse_or_zero, reduction="none")([a, b], t).tolist() == pytest.approx([0.0, 5.0, 8.5])


@pytest.mark.parametrize("n", [1, 3, 5])
def test_aggregated_loss_equals_naive_loop(n):
    torch.manual_seed(n)
    loss = DiceCELoss(softmax=True, to_onehot_y=True, batch=True, lambda_dice=0.7, lambda_ce=0.3)
    maps = [torch.randn(2, 4, 16, 16, requires_grad=True) for _ in range(n)]
    target = torch.randint(0, 4, (2, 1, 16, 16))
    fast, slow = AggregatedLoss(loss)(maps, target), naive_aggregated(loss, maps, target)
    assert fast.item() == pytest.approx(slow.item(), abs=1e-5, rel=1e-6)
    fast_grads = torch.autograd.grad(fast, maps)
    slow_grads = torch.autograd.grad(slow, maps)
    for f, s in zip(fast_grads, slow_grads):
        torch.testing.assert_close(f, s, rtol=1e-4, atol=1e-6)
    stacked = AggregatedLoss(loss)(torch.stack(maps), target)
    assert stacked.item() == pytest.approx(fast.item(), abs=1e-6)


@pytest.mark.parametrize("squared_pred", [True, False])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("spatial", [(12, 10), (3, 6, 5)])
def test_fused_dice_ce_equals_monai_term_by_term(squared_pred, include_background, spatial):
    """The fused aggregated DiceCE against MONAI's DiceCELoss on each subset sum: float64 to 1e-7 (MONAI's squared
    form derives the intersection from norms, which costs it a few 1e-9), gradients too; float32 to 1e-5."""
    options = {"include_background": include_background, "squared_pred": squared_pred}
    loss = DiceCELoss(to_onehot_y=True, softmax=True, batch=True, lambda_dice=0.7, lambda_ce=0.3, **options)
    aggregated = AggregatedLoss(loss, reduction="none")
    assert aggregated.fused
    torch.manual_seed(len(spatial))
    target = torch.randint(0, 4, (2, 1, *spatial)).float()
    for dtype, tol in ((torch.float64, 1e-7), (torch.float32, 1e-5)):
        maps = [torch.randn(2, 4, *spatial, dtype=dtype, requires_grad=True) for _ in range(5)]
        fused = aggregated(maps, target)
        rows = [loss(sum(m * w for m, w in zip(maps, row)), target) for row in subset_matrix(5, dtype).tolist()]
        torch.testing.assert_close(fused, torch.stack(rows), rtol=tol, atol=tol)
        weights = torch.rand(31, dtype=dtype)
        got = torch.autograd.grad((fused * weights).sum(), maps)
        expected = torch.autograd.grad((torch.stack(rows) * weights).sum(), maps)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=tol, atol=tol * 1e-2)


def test_fused_dice_ce_takes_the_losses_it_computes_exactly():
    assert AggregatedLoss(default_segmentation_loss(squared_pred=True)).fused
    assert fusable_dice_ce(MGRADLoss().loss)
    base = {"softmax": True, "to_onehot_y": True, "batch": True}
    for other in (
        {"batch": False},
        {"softmax": False, "sigmoid": True},
        {"jaccard": True},
        {"label_smoothing": 0.1},
        {"weight": torch.ones(3)},
        {"reduction": "sum"},
    ):
        assert not fusable_dice_ce(DiceCELoss(**{**base, **other})), other
    assert not fusable_dice_ce(DiceLoss(softmax=True, to_onehot_y=True))

    class HalfDiceCE(DiceCELoss):
        def forward(self, input, target):
            return 0.5 * super().forward(input, target)

    assert not fusable_dice_ce(HalfDiceCE(**base))


def test_unfused_losses_one_hot_and_strided_targets_match_the_loop():
    torch.manual_seed(3)
    maps = [torch.randn(2, 3, 8, 8) for _ in range(3)]
    target = torch.randint(0, 3, (2, 1, 8, 8))
    per_sample = DiceCELoss(softmax=True, to_onehot_y=True, batch=False)
    assert not AggregatedLoss(per_sample).fused
    expected = naive_aggregated(per_sample, maps, target)
    assert AggregatedLoss(per_sample)(maps, target).item() == pytest.approx(expected.item(), rel=1e-6)
    fused = AggregatedLoss(DiceCELoss(softmax=True, to_onehot_y=True, batch=True))
    transposed = [m.transpose(2, 3) for m in maps]  # non-contiguous maps and target
    expected = naive_aggregated(fused.loss, transposed, target.transpose(2, 3))
    assert fused(transposed, target.transpose(2, 3)).item() == pytest.approx(expected.item(), rel=1e-6)
    flat_maps, flat_target = [m[..., 0, 0] for m in maps], target[..., 0, 0]  # no spatial axes: the unfused path
    expected = naive_aggregated(fused.loss, flat_maps, flat_target)
    assert fused(flat_maps, flat_target).item() == pytest.approx(expected.item(), rel=1e-6)
    onehot = F.one_hot(target[:, 0], 3).movedim(-1, 1).float()
    pooled = DiceCELoss(softmax=True, batch=True)  # one-hot targets: the unfused path
    expected = naive_aggregated(pooled, maps, onehot)
    assert AggregatedLoss(pooled)(maps, onehot).item() == pytest.approx(expected.item(), rel=1e-6)


def test_fused_dice_ce_under_autocast():
    """bfloat16 maps (autocast's side predictions): the loss computes in float32 and returns bfloat16 gradients."""
    torch.manual_seed(4)
    maps = torch.randn(5, 2, 4, 16, 16).bfloat16().requires_grad_()
    target = torch.randint(0, 4, (2, 1, 16, 16))
    loss = AggregatedLoss(default_segmentation_loss(squared_pred=True))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(maps, target)
    assert value.dtype == torch.float32
    exact = naive_aggregated(loss.loss, list(maps.detach().float()), target)
    assert value.item() == pytest.approx(exact.item(), rel=1e-6)
    (grad,) = torch.autograd.grad(value, maps)
    assert grad.dtype == torch.bfloat16 and grad.abs().sum() > 0


def test_fused_dice_ce_errors():
    loss = default_segmentation_loss()
    with pytest.raises(ValueError, match=r"got maps \[5, 2, 4, 8, 8\] and target \[2, 1, 4, 4\]"):
        aggregated_dice_ce(torch.zeros(5, 2, 4, 8, 8), subset_matrix(5), torch.zeros(2, 1, 4, 4), loss)
    with pytest.raises(ValueError, match="C > 1"):
        aggregated_dice_ce(torch.zeros(5, 2, 1, 8, 8), subset_matrix(5), torch.zeros(2, 1, 8, 8), loss)


def test_aggregated_loss_errors():
    with pytest.raises(ValueError, match="one shape"):
        AggregatedLoss(DiceLoss())([torch.rand(1, 2, 8, 8), torch.rand(1, 2, 4, 4)], torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="at least one"):
        AggregatedLoss(DiceLoss())([], torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="reduction"):
        AggregatedLoss(DiceLoss(), reduction="max")


def hand_dice_ce(logits, target):
    """0.3 * CE + 0.7 * (1 - mean over classes of the batch-pooled soft Dice), smoothing 1e-5."""
    ce = F.cross_entropy(logits, target[:, 0])
    p = logits.softmax(1)
    onehot = F.one_hot(target[:, 0], logits.shape[1]).movedim(-1, 1).float()
    dims = [0] + list(range(2, logits.dim()))
    dice = (2 * (p * onehot).sum(dims) + 1e-5) / (p.sum(dims) + onehot.sum(dims) + 1e-5)
    return 0.3 * ce + 0.7 * (1 - dice).mean()


def fake_output(n_side=5, shape=(2, 3, 16, 16), seed=0):
    g = torch.Generator().manual_seed(seed)
    p1, p2 = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    sides = [torch.randn(shape, generator=g) for _ in range(n_side)]
    return MGRADOutput(p1, p2, [], [], sides)


def test_mgrad_loss_aggregated_default():
    out, target = fake_output(), torch.randint(0, 3, (2, 1, 16, 16))
    expected = (
        hand_dice_ce(out.pred1, target)
        + hand_dice_ce(out.pred2, target)
        + naive_aggregated(hand_dice_ce, out.side_preds, target)
    )
    assert MGRADLoss()(out, target).item() == pytest.approx(expected.item(), rel=1e-5)


def test_mgrad_loss_weighted_and_none():
    out, target = fake_output(), torch.randint(0, 3, (2, 1, 16, 16))
    sup = hand_dice_ce(out.pred1, target) + hand_dice_ce(out.pred2, target)
    weighted = sup + 0.7 * sum(hand_dice_ce(s, target) for s in out.side_preds)
    assert MGRADLoss(deep_supervision="weighted")(out, target).item() == pytest.approx(weighted.item(), rel=1e-5)
    custom = sup + sum(w * hand_dice_ce(s, target) for w, s in zip([1, 0.5, 0.25, 0.125, 0.0625], out.side_preds))
    loss = MGRADLoss(deep_supervision="weighted", side_weights=None, weight_mode="exp")
    assert loss(out, target).item() == pytest.approx(custom.item(), rel=1e-5)
    assert MGRADLoss(deep_supervision="none")(out, target).item() == pytest.approx(sup.item(), rel=1e-5)


def test_mgrad_loss_one_hot_target_and_plain_tensor():
    out, target = fake_output(), torch.randint(0, 3, (2, 1, 16, 16))
    onehot = F.one_hot(target[:, 0], 3).movedim(-1, 1).float()
    loss = MGRADLoss()
    assert loss(out, onehot).item() == pytest.approx(loss(out, target).item(), rel=1e-6)
    assert loss(out.pred1, target).item() == pytest.approx(hand_dice_ce(out.pred1, target).item(), rel=1e-5)


def test_mgrad_loss_custom_loss_and_errors():
    out, target = fake_output(), torch.randint(0, 3, (2, 1, 16, 16))
    dice = DiceLoss(softmax=True, to_onehot_y=True)
    expected = dice(out.pred1, target) + dice(out.pred2, target) + naive_aggregated(dice, out.side_preds, target)
    assert MGRADLoss(loss=dice)(out, target).item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="does not match the prediction"):
        MGRADLoss()(out, torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="expected 1 .class indices. or 3"):
        MGRADLoss()(out, torch.zeros(2, 2, 16, 16))
    with pytest.raises(ValueError, match="deep_supervision"):
        MGRADLoss(deep_supervision="deep")
    # one output channel: the default loss's softmax would be 1 everywhere, and training would learn nothing
    with pytest.raises(ValueError, match=r"at least 2 classes.*got shape \[2, 1, 16, 16\].*out_channels=2"):
        MGRADLoss()(torch.randn(2, 1, 16, 16), torch.zeros(2, 1, 16, 16))
    sigmoid = DiceLoss(sigmoid=True)  # a loss of one's own may take one channel
    assert MGRADLoss(loss=sigmoid, deep_supervision="none")(torch.randn(2, 1, 16, 16), (target > 0).float()).dim() == 0


def test_mgrad_loss_names_a_wrong_output_and_too_few_side_weights():
    out, target = fake_output(), torch.randint(0, 3, (2, 1, 16, 16))
    with pytest.raises(ValueError, match="train-mode output .* got a list of 2 items"):
        MGRADLoss()([out.pred1, out.pred2], target)
    seven = fake_output(n_side=7)
    # DeepSupervisionLoss would silently weigh all seven 1.0 instead of the default 0.7
    with pytest.raises(ValueError, match="side_weights holds 5 weights for 7 side predictions"):
        MGRADLoss(deep_supervision="weighted")(seven, target)
    sup = hand_dice_ce(seven.pred1, target) + hand_dice_ce(seven.pred2, target)
    expected = sup + 0.7 * sum(hand_dice_ce(s, target) for s in seven.side_preds)
    loss = MGRADLoss(deep_supervision="weighted", side_weights=(0.7,) * 7)
    assert loss(seven, target).item() == pytest.approx(expected.item(), rel=1e-5)
    three = fake_output(n_side=3)  # the first weights serve a network of fewer stages
    expected = hand_dice_ce(three.pred1, target) + hand_dice_ce(three.pred2, target)
    expected = expected + 0.7 * sum(hand_dice_ce(s, target) for s in three.side_preds)
    assert MGRADLoss(deep_supervision="weighted")(three, target).item() == pytest.approx(expected.item(), rel=1e-5)


def released_dice_ce(logits, target):
    """The released loss: 0.3 * CE + 0.7 * mean over classes of 1 - (2 sum p t + 1e-5) / (sum p^2 + sum t^2 + 1e-5)."""
    ce = F.cross_entropy(logits, target[:, 0])
    p = logits.softmax(1)
    onehot = F.one_hot(target[:, 0], logits.shape[1]).movedim(-1, 1).float()
    dims = [0] + list(range(2, logits.dim()))
    dice = (2 * (p * onehot).sum(dims) + 1e-5) / ((p * p).sum(dims) + (onehot * onehot).sum(dims) + 1e-5)
    return 0.3 * ce + 0.7 * (1 - dice).mean()


def test_released_dice_form():
    out, target = fake_output(), torch.randint(0, 3, (2, 1, 16, 16))
    logits = out.pred1.clone().requires_grad_()
    loss = default_segmentation_loss(squared_pred=True)
    assert loss(logits, target).item() == pytest.approx(released_dice_ce(logits, target).item(), rel=1e-6)
    got = torch.autograd.grad(loss(logits, target), logits)[0]
    torch.testing.assert_close(got, torch.autograd.grad(released_dice_ce(logits, target), logits)[0])
    monai_default = torch.autograd.grad(default_segmentation_loss()(logits, target), logits)[0]
    assert not torch.allclose(monai_default, got, rtol=1e-2, atol=0)  # MONAI's sum p + sum t is another gradient
    expected = (
        released_dice_ce(out.pred1, target)
        + released_dice_ce(out.pred2, target)
        + naive_aggregated(released_dice_ce, out.side_preds, target)
    )
    assert MGRADLoss(squared_pred=True)(out, target).item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="squared_pred"):
        MGRADLoss(loss=DiceLoss(), squared_pred=True)


def test_table2_loss_is_weighted_with_unit_weights():
    out, target = fake_output(), torch.randint(0, 3, (2, 1, 16, 16))
    expected = sum(released_dice_ce(p, target) for p in (out.pred1, out.pred2, *out.side_preds))
    assert MGRADLoss.table2()(out, target).item() == pytest.approx(expected.item(), rel=1e-5)
    explicit = MGRADLoss(deep_supervision="weighted", side_weights=(1,) * 5, squared_pred=True)
    assert explicit(out, target).item() == pytest.approx(expected.item(), rel=1e-5)
