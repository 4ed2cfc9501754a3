"""Volume preprocessing (shapes, orientation, affine, Invertd), presets, label maps, slice sampling, augmentation."""

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import CacheDataset
from monai.transforms import Compose, EnsureChannelFirstd, Invertd, MapLabelValued, Orientationd

from mgrad.data import DATASETS, get_datalist
from mgrad.transforms import LoadVolumed, RandSliceSamplerd, intensity_transforms, train_transforms, volume_transforms


@pytest.fixture
def case(synthetic_dir):
    return get_datalist("synthetic", str(synthetic_dir), "validation")[0]


def test_volume_transforms_shape_orientation_affine(case):
    out = volume_transforms("ct", 64, num_classes=9)(case)
    image, label = out["image"], out["label"]
    assert image.shape == label.shape == (1, 64, 64, 24) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert set(torch.unique(label).tolist()) == set(range(9))
    assert nib.aff2axcodes(image.affine.numpy()) == ("R", "A", "S")
    np.testing.assert_allclose(image.affine.numpy(), label.affine.numpy())
    src = nib.load(case["image"]).affine
    np.testing.assert_allclose(
        np.linalg.norm(image.affine[:3, :3].numpy(), axis=0), [0.8 * 96 / 64, 1.2, 2.5], rtol=1e-5
    )
    # the physical position of the volume centre is kept through orientation and resize
    centre = lambda aff, shape: aff[:3, :3] @ ((np.array(shape) - 1) / 2) + aff[:3, 3]  # noqa: E731
    np.testing.assert_allclose(centre(image.affine.numpy(), (64, 64, 24)), centre(src, (96, 96, 24)), atol=1e-3)


@pytest.mark.parametrize("size", [96, 64])
def test_invertd_round_trip_restores_geometry(case, size):
    chain = volume_transforms("ct", size, num_classes=9)
    out = chain(case)
    out["pred"] = out["label"].clone()
    back = Invertd(keys="pred", transform=chain, orig_keys="image", nearest_interp=True)(out)["pred"]
    ref = nib.load(case["label"])
    assert back.shape == (1, *ref.shape)
    np.testing.assert_allclose(back.affine.numpy(), ref.affine, atol=1e-4)
    agreement = (back[0].numpy() == np.asarray(ref.dataobj)).mean()
    assert agreement == 1.0 if size == 96 else agreement > 0.98


def test_intensity_presets():
    x = {"image": torch.tensor([[-1000.0, -125.0, 75.0, 275.0, 2000.0]])}
    ct = Compose(intensity_transforms("ct"))(x)["image"]
    np.testing.assert_allclose(np.asarray(ct), [[0.0, 0.0, 0.5, 1.0, 1.0]], atol=1e-6)
    mri = Compose(intensity_transforms("mri"))({"image": torch.tensor([[10.0, 20.0, 30.0]])})["image"]
    np.testing.assert_allclose(np.asarray(mri), [[0.0, 0.5, 1.0]])
    assert intensity_transforms("none") == []
    with pytest.raises(ValueError, match="unknown intensity preset"):
        intensity_transforms("pet")


def test_btcv_to_synapse_label_map(tmp_path):
    label = np.zeros((8, 8, 14), np.uint8)
    for btcv_id in range(14):
        label[..., btcv_id] = btcv_id
    image = np.zeros((8, 8, 14), np.int16)
    for name, array in (("img", image), ("lab", label)):
        nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / f"{name}.nii.gz")
    item = {"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "lab.nii.gz")}
    out = volume_transforms("ct", 8, label_map=DATASETS["synapse"].label_map, num_classes=9)(item)["label"]
    per_slice = [int(out[0, 0, 0, z]) for z in range(14)]
    # BTCV: 1 spleen 2 kidney_right 3 kidney_left 4 gallbladder 5 esophagus 6 liver 7 stomach 8 aorta ... 11 pancreas
    assert per_slice == [0, 7, 4, 3, 2, 0, 5, 8, 1, 0, 0, 6, 0, 0]


def test_train_transforms_samples(case):
    samples = train_transforms("ct", 64, num_samples=5, pos_fraction=0.5, num_classes=9)(case)
    assert isinstance(samples, list) and len(samples) == 5
    for s in samples:
        assert (
            type(s["image"]) is torch.Tensor and s["image"].shape == (1, 64, 64) and s["image"].dtype == torch.float32
        )
        assert s["label"].shape == (1, 64, 64) and set(torch.unique(s["label"]).tolist()) <= set(range(9))
        assert "fg_slices" not in s and 0 <= s["slice_index"] < 24


@pytest.mark.parametrize("pos_fraction", [0.0, 0.5, 0.9])
def test_foreground_share_of_sampled_slices(synthetic_dir, pos_fraction):
    items = get_datalist("synthetic", str(synthetic_dir), "training")
    chain = train_transforms("ct", 48, 16, pos_fraction, augment=False)
    chain.set_random_state(0)
    ds = CacheDataset(items, chain, progress=False)
    fg = [bool(s["label"].any()) for i in range(60) for s in ds[i % len(ds)]]
    assert abs(np.mean(fg) - pos_fraction) < 0.05


def test_uniform_sampling_and_single_slice_volume():
    label = torch.zeros(1, 4, 4, 10)
    label[..., 7] = 1
    sampler = RandSliceSamplerd(num_samples=2000, pos_fraction=None)
    sampler.set_random_state(0)
    picks = [s["slice_index"] for s in sampler({"image": torch.rand(1, 4, 4, 10), "label": label})]
    assert np.bincount(picks, minlength=10).min() > 150  # all slices, about equally
    one = RandSliceSamplerd(num_samples=3, pos_fraction=1.0)({"image": torch.rand(2, 4, 4, 1), "label": label[..., :1]})
    assert [s["image"].shape for s in one] == [(2, 4, 4)] * 3  # a 2D slice file, no foreground: falls back


def test_augmentation_keeps_labels_and_varies(case):
    augmented = train_transforms("ct", 64, 16, 1.0, augment=True, num_classes=9)
    augmented.set_random_state(1)
    plain = train_transforms("ct", 64, 16, 1.0, augment=False, num_classes=9)
    plain.set_random_state(1)  # the same slices, unaugmented
    changed = 0
    for a, p in zip(augmented(case), plain(case)):
        assert a["slice_index"] == p["slice_index"] and a["image"].shape == (1, 64, 64)
        assert set(torch.unique(a["label"]).tolist()) <= set(range(9))  # nearest: no new label values
        changed += not torch.equal(a["label"], p["label"])
    assert 8 <= changed <= 16  # ~75% of samples are rotated or flipped


def test_real_acdc_h5_slices_and_volumes(acdc_h5_dir):
    train = get_datalist("acdc_h5", str(acdc_h5_dir), "training")[:3]
    for s in [train_transforms("none", 96, 1, None, num_classes=4)(item)[0] for item in train]:
        assert s["image"].shape == s["label"].shape == (1, 96, 96)
    vol = get_datalist("acdc_h5", str(acdc_h5_dir), "validation")[0]
    out = volume_transforms("none", 96, num_classes=4)(vol)
    assert out["image"].shape[:3] == (1, 96, 96) and 8 <= out["image"].shape[-1] <= 16
    assert set(torch.unique(out["label"]).tolist()) == {0, 1, 2, 3}


def test_real_totalsegmentator_seg(totalseg_dir):
    seg = str(totalseg_dir / "example_seg_dicom.nii.gz")
    ref = nib.load(seg)
    out = Compose([LoadVolumed("label"), EnsureChannelFirstd("label"), Orientationd("label", axcodes="RAS")])(
        {"label": seg}
    )["label"]
    assert out.shape == (1, 512, 512, 20) and nib.aff2axcodes(ref.affine) == ("L", "A", "S")
    np.testing.assert_allclose(out.affine.numpy(), nib.as_closest_canonical(ref).affine, atol=1e-4)
    np.testing.assert_array_equal(out[0].numpy(), np.asarray(nib.as_closest_canonical(ref).dataobj))
    values = sorted(int(v) for v in np.unique(np.asarray(ref.dataobj)))
    assert len(values) == 32
    to_synapse = {52: 1, 4: 2, 3: 3, 2: 4, 5: 5, 7: 6, 1: 7, 6: 8}
    mapped = MapLabelValued("label", values, [to_synapse.get(v, 0) for v in values])({"label": out})["label"]
    assert set(torch.unique(mapped).tolist()) == {0, 1, 5, 6, 7, 8}  # gallbladder and kidneys absent from the slab


def test_real_totalsegmentator_ct_with_seg(totalseg_dir, tmp_path):
    """The DICOM CT (JPEG 2000; read with SimpleITK, written as NIfTI, LPS) and its seg (LAS, same grid) pass one
    chain; the prediction inverts to the CT's geometry."""
    sitk = pytest.importorskip("SimpleITK")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(totalseg_dir / "example_ct_dicom")))
    sitk.WriteImage(reader.Execute(), str(tmp_path / "ct.nii.gz"))
    seg = str(totalseg_dir / "example_seg_dicom.nii.gz")
    values = sorted(int(v) for v in np.unique(np.asarray(nib.load(seg).dataobj)))
    label_map = {v: {52: 1, 4: 2, 3: 3, 2: 4, 5: 5, 7: 6, 1: 7, 6: 8}.get(v, 0) for v in values}
    chain = volume_transforms("ct", 96, label_map=label_map, num_classes=9)
    out = chain({"image": str(tmp_path / "ct.nii.gz"), "label": seg})  # validation: same shape and affine
    assert out["image"].shape == (1, 96, 96, 20) and 0.0 <= float(out["image"].min()) <= float(out["image"].max()) <= 1
    out["pred"] = out["label"].clone()
    back = Invertd(keys="pred", transform=chain, orig_keys="image", nearest_interp=True)(out)["pred"]
    assert back.shape == (1, 512, 512, 20)
    np.testing.assert_allclose(back.affine.numpy(), nib.load(tmp_path / "ct.nii.gz").affine, atol=1e-3)


def test_orientation_by_the_image_space_orients_ras_volumes_as_the_old_labels_did(tmp_path):
    """The pipelines give Orientationd labels=None (MONAI's coming default: the axes named by the MetaTensor's space);
    mgrad's and MONAI's readers load RAS, where it must orient exactly as the old default labels did."""
    path = tmp_path / "lps_like.nii.gz"
    affine = np.array([[-0.8, 0, 0, 90], [0, 0, 2.5, -40], [0, -1.2, 0, 20], [0, 0, 0, 1]])  # L, S, P axes
    nib.save(nib.Nifti1Image(np.random.default_rng(3).random((12, 10, 8), dtype=np.float32), affine), path)
    data = EnsureChannelFirstd("image")(LoadVolumed("image")({"image": str(path)}))
    old_labels = (("L", "R"), ("P", "A"), ("I", "S"))
    new = Orientationd("image", axcodes="RAS", labels=None)(dict(data))["image"]
    old = Orientationd("image", axcodes="RAS", labels=old_labels)(dict(data))["image"]
    assert new.shape == old.shape == (1, 12, 8, 10) and torch.equal(new.as_tensor(), old.as_tensor())
    np.testing.assert_allclose(new.affine.numpy(), old.affine.numpy())
    assert nib.aff2axcodes(new.affine.numpy()) == ("R", "A", "S")
