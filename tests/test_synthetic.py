"""The synthetic phantom: deterministic, CT-like, anisotropic and oblique, several structures, not trivial."""

import json
import time

import nibabel as nib
import numpy as np

from mgrad.data import DATASETS, make_dataset
from mgrad.data.synthetic import AORTA, GALLBLADDER, KIDNEY_LEFT, KIDNEY_RIGHT, LIVER, PANCREAS, SPLEEN


def _arrays(root, case=0):
    img = nib.load(root / "imagesTr" / f"case_{case:03d}.nii.gz")
    lab = nib.load(root / "labelsTr" / f"case_{case:03d}.nii.gz")
    return img, np.asarray(img.dataobj), np.asarray(lab.dataobj)


def test_deterministic_by_seed(tmp_path):
    start = time.perf_counter()
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        make_dataset(str(tmp_path / name), num_cases=2, seed=seed)
    assert time.perf_counter() - start < 10
    a, b, c = (_arrays(tmp_path / n, 1) for n in "abc")
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])
    np.testing.assert_array_equal(a[0].affine, b[0].affine)
    assert not np.array_equal(a[1], c[1]) and not np.allclose(a[0].affine, c[0].affine)


def test_dataset_json(synthetic_dir):
    meta = json.loads((synthetic_dir / "dataset.json").read_text())
    assert len(meta["training"]) == 6 and len(meta["validation"]) == 2
    assert all(d["image"].startswith("./imagesTr/") and d["label"].startswith("./labelsTr/") for d in meta["training"])
    assert [meta["labels"][str(i)] for i in range(1, 9)] == list(DATASETS["synthetic"].class_names)
    assert DATASETS["synthetic"].num_classes == len(meta["labels"]) == 9  # the Synapse organs and label values


def test_geometry_is_anisotropic_and_oblique(synthetic_dir):
    img, image, label = _arrays(synthetic_dir)
    assert image.shape == label.shape == (96, 96, 24) and image.dtype == np.int16 and label.dtype == np.uint8
    np.testing.assert_allclose(img.header.get_zooms(), (0.8, 0.8, 2.5), rtol=1e-5)
    rot = img.affine[:3, :3] / np.array([0.8, 0.8, 2.5])
    assert nib.aff2axcodes(img.affine) != ("R", "A", "S")  # flipped axes, so Orientationd has work to do
    assert np.abs(rot - np.round(rot)).max() > 0.05  # oblique, not a pure permutation/flip
    assert np.abs(img.affine[:3, 3]).min() > 10  # origin offset


def test_structures_are_learnable_but_not_trivial(synthetic_dir):
    sizes = []
    for case in range(8):
        _, image, label = _arrays(synthetic_dir, case)
        counts = np.bincount(label.ravel(), minlength=9)
        assert (counts[1:] > 0).all()  # every structure in every case
        sizes.append(counts)
        assert counts[LIVER] == counts[1:].max() and counts[GALLBLADDER] == counts[1:].min()
        assert counts[GALLBLADDER] < 0.002 * label.size  # a small structure
        empty = label.reshape(-1, label.shape[-1]).max(0) == 0
        assert 0 < empty.sum() < label.shape[-1] // 2  # some slices hold no structure
        assert -1024 <= image.min() and image.max() < 1000
    sizes = np.array(sizes)
    assert (sizes[:, 1:].std(0) / sizes[:, 1:].mean(0) > 0.05).all()  # sizes vary by case
    _, image, label = _arrays(synthetic_dir)

    def overlap(a, b):  # share of a's voxels inside b's 5-95 percentile HU range
        lo, hi = np.percentile(image[b], [5, 95])
        return ((image[a] >= lo) & (image[a] <= hi)).mean()

    soft_tissue = (label == 0) & (image > -30)
    assert overlap(label == SPLEEN, label == LIVER) > 0.5
    assert overlap(label == PANCREAS, label == LIVER) > 0.3
    assert overlap(label == AORTA, label == KIDNEY_LEFT) > 0.3
    assert overlap(label == GALLBLADDER, soft_tissue) > 0.5
    assert overlap(label == LIVER, label == KIDNEY_RIGHT) < 0.2  # but classes differ on average
