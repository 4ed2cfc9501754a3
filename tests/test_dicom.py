"""DICOM in: a DICOM series folder is read in its own geometry and segmented like its NIfTI twin."""

import numpy as np
import pytest
from bundle_fixtures import TINY

sitk = pytest.importorskip("SimpleITK", reason="reading DICOM series needs SimpleITK (pip install mgrad[dicom])")
nib = pytest.importorskip("nibabel")

from mgrad.bundle import infer  # noqa: E402
from mgrad.data import volume_datalist  # noqa: E402
from mgrad.transforms import load_imaged  # noqa: E402


@pytest.fixture
def series_and_twin(totalseg_dir, tmp_path_factory):
    """A folder holding the TotalSegmentator DICOM series (as a subfolder) and the same volume as NIfTI."""
    folder = tmp_path_factory.mktemp("dicom_in")
    series = totalseg_dir / "example_ct_dicom"
    (folder / "series").symlink_to(series, target_is_directory=True)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
    sitk.WriteImage(reader.Execute(), str(folder / "twin.nii.gz"))
    return folder


def test_series_reads_like_its_nifti_twin(series_and_twin, totalseg_dir):
    series = load_imaged("image")[0]({"image": str(series_and_twin / "series")})["image"]
    twin = load_imaged("image")[0]({"image": str(series_and_twin / "twin.nii.gz")})["image"]
    assert series.shape == twin.shape == (512, 512, 20)
    np.testing.assert_allclose(series.affine.numpy(), twin.affine.numpy(), atol=1e-4)
    assert np.array_equal(series.numpy(), twin.numpy()) and series.min() == -1024
    # the same world geometry as TotalSegmentator's segmentation of this series (stored with another axis order)
    seg = nib.load(totalseg_dir / "example_seg_dicom.nii.gz")
    canonical = nib.as_closest_canonical(nib.Nifti1Image(np.zeros(series.shape, np.uint8), series.affine.numpy()))
    np.testing.assert_allclose(canonical.affine, nib.as_closest_canonical(seg).affine, atol=1e-3)


def test_infer_segments_a_dicom_series_in_its_geometry(series_and_twin, trained_bundle, tmp_path):
    assert [item["image"] for item in volume_datalist(series_and_twin)] == [
        str(series_and_twin / "series"),
        str(series_and_twin / "twin.nii.gz"),
    ]
    out = tmp_path / "preds"
    infer(str(series_and_twin), str(out), bundle_root=str(trained_bundle), size=dict(TINY), device="cpu")
    from_series, from_twin = nib.load(out / "series_seg.nii.gz"), nib.load(out / "twin_seg.nii.gz")
    twin = nib.load(series_and_twin / "twin.nii.gz")
    assert from_series.shape == from_twin.shape == twin.shape == (512, 512, 20)
    np.testing.assert_allclose(from_series.affine, twin.affine, atol=1e-4)
    np.testing.assert_allclose(from_twin.affine, twin.affine, atol=1e-4)
    labels = np.asarray(from_series.dataobj)
    assert np.array_equal(labels, np.asarray(from_twin.dataobj)) and labels.any()
