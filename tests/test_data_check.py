"""Bad input: every kind is reported by ``check-data`` (one line a file, exit 1) and named at load time."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from bundle_fixtures import run_cli
from data_fixtures import write_h5

from mgrad.data import SYNAPSE_CLASSES
from mgrad.data.check import check_data
from mgrad.data.errors import DataError
from mgrad.transforms import volume_transforms

AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])


def _nifti(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> str:
    nib.save(nib.Nifti1Image(array, affine), path)
    return path.name


def _case(root: Path, name: str, image=None, label=None, affine=AFFINE, label_affine=AFFINE) -> dict:
    rng = np.random.default_rng(0)
    image = rng.normal(0, 100, (16, 16, 6)).astype(np.float32) if image is None else image
    label = (rng.random((16, 16, 6)) * 3).astype(np.uint8) if label is None else label
    return {
        "image": _nifti(root / f"{name}_img.nii.gz", image, affine),
        "label": _nifti(root / f"{name}_lab.nii.gz", label, label_affine),
    }


BROKEN = {  # case name -> (file that is broken, words the problem line must hold)
    "missing": ("lab", "file not found"),
    "shape": ("lab", "differs from image shape"),
    "affine": ("lab", "affine differs"),
    "range": ("lab", "outside 0..2"),
    "fraction": ("lab", "non-integer"),
    "nan": ("img", "NaN"),
    "flat": ("img", "2D image"),
    "truncated": ("img", "cannot be read"),
    "channels": ("img", "2 channels of shape (16, 16, 6)"),
}


@pytest.fixture
def broken_dataset(tmp_path: Path) -> Path:
    items = [_case(tmp_path, "good")]
    items.append(_case(tmp_path, "missing"))
    (tmp_path / "missing_lab.nii.gz").unlink()
    items.append(_case(tmp_path, "shape", label=np.zeros((16, 16, 5), np.uint8)))
    shifted = AFFINE.copy()
    shifted[0, 3] = 5.0
    items.append(_case(tmp_path, "affine", label_affine=shifted))
    items.append(_case(tmp_path, "range", label=np.full((16, 16, 6), 7, np.uint8)))
    items.append(_case(tmp_path, "fraction", label=np.full((16, 16, 6), 0.5, np.float32)))
    nan = np.zeros((16, 16, 6), np.float32)
    nan[3, 3, 3], nan[4, 4, 4] = np.nan, np.inf
    items.append(_case(tmp_path, "nan", image=nan))
    items.append(_case(tmp_path, "flat", image=np.zeros((16, 16), np.float32), label=np.zeros((16, 16), np.uint8)))
    items.append(_case(tmp_path, "truncated"))
    data = (tmp_path / "truncated_img.nii.gz").read_bytes()
    (tmp_path / "truncated_img.nii.gz").write_bytes(data[: len(data) // 2])
    items.append(_case(tmp_path, "channels", image=np.zeros((16, 16, 6, 2), np.float32)))  # a 4D file
    meta = {"labels": {"0": "background", "1": "a", "2": "b"}, "training": items[:5], "validation": items[5:]}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    return tmp_path


def test_check_data_reports_every_problem_at_once(broken_dataset):
    report = check_data(str(broken_dataset / "dataset.json"))
    problems = report["problems"]
    assert len(problems) == len(BROKEN), problems  # one line a broken file, none for the good case
    for name, (kind, words) in BROKEN.items():
        path = str(broken_dataset / f"{name}_{kind}.nii.gz")
        assert any(line.startswith(path) and words in line for line in problems), (name, problems)
    for name in ("shape", "affine"):  # a problem of the pair names the image too
        line = next(line for line in problems if line.startswith(str(broken_dataset / f"{name}_lab.nii.gz")))
        assert str(broken_dataset / f"{name}_img.nii.gz") in line, line
    assert report["cases"] == 10 and report["broken"] == len(BROKEN)


def test_check_data_command_on_real_ct_with_one_broken_case_of_each_kind(totalseg_dir, tmp_path):
    """The six kinds of broken case, made from the real TotalSegmentator CT, in one run of ``mgrad check-data``:
    one line each naming the broken file, no traceback, exit status 1."""
    sitk = pytest.importorskip("SimpleITK")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(totalseg_dir / "example_ct_dicom")))
    ct_image = reader.Execute()
    sitk.WriteImage(ct_image, str(tmp_path / "good_ct.nii.gz"))
    seg = nib.load(totalseg_dir / "example_seg_dicom.nii.gz")
    synapse = {52: 1, 4: 2, 3: 3, 2: 4, 5: 5, 7: 6, 1: 7, 6: 8}
    raw = np.asarray(seg.dataobj)
    mapped = np.vectorize(lambda v: synapse.get(int(v), 0), otypes=[np.uint8])(raw)
    nib.save(nib.Nifti1Image(mapped, seg.affine), tmp_path / "good_seg.nii.gz")
    ct = sitk.GetArrayFromImage(ct_image)  # (z, y, x)

    def write_ct(name: str, array: np.ndarray) -> None:
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(ct_image.GetSpacing())
        image.SetOrigin(ct_image.GetOrigin())
        image.SetDirection(ct_image.GetDirection())
        sitk.WriteImage(image, str(tmp_path / name))

    items = {"good": ("good_ct.nii.gz", "good_seg.nii.gz")}
    items["missing"] = ("missing_ct.nii.gz", "good_seg.nii.gz")  # the CT is not there
    write_ct("shape_ct.nii.gz", ct[:-3])  # three slices fewer than its label
    items["shape"] = ("shape_ct.nii.gz", "good_seg.nii.gz")
    nib.save(nib.Nifti1Image(raw, seg.affine), tmp_path / "range_seg.nii.gz")  # raw TotalSegmentator values
    items["range"] = ("good_ct.nii.gz", "range_seg.nii.gz")
    nan = ct.astype(np.float32)
    nan[5, 100:110, 100:110] = np.nan
    write_ct("nan_ct.nii.gz", nan)
    items["nan"] = ("nan_ct.nii.gz", "good_seg.nii.gz")
    nib.save(nib.Nifti1Image(ct[10].T.astype(np.int16), seg.affine), tmp_path / "flat_ct.nii.gz")  # one 2D slice
    nib.save(nib.Nifti1Image(mapped[..., 10], seg.affine), tmp_path / "flat_seg.nii.gz")
    items["flat"] = ("flat_ct.nii.gz", "flat_seg.nii.gz")
    data = (tmp_path / "good_ct.nii.gz").read_bytes()
    (tmp_path / "truncated_ct.nii.gz").write_bytes(data[: len(data) // 3])
    items["truncated"] = ("truncated_ct.nii.gz", "good_seg.nii.gz")
    datalist = [{"image": image, "label": label} for image, label in items.values()]
    labels = {str(i): name for i, name in enumerate(["background", *SYNAPSE_CLASSES])}
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": labels, "training": datalist}))

    result = run_cli(["-m", "mgrad", "check-data", str(tmp_path / "dataset.json")])
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    problems, summary = lines[:-1], lines[-1]
    assert len(problems) == 6 and "7 cases" in summary and "6 broken" in summary, lines
    broken = {"missing": "missing_ct", "shape": "shape_ct", "range": "range_seg", "nan": "nan_ct", "flat": "flat_ct"}
    broken["truncated"] = "truncated_ct"
    for kind, stem in broken.items():
        assert sum(str(tmp_path / f"{stem}.nii.gz") in line for line in problems) == 1, (kind, problems)
    shape_line = next(line for line in problems if "shape_ct" in line)
    assert str(tmp_path / "good_seg.nii.gz") in shape_line and "differs from image shape" in shape_line


def test_loader_errors_name_the_file(broken_dataset):
    items = json.loads((broken_dataset / "dataset.json").read_text())
    chain = volume_transforms("ct", 16, num_classes=3)
    for item in items["training"][1:] + items["validation"]:
        name = item["image"].split("_img")[0]
        kind, words = BROKEN[name]
        full = {k: str(broken_dataset / v) for k, v in item.items()}
        with pytest.raises(RuntimeError) as exc:  # MONAI's Compose wraps the transform's DataError
            chain(full)
        err = exc.value.__cause__
        assert isinstance(err, DataError) and full["label" if kind == "lab" else "image"] in str(err), (name, err)
        assert words in str(err), (name, err)


def test_volume_expected_but_slice_given(tmp_path):
    write_h5(tmp_path / "s.h5", np.zeros((8, 8), np.float32), np.zeros((8, 8), np.uint8))
    (tmp_path / "dataset.json").write_text(json.dumps({"validation": [{"image": "s.h5", "label": "s.h5"}]}))
    assert any("s.h5: a single 2D slice" in line for line in check_data(str(tmp_path))["problems"])
    with pytest.raises(RuntimeError) as exc:
        volume_transforms("none", 8)({"image": str(tmp_path / "s.h5"), "label": str(tmp_path / "s.h5")})
    assert "s.h5: a single 2D slice" in str(exc.value.__cause__)


def test_corrupt_h5_and_empty_datalist(tmp_path):
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    (tmp_path / "dataset.json").write_text(
        json.dumps({"training": [{"image": "bad.h5", "label": "bad.h5"}], "validation": []})
    )
    out = "\n".join(check_data(str(tmp_path / "dataset.json"))["problems"])
    assert f"{tmp_path / 'bad.h5'}: cannot be read" in out
    assert "'validation' datalist is empty" in out


def test_a_folder_of_another_layout_is_one_problem_that_names_the_right_one(tmp_path):
    (tmp_path / "volumes").mkdir()
    write_h5(tmp_path / "volumes" / "patient001_frame01.h5", np.zeros((2, 8, 8), np.float32), np.zeros((2, 8, 8)))
    problems = check_data(str(tmp_path), dataset="acdc")["problems"]
    assert len(problems) == 1 and problems[0].endswith("look like the SSL4MIS copy: --dataset acdc_h5"), problems


def test_check_data_passes_clean_synthetic_and_dataset_folder(synthetic_dir, tmp_path):
    report = check_data(str(synthetic_dir))
    assert report["cases"] == 8 and report["broken"] == 0 and report["problems"] == []
    result = run_cli(["-m", "mgrad", "check-data", str(synthetic_dir)])
    assert result.returncode == 0 and "0 broken" in result.stdout, result.stdout + result.stderr
    problems = check_data(str(tmp_path))["problems"]  # a folder with no dataset.json and no --dataset
    assert len(problems) == 1 and "pass --dataset" in problems[0]
    assert "no ACDC frames" in check_data(str(tmp_path), dataset="acdc")["problems"][0]
