"""Cross-validation folds split by patient."""

import json

import pytest

from mgrad.data.folds import fold_datalist, patient_id, split_folds, write_split


def acdc_items(n: int) -> list:
    return [
        {"image": f"/d/patient{p:03d}/patient{p:03d}_frame{f:02d}.nii.gz", "label": "x"}
        for p in range(1, n + 1)
        for f in (1, 12)
    ]


def test_patient_ids():
    assert patient_id({"image": "/d/patient007/patient007_frame12.nii.gz"}) == "patient007"
    assert patient_id({"image": "/s/case0005_slice012.npz"}) == "case0005"
    assert patient_id({"image": "/v/img0001.nii.gz"}) == "img0001"


def test_folds_partition_patients_reproducibly():
    items = acdc_items(11)
    held_out = []
    for fold in range(5):
        train, val, patients = split_folds(items, 5, fold, seed=3)
        assert split_folds(items, 5, fold, seed=3)[2] == patients  # seeded: the same split every time
        assert not set(patients["training"]) & set(patients["validation"])
        assert len(train) + len(val) == len(items) and len(patients["validation"]) in (2, 3)
        assert {patient_id(i) for i in val} == set(patients["validation"])  # both frames of a patient together
        held_out += patients["validation"]
    assert sorted(held_out) == sorted({patient_id(i) for i in items})  # each patient held out exactly once
    assert split_folds(items, 5, 0, seed=4)[2] != split_folds(items, 5, 0, seed=3)[2]
    with pytest.raises(ValueError, match="fold must be in"):
        split_folds(items, 5, 5)
    with pytest.raises(ValueError, match="between 2 and the number of patients"):
        split_folds(items, 12, 0)


def test_fold_datalists_of_a_dataset(phantom_dir, tmp_path):
    split = write_split(tmp_path / "split.json", "decathlon", str(phantom_dir), 2, 1)
    assert json.loads((tmp_path / "split.json").read_text()) == split
    train = fold_datalist("decathlon", str(phantom_dir), "training", 2, 1)
    val = fold_datalist("decathlon", str(phantom_dir), "validation", 2, 1)
    assert train == split["training"] and val == split["validation"]
    assert len(train) + len(val) == 5 and val
    assert write_split(tmp_path / "none.json", "decathlon", str(phantom_dir), None) is None
    assert not (tmp_path / "none.json").exists()
