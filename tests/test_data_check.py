"""Bad input: every kind is reported by ``check-data`` (one line a file, exit 1) and named at load time."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from data_fixtures import write_h5

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
    meta = {"labels": {"0": "background", "1": "a", "2": "b"}, "training": items[:5], "validation": items[5:]}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    return tmp_path


def test_check_data_reports_every_problem_at_once(broken_dataset, capsys):
    with pytest.raises(SystemExit) as exc:
        check_data(str(broken_dataset / "dataset.json"))
    assert exc.value.code == 1
    lines = capsys.readouterr().out.strip().splitlines()
    problems, summary = lines[:-1], lines[-1]
    assert len(problems) == len(BROKEN), problems  # one line a broken file, none for the good case
    for name, (kind, words) in BROKEN.items():
        path = str(broken_dataset / f"{name}_{kind}.nii.gz")
        assert any(line.startswith(path) and words in line for line in problems), (name, problems)
    assert "9 cases" in summary and f"{len(BROKEN)} broken" in summary


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


def test_volume_expected_but_slice_given(tmp_path, capsys):
    write_h5(tmp_path / "s.h5", np.zeros((8, 8), np.float32), np.zeros((8, 8), np.uint8))
    (tmp_path / "dataset.json").write_text(json.dumps({"validation": [{"image": "s.h5", "label": "s.h5"}]}))
    with pytest.raises(SystemExit):
        check_data(str(tmp_path))
    assert "s.h5: a single 2D slice" in capsys.readouterr().out
    with pytest.raises(RuntimeError) as exc:
        volume_transforms("none", 8)({"image": str(tmp_path / "s.h5"), "label": str(tmp_path / "s.h5")})
    assert "s.h5: a single 2D slice" in str(exc.value.__cause__)


def test_corrupt_h5_and_empty_datalist(tmp_path, capsys):
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    (tmp_path / "dataset.json").write_text(
        json.dumps({"training": [{"image": "bad.h5", "label": "bad.h5"}], "validation": []})
    )
    with pytest.raises(SystemExit):
        check_data(str(tmp_path / "dataset.json"))
    out = capsys.readouterr().out
    assert f"{tmp_path / 'bad.h5'}: cannot be read" in out
    assert "'validation' datalist is empty" in out


def test_check_data_passes_clean_synthetic_and_dataset_folder(synthetic_dir, tmp_path, capsys):
    report = check_data(str(synthetic_dir))
    assert report["cases"] == 8 and report["broken"] == 0
    assert "0 broken" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        check_data(str(tmp_path))  # a folder with no dataset.json and no --dataset
    assert "pass --dataset" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        check_data(str(tmp_path), dataset="acdc")
    assert "no ACDC frames" in capsys.readouterr().out
