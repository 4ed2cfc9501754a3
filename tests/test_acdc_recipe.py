"""The ACDC recipe (``--dataset acdc_h5``) on a handful of real slices and volumes, so that it cannot rot."""

import json
from pathlib import Path

import pytest
from bundle_fixtures import TINY, cli_args, copy_bundle, run_cli
from data_fixtures import link_acdc_subset


@pytest.fixture
def small_acdc(tmp_path: Path) -> Path:
    """The shared folder's layout with 24 real training slices and 2 validation volumes (links, nothing copied)."""
    return link_acdc_subset(tmp_path / "acdc", 2, 24, {"val": [0, 1]})


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
