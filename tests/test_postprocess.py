"""Connected-component post-processing per class and its choice from validation cases."""

import json
import warnings

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage

from mgrad.postprocess import PostProcessd, apply_rules, choose_rules, load_rules, save_rules


def blob_volume(islands: bool) -> np.ndarray:
    """Class 1: a 6x6x4 block (plus a 1-voxel island); class 2: two blocks of 5x5x3 and 4x4x2 voxels."""
    v = np.zeros((24, 24, 8), np.int64)
    v[2:8, 2:8, 2:6] = 1
    v[14:19, 14:19, 1:4] = 2
    v[2:6, 16:20, 5:7] = 2
    if islands:
        v[20, 3, 6] = 1
    return v


def test_apply_rules_largest_and_min_size():
    labels = torch.as_tensor(blob_volume(islands=True))[None]
    largest = apply_rules(labels, {1: {"largest": True, "min_size_mm3": 0}, 2: {"largest": True, "min_size_mm3": 0}})
    assert (largest == 1).sum() == 144 and (largest == 2).sum() == 75  # the island and the smaller block of 2 go
    small = apply_rules(labels, {1: {"largest": False, "min_size_mm3": 2.0}, 2: {"largest": False, "min_size_mm3": 2}})
    assert (small == 1).sum() == 144 and (small == 2).sum() == 75 + 32
    # min_size is a volume: with 0.5 mm^3 voxels the 32-voxel block (16 mm^3) falls below 20 mm^3
    half = apply_rules(labels, {2: {"largest": False, "min_size_mm3": 20.0}}, spacing=(1.0, 1.0, 0.5))
    assert (half == 2).sum() == 75 and (half == 1).sum() == 145
    assert torch.equal(apply_rules(labels, {}), labels)


def test_min_size_rule_shows_no_deprecation_of_the_libraries_below(monkeypatch):
    labels = torch.as_tensor(blob_volume(islands=True))[None]
    filtered = []  # warning filters are process-wide, not thread-safe: the rule runs in a postprocessing thread
    monkeypatch.setattr(warnings, "filterwarnings", lambda *args, **kwargs: filtered.append(args))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kept = apply_rules(labels, {1: {"min_size_mm3": 2.0}})
    assert (kept == 1).sum() == 144  # the island went
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == []
    assert filtered == []


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 0.8, 2.5)])
def test_min_size_rule_keeps_exactly_the_components_of_at_least_that_volume(spacing):
    mask = np.random.default_rng(3).random((20, 18, 9)) > 0.9  # components of 1 to about 80 voxels
    components, _ = ndimage.label(mask, np.ones((3, 3, 3)))  # full connectivity: 26 neighbours
    volumes = np.bincount(components.ravel())[1:] * np.prod(spacing)
    for min_size in (1.9, 3.5, 10.0):
        kept = apply_rules(torch.as_tensor(mask, dtype=torch.uint8)[None], {1: {"min_size_mm3": min_size}}, spacing)
        expected = np.isin(components, 1 + np.flatnonzero(volumes >= min_size))
        assert 0 < expected.sum() < mask.sum()
        np.testing.assert_array_equal(kept.numpy()[0], expected)


def test_rules_are_chosen_per_class_by_dice(tmp_path):
    label = blob_volume(islands=False)
    pred = blob_volume(islands=True)  # class 1 gains a stray island; class 2 is already right
    pred[12, 20, 1] = 2  # and a stray island of class 2, smaller than its smaller true block
    rules, dice = choose_rules([(pred, label, (1.0, 1.0, 1.0))] * 2, num_classes=3)
    assert rules[1]["largest"] or rules[1]["min_size_mm3"] > 0
    assert not rules[2]["largest"] and 1 < rules[2]["min_size_mm3"] < 32  # largest would drop the smaller block
    assert dice[1]["none"] < 1 and max(dice[1].values()) == 1.0
    assert dice[2]["largest"] < dice[2]["none"]
    path = tmp_path / "postprocessing.json"
    save_rules(path, rules, dice=dice)
    assert load_rules(path) == rules
    out = PostProcessd("pred", path)({"pred": MetaTensor(torch.as_tensor(pred)[None].to(torch.uint8))})["pred"]
    assert isinstance(out, MetaTensor) and out.dtype == torch.uint8
    np.testing.assert_array_equal(out.numpy()[0], label)


def test_no_rule_when_nothing_improves():
    label = blob_volume(islands=False)
    rules, _ = choose_rules([(label, label, (1.0, 1.0, 1.0))], num_classes=3)
    assert all(not r["largest"] and r["min_size_mm3"] == 0 for r in rules.values())


def test_bad_rules_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.json not found"):
        load_rules(tmp_path / "nowhere.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rules": {"1": {"largest": True}}}))
    with pytest.raises(ValueError, match="bad.json are not valid"):
        load_rules(bad)


def test_rules_from_files_and_applied_to_a_file(tmp_path):
    import nibabel as nib

    from mgrad.postprocess import choose_rules_for_files, postprocess_file

    affine = np.diag([-1.5, 1.5, 3.0, 1.0])  # stored in another orientation than RAS
    pred, label = blob_volume(islands=True), blob_volume(islands=False)
    nib.save(nib.Nifti1Image(pred.astype(np.uint8), affine), tmp_path / "a_seg.nii.gz")
    nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), tmp_path / "a.nii.gz")
    rules, dice = choose_rules_for_files([(tmp_path / "a_seg.nii.gz", tmp_path / "a.nii.gz")], 3)
    assert rules[1]["largest"] or rules[1]["min_size_mm3"] > 0
    postprocess_file(tmp_path / "a_seg.nii.gz", tmp_path / "out" / "a_seg.nii.gz", rules)
    out = nib.load(tmp_path / "out" / "a_seg.nii.gz")
    np.testing.assert_array_equal(np.asarray(out.dataobj), label)
    np.testing.assert_allclose(out.affine, affine)
