"""The paper preset's training protocol: every slice of every raw volume once per epoch, the released batch sizes,
optimizer and epochs."""

import collections
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from mgrad.bundle import bundle_configs, default_bundle_root


def _train_parser(dataset: str, dataset_dir: Path, **overrides) -> ConfigParser:
    """The bundle's training config on ``dataset``; the paper preset at 32x32 slices, so that a test runs quickly."""
    parser = ConfigParser()
    parser.read_config(bundle_configs(default_bundle_root(), ["train"]))
    parser["size_presets"]["paper"]["spatial_size"] = 32
    device = "$torch.device('cpu')"
    parser.update(
        {"dataset": dataset, "dataset_dir": str(dataset_dir), "device": device, "num_workers": 0, **overrides}
    )
    return parser


def _count_epoch(loader) -> collections.Counter:
    seen = collections.Counter()
    for batch in loader:
        assert batch["image"].shape[1:] == (1, 32, 32) and batch["label"].shape[1:] == (1, 32, 32)
        seen.update(zip(batch["volume_index"].tolist(), batch["slice_index"].tolist()))
    return seen


def test_paper_loader_visits_every_slice_of_raw_volumes_once(phantom_dir):
    parser = _train_parser("synthetic", phantom_dir, preset="paper")
    loader = parser.get_parsed_content("train#dataloader")
    depths = [12] * 5  # the phantom's 5 training volumes of 48x48x12
    assert loader.batch_size == 8 and len(loader.dataset) == sum(depths)
    for _ in range(2):  # each epoch: every (volume, slice) exactly once, batches mixing volumes
        seen = _count_epoch(loader)
        assert sum(seen.values()) == sum(depths) and set(seen.values()) == {1}
        assert set(seen) == {(v, z) for v, d in enumerate(depths) for z in range(d)}
    first = next(iter(loader))
    assert len(set(first["volume_index"].tolist())) > 1


def test_paper_preset_acdc_nifti_batch_optimizer_and_epochs(tmp_path):
    """Raw ACDC NIfTI volumes of different depths: batch 12, every slice once; AdamW 1e-4 constant, 300 epochs."""
    root = tmp_path / "acdc"
    rng = np.random.default_rng(0)
    for p in range(1, 8):
        folder = root / f"patient{p:03d}"
        folder.mkdir(parents=True)
        shape = (40, 36, 3 + p % 3)
        affine = np.diag([1.5, 1.5, 10.0, 1.0])
        image, label = rng.random(shape, dtype=np.float32), rng.integers(0, 4, shape).astype(np.uint8)
        nib.save(nib.Nifti1Image(image, affine), folder / f"patient{p:03d}_frame01.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), folder / f"patient{p:03d}_frame01_gt.nii.gz")
    parser = _train_parser("acdc", root, preset="paper")
    loader = parser.get_parsed_content("train#dataloader")
    training = parser.get_parsed_content("train#datalist")
    depths = [nib.load(item["image"]).shape[-1] for item in training]
    assert loader.batch_size == 12 and len(loader.dataset) == sum(depths)
    seen = _count_epoch(loader)
    assert sum(seen.values()) == sum(depths) and set(seen.values()) == {1}

    assert parser.get_parsed_content("epochs") == 300
    optimizer = parser.get_parsed_content("optimizer")
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["lr"] == 1e-4 and optimizer.defaults["weight_decay"] == 1e-4
    assert parser.get_parsed_content("lr_power") == 0.0  # constant learning rate


@pytest.mark.parametrize("preset", ["paper", "small"])
def test_sgd_switch_is_the_paper_texts(phantom_dir, preset):
    parser = _train_parser("synthetic", phantom_dir, preset=preset, optimizer_name="sgd")
    parser["network_def"]["features"] = [4, 8, 16, 32, 64]  # the optimizer needs parameters, not the full network
    parser["network_def"]["rfb_channels"] = 4
    optimizer = parser.get_parsed_content("optimizer")
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["lr"] == 0.01 and optimizer.defaults["momentum"] == 0.9
    assert optimizer.defaults["weight_decay"] == 1e-4


def _released_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The released ``L = 0.3 CE + 0.7 Dice``, written out: softmax, every class (background included) pooled over
    the batch, Dice term ``1 - (2 sum p t + s) / (sum p^2 + sum t^2 + s)`` per class with s = 1e-5, mean over
    classes."""
    p = torch.softmax(logits, 1)
    t = torch.nn.functional.one_hot(target[:, 0], logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
    ce = -(t * torch.log_softmax(logits, 1)).sum(1).mean()
    dims = (0, 2, 3)
    dice = 1 - (2 * (p * t).sum(dims) + 1e-5) / ((p**2).sum(dims) + (t**2).sum(dims) + 1e-5)
    return 0.3 * ce + 0.7 * dice.mean()


@pytest.mark.parametrize("table2_loss", [False, True])
def test_paper_preset_loss_is_the_released_formula(phantom_dir, table2_loss):
    """Both decoders and every side term use the released Dice form; Table 2's loss (``--table2_loss true``) sums the
    five side predictions' losses with weight 1.0, Table 1's sums the losses of all 31 subset sums."""
    gen = torch.Generator().manual_seed(0)
    p1, p2, *sides = (3 * torch.randn(2, 4, 8, 8, generator=gen, dtype=torch.float64) for _ in range(7))
    target = torch.randint(0, 4, (2, 1, 8, 8), generator=gen)
    output = (p1, p2, None, None, sides)

    loss = _train_parser("synthetic", phantom_dir, preset="paper", table2_loss=table2_loss).get_parsed_content("loss")
    if table2_loss:
        side = sum(_released_loss(s, target) for s in sides)
    else:
        subsets = [[s for i, s in enumerate(sides) if code >> i & 1] for code in range(1, 32)]
        side = sum(_released_loss(sum(subset), target) for subset in subsets)
    expected = _released_loss(p1, target) + _released_loss(p2, target) + side
    torch.testing.assert_close(loss(output, target), expected, rtol=1e-6, atol=0)  # MONAI one-hots in float32

    small = _train_parser("synthetic", phantom_dir, preset="small", table2_loss=table2_loss).get_parsed_content("loss")
    assert small.deep_supervision == ("weighted" if table2_loss else "aggregated")
    if not table2_loss:  # the small preset keeps MONAI's Dice denominator (sum p + sum t)
        assert not torch.isclose(small(output, target), expected, rtol=1e-3)
