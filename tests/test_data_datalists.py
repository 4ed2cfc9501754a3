"""Datalist builders for every layout, the dispatcher, and the dataset presets."""

import json

import numpy as np
import pytest
from data_fixtures import write_h5
from monai.data import FolderLayout

from mgrad.data import (
    DATASETS,
    SYNAPSE_TEST_CASES,
    SYNAPSE_TRAIN_CASES,
    DataError,
    DatasetSpec,
    MissingSplitError,
    dataset_info,
    get_datalist,
    volume_datalist,
)
from mgrad.evaluation import SegmentationReport


def test_synapse_raw_btcv_split(tmp_path):
    for sub in ("img", "label"):
        (tmp_path / "RawData" / "Training" / sub).mkdir(parents=True)
    for case in SYNAPSE_TRAIN_CASES + SYNAPSE_TEST_CASES:
        (tmp_path / "RawData" / "Training" / "img" / f"img{case}.nii.gz").touch()
        (tmp_path / "RawData" / "Training" / "label" / f"label{case}.nii.gz").touch()
    train = get_datalist("synapse", str(tmp_path), "training")
    test = get_datalist("synapse", str(tmp_path), "test")
    assert len(train) == 18 and len(test) == 12
    assert {d["case"] for d in train}.isdisjoint({d["case"] for d in test})
    assert train[0]["image"].endswith("img/img0005.nii.gz") and train[0]["label"].endswith("label/label0005.nii.gz")
    (tmp_path / "RawData" / "Training" / "label" / "label0022.nii.gz").unlink()
    with pytest.raises(DataError, match="label0022.nii.gz"):
        get_datalist("synapse", str(tmp_path), "test")


def test_synapse_transunet_layout(tmp_path):
    (tmp_path / "train_npz").mkdir()
    (tmp_path / "test_vol_h5").mkdir()
    for s in range(3):
        np.savez(tmp_path / "train_npz" / f"case0005_slice{s:03d}.npz", image=np.zeros((8, 8)), label=np.zeros((8, 8)))
    write_h5(tmp_path / "test_vol_h5" / "case0001.npy.h5", np.zeros((4, 8, 8)), np.zeros((4, 8, 8)))
    train = get_datalist("synapse_transunet", str(tmp_path), "training")
    assert [d["case"] for d in train] == ["case0005_slice000", "case0005_slice001", "case0005_slice002"]
    assert all(d["image"] == d["label"] for d in train)
    assert get_datalist("synapse_transunet", str(tmp_path), "test")[0]["case"] == "case0001"


def test_acdc_nifti_patient_split(tmp_path):
    for p in range(1, 101):
        folder = tmp_path / "training" / f"patient{p:03d}"
        folder.mkdir(parents=True)
        for name in ("frame01", "frame12", "frame01_gt", "frame12_gt", "4d"):
            (folder / f"patient{p:03d}_{name}.nii.gz").touch()
    splits = {s: get_datalist("acdc", str(tmp_path), s) for s in ("training", "validation", "test")}
    patients = {s: {d["case"].split("_")[0] for d in items} for s, items in splits.items()}
    assert [len(patients[s]) for s in ("training", "validation", "test")] == [70, 15, 15]
    assert set.union(*patients.values()) == {f"patient{p:03d}" for p in range(1, 101)}
    assert sum(len(v) for v in patients.values()) == 100  # no patient in two splits
    assert all(d["label"] == d["image"].replace(".nii.gz", "_gt.nii.gz") for d in splits["training"])
    assert len(splits["training"]) == 140 and not any("4d" in d["image"] for d in splits["training"])
    assert get_datalist("acdc", str(tmp_path), "test") == splits["test"]  # seeded
    assert get_datalist("acdc", str(tmp_path), "test", seed=1) != splits["test"]


def test_acdc_h5_real_lists(acdc_h5_dir):
    train = get_datalist("acdc_h5", str(acdc_h5_dir), "training")
    val = get_datalist("acdc_h5", str(acdc_h5_dir), "validation")
    assert len(train) == 1312 and len(val) == 20
    assert all("/slices/" in d["image"] and d["image"].endswith(".h5") for d in train)
    assert {d["case"].split("_")[0] for d in train}.isdisjoint({d["case"].split("_")[0] for d in val})
    with pytest.raises(MissingSplitError, match="test.list"):
        get_datalist("acdc_h5", str(acdc_h5_dir), "test")


def test_acdc_h5_from_train_list(tmp_path):
    (tmp_path / "slices").mkdir()
    for s in (1, 2):
        write_h5(tmp_path / "slices" / f"patient001_frame01_slice_{s}.h5", np.zeros((8, 8)), np.zeros((8, 8)))
    (tmp_path / "train.list").write_text("patient001_frame01\n")
    assert len(get_datalist("acdc_h5", str(tmp_path), "training")) == 2


def test_decathlon_and_synthetic(synthetic_dir, tmp_path):
    train = get_datalist("decathlon", str(synthetic_dir / "dataset.json"), "training")
    assert len(train) == 6 and all(d["image"].startswith(str(synthetic_dir)) for d in train)
    assert get_datalist("synthetic", str(synthetic_dir), "validation") == get_datalist(
        "decathlon", str(synthetic_dir), "validation"
    )
    fresh = tmp_path / "generated_here"
    items = get_datalist("synthetic", str(fresh), "training")  # generated on first use
    assert (fresh / "dataset.json").is_file() and all((fresh / "imagesTr").glob("*.nii.gz"))
    assert len(items) == 6


def test_bad_datalist_requests(tmp_path, synthetic_dir):
    with pytest.raises(ValueError, match="unknown dataset"):
        get_datalist("brats", str(tmp_path), "training")
    with pytest.raises(ValueError, match="unknown split"):
        get_datalist("synthetic", str(synthetic_dir), "train")
    with pytest.raises(DataError, match="not found"):
        get_datalist("acdc", str(tmp_path / "nowhere"), "training")
    (tmp_path / "dataset.json").write_text(json.dumps({"training": [], "validation": []}))
    with pytest.raises(DataError, match="empty"):
        get_datalist("decathlon", str(tmp_path), "training")
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match="dataset.json: cannot be read: JSONDecodeError"):
        get_datalist("decathlon", str(tmp_path), "training")


def test_dataset_presets():
    assert set(DATASETS) == {"synthetic", "synapse", "synapse_transunet", "acdc", "acdc_h5", "decathlon"}
    syn = DATASETS["synapse"]
    assert syn.num_classes == 9 and syn.intensity == "ct" and len(syn.class_names) == 8
    assert syn.class_names[0] == "aorta" and syn.class_names[-1] == "stomach"
    assert {k: v for k, v in syn.label_map.items() if v} == {8: 1, 4: 2, 3: 3, 2: 4, 6: 5, 11: 6, 1: 7, 7: 8}
    assert set(syn.label_map) == set(range(14))
    assert list(DATASETS["acdc"].class_names) == ["rv", "myo", "lv"] and DATASETS["acdc_h5"].intensity == "none"
    for name, info in DATASETS.items():
        assert info.name == name and isinstance(info, DatasetSpec), name
    assert syn["preset"] == syn.intensity and syn["num_classes"] == 9  # configs written for the dict registry


def test_decathlon_info_from_json(synthetic_dir):
    info = dataset_info("decathlon", str(synthetic_dir))
    assert info.num_classes == 9 and info.class_names == DATASETS["synthetic"].class_names
    assert info.intensity == "ct"


def test_inputs_whose_predictions_would_share_a_name_are_refused(tmp_path):
    """Predictions are named after the input's file name, so two inputs of one name would overwrite each other's."""
    for folder in ("p1", "p2", "flat"):
        (tmp_path / folder).mkdir()
    for name in ("p1/ct.nii.gz", "p2/ct.nii.gz", "flat/case.nii", "flat/case.nii.gz", "flat/other.nrrd"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "dataset.json").write_text(json.dumps({"test": ["p1/ct.nii.gz", "p2/ct.nii.gz"]}))
    with pytest.raises(DataError) as exc:
        volume_datalist(tmp_path)
    message = str(exc.value)
    assert message.startswith(str(tmp_path / "dataset.json")) and "would write the same prediction ('ct')" in message
    assert str(tmp_path / "p1" / "ct.nii.gz") in message and str(tmp_path / "p2" / "ct.nii.gz") in message
    with pytest.raises(DataError, match=r"case.nii and .*case.nii.gz would write the same prediction \('case'\)"):
        volume_datalist(tmp_path / "flat")
    (tmp_path / "flat" / "case.nii").unlink()
    assert [item["image"] for item in volume_datalist(tmp_path / "flat")] == [
        str(tmp_path / "flat" / "case.nii.gz"),
        str(tmp_path / "flat" / "other.nrrd"),
    ]
    items = [{"image": str(tmp_path / f"p{k}" / "ct.nii.gz"), "label": "unused"} for k in (1, 2)]
    with pytest.raises(DataError, match="would write the same prediction"):  # before the evaluator writes anything
        SegmentationReport(items, FolderLayout(str(tmp_path / "out"), "seg", ".nii.gz"), num_classes=2)
    assert not (tmp_path / "out").exists()


def test_decathlon_info_names_a_missing_or_unreadable_dataset_json(tmp_path):
    """The decathlon layout's classes come from its dataset.json: a folder without one (a folder of volumes to
    segment given with ``--dataset decathlon``) is named, not left to fail as a network without classes."""
    with pytest.raises(DataError, match=f"{tmp_path / 'dataset.json'}: file not found"):
        dataset_info("decathlon", str(tmp_path))
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match=f"{tmp_path / 'dataset.json'}: cannot be read: JSONDecodeError"):
        dataset_info("decathlon", str(tmp_path))
    assert dataset_info("decathlon").num_classes is None  # no folder given: the registry's entry


def test_one_volume_file_is_a_datalist_of_itself(tmp_path):
    """``mgrad infer --input case.nii.gz`` segments that file; a file that is neither a volume nor a datalist is named
    as such, not taken for a broken datalist alone."""
    (tmp_path / "case01.nii.gz").write_bytes(b"\x1f\x8b")
    assert volume_datalist(tmp_path / "case01.nii.gz") == [{"image": str(tmp_path / "case01.nii.gz")}]
    (tmp_path / "scan.png").write_bytes(b"\x89PNG")
    with pytest.raises(DataError, match=r"scan.png: neither a volume file \(.nii.gz, .nii, .*\) nor a readable"):
        volume_datalist(tmp_path / "scan.png")
    (tmp_path / "list.json").write_text(json.dumps(["case01.nii.gz"]))
    with pytest.raises(DataError, match="list.json: a datalist is a JSON object with a 'test', .* got a JSON list"):
        volume_datalist(tmp_path / "list.json")
