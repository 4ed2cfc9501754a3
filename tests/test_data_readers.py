"""npz/h5 readers: slice axis last, 2D as (H, W, 1), identity affine, one array per key; real ACDC h5 files; the one
reader of every file type that a LoadImaged(reader=...) takes."""

import logging

import h5py
import nibabel as nib
import numpy as np
import pytest
from data_fixtures import write_h5
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from mgrad.data import FileTypeReader, H5Reader, NpzReader, image_readers
from mgrad.transforms import LoadVolumed


def test_h5_volume_is_transposed_to_slice_axis_last(tmp_path):
    image = np.random.default_rng(0).random((5, 12, 10), dtype=np.float32)  # (Z, H, W)
    label = (image > 0.5).astype(np.uint8)
    path = write_h5(tmp_path / "case0001.npy.h5", image, label)
    out = LoadImaged(["image"], reader=H5Reader("image"))({"image": str(path)})["image"]
    assert out.shape == (12, 10, 5)
    np.testing.assert_array_equal(out[..., 3].numpy(), image[3])
    np.testing.assert_array_equal(out.affine.numpy(), np.eye(4))
    d = LoadVolumed(["image", "label"])({"image": str(path), "label": str(path)})
    np.testing.assert_array_equal(d["label"][..., 2].numpy(), label[2])


def test_npz_slice_loads_as_single_slice_volume(tmp_path):
    image = np.random.default_rng(1).random((16, 14), dtype=np.float32)
    label = np.zeros((16, 14), np.float32)
    label[4:8, 3:9] = 8
    np.savez(tmp_path / "case0005_slice042.npz", image=image, label=label)
    path = str(tmp_path / "case0005_slice042.npz")
    d = Compose([LoadVolumed(["image", "label"]), EnsureChannelFirstd(["image", "label"])])(
        {"image": path, "label": path}
    )
    assert d["image"].shape == (1, 16, 14, 1) and d["label"].shape == (1, 16, 14, 1)
    np.testing.assert_array_equal(d["image"][0, ..., 0].numpy(), image)
    assert set(np.unique(d["label"].numpy())) == {0.0, 8.0}
    assert d["image"].meta["filename_or_obj"] == path
    assert NpzReader().verify_suffix(path) and not NpzReader().verify_suffix("a.nii.gz")


def test_missing_array_names_file_and_key(tmp_path):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=np.zeros((2, 4, 4), np.float32))
    with pytest.raises(KeyError, match="no dataset 'label'"):
        H5Reader("label").read(str(path))


def test_real_acdc_h5_volume_and_slice(acdc_h5_dir):
    vol = acdc_h5_dir / "volumes" / "patient002_frame01.h5"
    with h5py.File(vol) as f:
        raw_image, raw_label = f["image"][()], f["label"][()]
    assert raw_image.dtype == np.float32 and raw_label.dtype == np.uint8
    d = LoadVolumed(["image", "label"])({"image": str(vol), "label": str(vol)})
    z, h, w = raw_image.shape
    assert d["image"].shape == (h, w, z) == d["label"].shape and 8 <= z <= 16
    np.testing.assert_array_equal(d["image"].numpy(), np.moveaxis(raw_image, 0, -1))
    assert set(np.unique(d["label"].numpy()).astype(int)) <= {0, 1, 2, 3}
    assert 0.0 <= float(d["image"].min()) and float(d["image"].max()) <= 1.0
    sl = sorted((acdc_h5_dir / "slices").glob("*.h5"))[0]
    s = LoadVolumed(["image"])({"image": str(sl)})["image"]
    assert s.ndim == 3 and s.shape[-1] == 1


def test_file_type_reader_reads_each_type_at_the_first_try(tmp_path, caplog):
    """Given a list of readers, MONAI's loader tries each on every file and logs each failure (three INFO lines per
    NIfTI file with mgrad's readers); given FileTypeReader, every type is read by its own reader, silently."""
    image = np.random.default_rng(2).random((5, 12, 10), dtype=np.float32)  # (Z, H, W)
    h5 = write_h5(tmp_path / "case.h5", image, (image > 0.5).astype(np.uint8))
    npz = tmp_path / "case.npz"
    np.savez(npz, image=image[0], label=image[0] > 0.5)
    nii = tmp_path / "case.nii.gz"
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    nib.save(nib.Nifti1Image(np.moveaxis(image, 0, -1), affine), nii)

    loader = LoadImaged("image", reader=FileTypeReader("image"), image_only=True)
    with caplog.at_level(logging.INFO):
        loaded = {path.suffix: loader({"image": str(path)})["image"] for path in (h5, npz, nii)}
    assert [r.getMessage() for r in caplog.records if "unable to load" in r.getMessage()] == []
    assert loaded[".h5"].shape == (12, 10, 5) and loaded[".npz"].shape == (12, 10, 1)
    np.testing.assert_array_equal(loaded[".gz"].numpy(), np.moveaxis(image, 0, -1))
    np.testing.assert_allclose(loaded[".gz"].affine.numpy(), affine)
    np.testing.assert_array_equal(loaded[".h5"].numpy(), loaded[".gz"].numpy())

    caplog.clear()
    with caplog.at_level(logging.INFO):
        LoadImaged("image", reader=image_readers("image"), image_only=True)({"image": str(nii)})
    assert len([r for r in caplog.records if "unable to load" in r.getMessage()]) == 3

    unknown = tmp_path / "case.xyz"
    unknown.write_text("not an image")
    with pytest.raises(RuntimeError, match=r"case\.xyz"):  # no reader of its type (ITK, where installed, tries)
        loader({"image": str(unknown)})


def test_file_type_reader_does_not_let_other_readers_guess_at_a_file_its_reader_cannot_read(tmp_path):
    # MONAI's NumpyReader would read the label of a .npz without an image, and return it as the image
    labels_only = tmp_path / "case.npz"
    np.savez(labels_only, label=np.ones((8, 8), np.uint8))
    loader = LoadImaged("image", reader=FileTypeReader("image"), image_only=True)
    with pytest.raises(KeyError, match=r"case\.npz: no array 'image' \(has \['label'\]\)"):
        loader({"image": str(labels_only)})
    damaged = tmp_path / "case.nii.gz"
    damaged.write_bytes(b"\x1f\x8b not a volume")
    with pytest.raises(Exception, match=r"case\.nii\.gz") as raised:  # its reader's error, naming the file
        loader({"image": str(damaged)})
    assert "cannot find a suitable reader" not in str(raised.value)  # not MONAI's list of every reader tried
