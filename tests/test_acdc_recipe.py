"""The ACDC recipe (``--dataset acdc_h5``) on a handful of real slices and volumes, so that it cannot rot."""

import json
import os
from pathlib import Path

import pytest
from bundle_fixtures import TINY, cli_args, copy_bundle, run_cli
from data_fixtures import shared_data_dir


@pytest.fixture
def small_acdc(tmp_path: Path) -> Path:
    """The shared folder's layout with 24 real training slices and 2 validation volumes (links, nothing copied)."""
    source = shared_data_dir() / "ACDC_SSL4MIS_h5"
    if not (source / "volumes").is_dir():
        pytest.skip(f"real ACDC h5 data not available at {source}")
    root = tmp_path / "acdc"
    (root / "slices").mkdir(parents=True)
    (root / "volumes").mkdir()
    train = (source / "train.list").read_text().split()[:2]
    slices = sorted(p for p in (source / "slices").iterdir() if p.name.rsplit("_slice_", 1)[0] in train)[:24]
    for path in slices:
        os.symlink(path, root / "slices" / path.name)
    val = (source / "val.list").read_text().split()[:2]
    for name in val:
        os.symlink(source / "volumes" / f"{name}.h5", root / "volumes" / f"{name}.h5")
    (root / "train.list").write_text("\n".join(train) + "\n")
    (root / "val.list").write_text("\n".join(val) + "\n")
    return root


def test_acdc_recipe_trains_and_evaluates(small_acdc, tmp_path):
    root = copy_bundle(tmp_path / "bundle")
    common = {"bundle_root": str(root), "dataset": "acdc_h5", "dataset_dir": str(small_acdc), "size": TINY}
    result = run_cli(["-m", "mgrad", "train", *cli_args({**common, "epochs": 1, "device": "cpu"})])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "best validation mean Dice:" in result.stdout
    assert (root / "models" / "model.pt").is_file()

    out = tmp_path / "eval"
    result = run_cli(["-m", "mgrad", "evaluate", *cli_args({**common, "output_dir": str(out), "device": "cpu"})])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= report["mean_dice"] <= 1.0 and report["class_names"] == ["rv", "myo", "lv"]
    assert len(report["cases"]) == 2 and len(list((out / "predictions").glob("*_seg.nii.gz"))) == 2
    header = next(line for line in result.stdout.splitlines() if "myo" in line)
    assert "rv" in header and "lv" in header
