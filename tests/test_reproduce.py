"""``mgrad reproduce``: a tiny run on real ACDC data gives the table with the paper's row and both protocol rows."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from bundle_fixtures import TINY, copy_bundle
from data_fixtures import link_acdc_subset

from mgrad.data.errors import DataError
from mgrad.handlers import completed_epochs
from mgrad.paper_table import PAPER_ROWS, format_markdown
from mgrad.reproduce import detect_layout, reproduce


@pytest.fixture
def tiny_acdc(tmp_path: Path) -> Path:
    """The SSL4MIS layout with 12 real training slices, one validation and one test volume (links, nothing copied)."""
    return link_acdc_subset(tmp_path / "acdc", 1, 12, {"val": [0], "test": [1]})


def test_reproduce_writes_the_table(tiny_acdc, tmp_path, one_thread):
    bundle = copy_bundle(tmp_path / "bundle")
    out = tmp_path / "out"
    size = {**TINY, "spatial_size": 32}
    args = dict(output_dir=str(out), small=True, epochs=1, device="cpu", bundle_root=str(bundle), size=size)
    result = reproduce("acdc", str(tiny_acdc), **args)

    paper, *measured = result["rows"]
    assert paper["source"] == "paper, Table 2" and paper["mean_dice"] == 92.13
    assert paper["dice"] == {"rv": 90.42, "myo": 90.0, "lv": 95.98}
    assert [r["protocol"] for r in measured] == ["transunet", "default"]
    for row in measured:
        assert row["model"] == "MGRAD-UNet" and row["epochs"] == 1 and row["test_cases"] == 1
        assert 0.0 <= row["mean_dice"] <= 100.0 and set(row["dice"]) == {"rv", "myo", "lv"}
        assert row["train_seconds"] > 0 and row["hardware"].startswith("CPU")
    # the transunet row is the separate evaluation's number, in percent
    scored = json.loads((out / "mgrad_unet" / "test_transunet" / "metrics.json").read_text())
    assert measured[0]["mean_dice"] == round(100 * scored["mean_dice"], 2) and scored["protocol"] == "transunet"

    markdown = (out / "table.md").read_text()
    assert (
        markdown == result["markdown"]
        and "| MGRAD-UNet | paper, Table 2 | published (HD95 in voxels) | 92.13" in markdown
    )
    # h5 files store no spacing: the MONAI protocol's HD95 is in voxels too, and the table says so
    assert measured[1]["distance_unit"] == "vox" and "mm" not in markdown.split("\n- ")[0]
    assert "| MONAI (HD95 in voxels) |" in markdown and "validation split (1 volumes)" in markdown
    assert "optimistic" in markdown
    assert json.loads((out / "table.json").read_text())["rows"] == json.loads(json.dumps(result["rows"]))

    # a rerun finds every step done and returns the same table without training again
    mtime = (out / "mgrad_unet" / "models" / "model.pt").stat().st_mtime
    assert reproduce("acdc", str(tiny_acdc), **args)["rows"] == result["rows"]
    assert (out / "mgrad_unet" / "models" / "model.pt").stat().st_mtime == mtime
    with pytest.raises(ValueError, match="other settings"):
        reproduce("acdc", str(tiny_acdc), **{**args, "epochs": 2})
    # another budget would leave the table claiming it for models trained with the first one
    with pytest.raises(ValueError, match="time_budget None there, 60 now"):
        reproduce("acdc", str(tiny_acdc), **{**args, "time_budget": 60})


def test_layout_detection_and_errors(tmp_path):
    (tmp_path / "h5" / "volumes").mkdir(parents=True)
    (tmp_path / "npz" / "train_npz").mkdir(parents=True)
    (tmp_path / "nii").mkdir()
    assert detect_layout("acdc", str(tmp_path / "h5")) == "acdc_h5"
    assert detect_layout("acdc", str(tmp_path / "nii")) == "acdc"
    assert detect_layout("synapse", str(tmp_path / "npz")) == "synapse_transunet"
    assert detect_layout("synapse", str(tmp_path / "nii")) == "synapse"
    with pytest.raises(ValueError, match="unknown table"):
        detect_layout("kits", str(tmp_path))
    h5 = tmp_path / "h5"
    (h5 / "slices").mkdir()
    for path in (h5 / "slices" / "x_slice_1.h5", h5 / "volumes" / "x.h5"):
        with h5py.File(path, "w") as f:
            f["image"], f["label"] = np.zeros((16, 16), np.float32), np.zeros((16, 16), np.uint8)
    (h5 / "train_slices.list").write_text("x_slice_1\n")
    (h5 / "val.list").write_text("x\n")
    with pytest.raises(Exception, match="test.list"):  # a missing split fails before any training
        reproduce("acdc", str(h5), output_dir=str(tmp_path / "out"))
    (h5 / "test.list").write_text("patient999_frame01\n")
    with pytest.raises(DataError, match="'test' split names 1 missing file.*volumes/patient999_frame01.h5"):
        reproduce("acdc", str(h5), output_dir=str(tmp_path / "out"))  # as does a missing test volume
    assert not (tmp_path / "out").exists()  # nothing written, nothing trained


def test_the_table_shows_the_epochs_trained():
    """A time budget stops a run inside an epoch: the table shows the epochs it trained, with the fraction."""
    assert completed_epochs({"epoch": [1], "iteration": [48], "epoch_length": [164]}) == 0.29
    assert completed_epochs({"epoch": [1, 2], "iteration": [164, 188], "epoch_length": [164, 164]}) == 1.15
    assert completed_epochs({"epoch": [1, 2], "iteration": [164, 328], "epoch_length": [164, 164]}) == 2
    # resumed from a history.json written before the epoch length was recorded: its last entry has one
    assert completed_epochs({"epoch": [1, 2], "iteration": [None, 188], "epoch_length": [None, 164]}) == 1.15
    # such a history.json alone: the epoch the run ended in, as it was recorded
    assert completed_epochs({"epoch": [1, 2], "iteration": [164, 188], "loss": [0.5, 0.4]}) == 2
    assert completed_epochs({"epoch": [1, 2], "loss": [0.5, 0.4]}) == 2
    assert completed_epochs({"epoch": []}) is None
    rows = [{**PAPER_ROWS["acdc"], "epochs": 1.15}, {**PAPER_ROWS["acdc"], "epochs": 2}]
    lines = format_markdown("ACDC", ["rv"], rows, []).splitlines()
    assert lines[4].endswith("| 1.15 | – | GPU NVIDIA RTX 4090 (24 GB) |") and "| 2 | – |" in lines[5]
