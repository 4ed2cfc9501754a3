"""mgrad.metrics against medpy (the reference definitions), the protocols, the reports and folder evaluation."""

import csv
import json
import math
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from medpy.metric import binary as medpy
from scipy import ndimage

from mgrad.evaluation import evaluate, evaluate_folders
from mgrad.metrics import METRICS, case_metrics, format_table, summarize, surface, write_report

SHARED_DATA = Path(os.environ.get("MGRAD_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
ACDC_VOLUMES = sorted((SHARED_DATA / "ACDC_SSL4MIS_h5" / "volumes").glob("*.h5"))


def medpy_metrics(pred: np.ndarray, label: np.ndarray, c: int, spacing) -> dict:
    p, g = pred == c, label == c
    return {
        "dice": medpy.dc(p, g),
        "iou": medpy.jc(p, g),
        "hd95": medpy.hd95(p, g, voxelspacing=spacing),
        "hd95_vox": medpy.hd95(p, g),
        "asd": medpy.assd(p, g, voxelspacing=spacing),
        "asd_vox": medpy.assd(p, g),
    }


def assert_matches_medpy(pred: np.ndarray, label: np.ndarray, num_classes: int, spacing) -> int:
    """Compare every class present in both volumes; return how many were compared."""
    result = case_metrics(pred, label, num_classes, spacing)
    compared = 0
    for c in range(1, num_classes):
        if (pred == c).any() and (label == c).any():
            expected = medpy_metrics(pred, label, c, spacing)
            for key, value in expected.items():
                assert result[c][key] == pytest.approx(value, abs=1e-6), (c, key)
            compared += 1
    return compared


def perturb(label: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Plausible prediction errors: a dilated or eroded class, a shift, spurious blobs, a dropped slice."""
    dilated, eroded = label.copy(), label.copy()
    dilated[ndimage.binary_dilation(label == 1, iterations=2) & (label == 0)] = 1
    eroded[(label == 3) & ~ndimage.binary_erosion(label == 3)] = 2
    blobs = label.copy()
    for c in (1, 2, 3):
        z, y, x = (rng.integers(0, s - 3) for s in label.shape)
        blobs[z : z + 2, y : y + 3, x : x + 3] = c
    dropped = label.copy()
    dropped[label.shape[0] // 2] = 0
    return {
        "same": label,
        "dilated": dilated,
        "eroded": eroded,
        "shifted": np.roll(label, (1, 3, -2), axis=(0, 1, 2)),
        "blobs": blobs,
        "dropped": dropped,
    }


def random_blobs(shape: tuple[int, ...], num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random multi-class shapes, some touching the array edge."""
    field = ndimage.gaussian_filter(rng.normal(size=(num_classes - 1, *shape)), sigma=(0, *[3] * len(shape)))
    out = field.argmax(0).astype(np.uint8) + 1
    out[field.max(0) < np.quantile(field.max(0), 0.4)] = 0
    return out


@pytest.mark.skipif(not ACDC_VOLUMES, reason=f"shared ACDC volumes not found under {SHARED_DATA}")
def test_matches_medpy_on_acdc_labels_and_perturbations():
    import h5py

    rng = np.random.default_rng(0)
    compared = 0
    for path in ACDC_VOLUMES[::2]:
        with h5py.File(path) as f:
            label = f["label"][()]
        box = ndimage.find_objects((label > 0).astype(np.uint8))[0]  # the heart plus a margin keeps medpy fast
        label = label[tuple(slice(max(b.start - 6, 0), b.stop + 6) for b in box)]
        spacing = (float(rng.uniform(5, 10)), *rng.uniform(1.2, 1.8, 2))  # (Z, H, W) like native ACDC
        for pred in perturb(label, rng).values():
            compared += assert_matches_medpy(pred, label, 4, spacing)
    assert compared >= len(ACDC_VOLUMES[::2]) * 6 * 3 - 3


def test_matches_medpy_on_synthetic_volumes():
    rng = np.random.default_rng(1)
    for shape, spacing in [((24, 30, 12), (0.7, 0.9, 3.0)), ((40, 36), (1.5, 0.5)), ((96, 96, 48), (0.8, 0.8, 2.5))]:
        label = random_blobs(shape, 5, rng)
        pred = random_blobs(shape, 5, rng) if len(shape) == 2 else np.roll(label, 2, axis=0)
        pred[tuple(slice(0, 3) for _ in shape)] = 4  # a spurious blob in a corner
        assert assert_matches_medpy(pred, label, 5, spacing) == 4


def test_torch_path_matches_numpy_path():
    """The GPU code path (CUDA tensors), run here on CPU tensors."""
    rng = np.random.default_rng(2)
    label = random_blobs((20, 24, 16), 4, rng)
    pred = np.roll(label, 1, axis=1)
    tp, tl = torch.as_tensor(pred).long(), torch.as_tensor(label).long()
    np.testing.assert_array_equal(surface.confusion(tp, tl, 4), surface.confusion(pred, label, 4))
    assert surface.boxes(tp, tl, 4) == surface.boxes(pred, label, 4)
    for c in range(1, 4):
        cpu = surface.distance_metrics(pred == c, label == c, (1.0, 0.7, 2.5))
        gpu = surface.distance_metrics(tp == c, tl == c, (1.0, 0.7, 2.5))
        assert gpu == pytest.approx(cpu, abs=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_tensors_match_cpu():
    rng = np.random.default_rng(3)
    label = random_blobs((64, 64, 32), 5, rng)
    pred = np.roll(label, 2, axis=2)
    cpu = case_metrics(pred, label, 5, (0.8, 0.8, 2.0))
    gpu = case_metrics(torch.as_tensor(pred).cuda(), torch.as_tensor(label).cuda(), 5, (0.8, 0.8, 2.0))
    for c in cpu:
        assert gpu[c] == pytest.approx(cpu[c], abs=1e-9)


def test_inputs_tensor_channel_float_and_errors():
    rng = np.random.default_rng(4)
    label = random_blobs((16, 18, 10), 3, rng)
    pred = np.roll(label, 1, axis=0)
    expected = case_metrics(pred, label, 3)
    from_tensors = case_metrics(torch.as_tensor(pred)[None].float(), torch.as_tensor(label)[None], 3)
    for c in expected:
        assert from_tensors[c] == pytest.approx(expected[c])
    with pytest.raises(ValueError, match="shape"):
        case_metrics(pred[:-1], label, 3)
    with pytest.raises(ValueError, match="integers in"):
        case_metrics(pred, label, 2)
    with pytest.raises(ValueError, match="integers in"):
        case_metrics(pred + 0.5, label, 3)
    with pytest.raises(ValueError, match="protocol"):
        case_metrics(pred, label, 3, protocol="nnunet")


def test_spacing_mm_and_voxels():
    label = np.zeros((30, 30, 30), np.uint8)
    label[8:20, 8:20, 8:20] = 1
    pred = np.roll(label, 3, axis=2)
    plain = case_metrics(pred, label, 2)[1]
    assert plain["hd95"] == plain["hd95_vox"] and plain["asd"] == plain["asd_vox"]
    iso = case_metrics(pred, label, 2, spacing=2.5)[1]
    assert iso["hd95"] == pytest.approx(2.5 * iso["hd95_vox"]) and iso["asd"] == pytest.approx(2.5 * iso["asd_vox"])
    assert iso["hd95_vox"] == plain["hd95_vox"] == 3.0
    aniso = case_metrics(pred, label, 2, spacing=(1.0, 1.0, 4.0))[1]
    assert aniso["hd95"] == pytest.approx(medpy.hd95(pred == 1, label == 1, (1.0, 1.0, 4.0))) and aniso["hd95"] == 12.0


def empty_cases_volumes() -> tuple[np.ndarray, np.ndarray]:
    """Class 1 in both, class 2 only predicted, class 3 only in the label, class 4 in neither."""
    label = np.zeros((20, 20, 10), np.uint8)
    pred = label.copy()
    label[2:8, 2:8, 2:6], pred[3:9, 2:8, 2:6] = 1, 1
    pred[12:16, 12:16, 4:6] = 2
    label[12:18, 2:6, 1:4] = 3
    return pred, label


def test_transunet_protocol_rules():
    pred, label = empty_cases_volumes()
    result = case_metrics(pred, label, 5, spacing=(2.0, 2.0, 5.0), protocol="transunet")
    both = result[1]  # computed, HD95 in voxels whatever the spacing
    assert both["dice"] == pytest.approx(medpy.dc(pred == 1, label == 1), abs=1e-12)
    assert both["hd95"] == pytest.approx(medpy.hd95(pred == 1, label == 1), abs=1e-12) == both["hd95_vox"]
    assert [result[2][k] for k in ("dice", "iou", "hd95", "asd")] == [1, 1, 0, 0]  # predicted, not in GT
    assert [result[3][k] for k in ("dice", "iou", "hd95", "asd")] == [0, 0, 0, 0]  # missed
    assert [result[4][k] for k in ("dice", "iou", "hd95", "asd")] == [0, 0, 0, 0]  # in neither
    other = case_metrics(np.roll(pred, 1, axis=0), label, 5, protocol="transunet")
    summary = summarize({"a": result, "b": other}, ["one", "two", "three", "four"], "transunet")
    per_case = [np.mean([r[c]["dice"] for c in range(1, 5)]) for r in (result, other)]  # TransUNet's order
    assert summary["mean_dice"] == pytest.approx(np.mean(per_case), abs=1e-12)


def test_default_protocol_reports_empty_cases():
    pred, label = empty_cases_volumes()
    result = case_metrics(pred, label, 5)
    assert result[1]["dice"] == pytest.approx(medpy.dc(pred == 1, label == 1))
    assert result[2]["dice"] == 0 and math.isnan(result[2]["hd95"]) and result[2]["gt_empty"]
    assert result[3]["iou"] == 0 and math.isnan(result[3]["asd"]) and result[3]["pred_empty"]
    assert all(math.isnan(result[4][k]) for k in METRICS) and result[4]["gt_empty"] and result[4]["pred_empty"]
    summary = summarize({"a": result, "b": case_metrics(label, label, 5)}, ["one", "two", "three", "four"])
    two, three, four = (summary["per_class"][n] for n in ("two", "three", "four"))
    assert two["dice"] == 0 and math.isnan(two["hd95"]) and two["n_gt_empty"] == 2 and two["n_pred_empty"] == 1
    assert three["dice"] == 0.5 and three["hd95"] == 0 and three["n_pred_empty"] == 1 and three["n_gt_empty"] == 0
    assert math.isnan(four["dice"]) and four["n_both_empty"] == 2
    assert summary["mean_dice"] == pytest.approx(
        np.mean([summary["per_class"][n]["dice"] for n in ("one", "two", "three")])
    )


def test_reports_written_and_parseable(tmp_path):
    rng = np.random.default_rng(5)
    names = ["aorta", "gallbladder", "liver"]
    cases = {}
    for i in range(3):
        label = random_blobs((16, 16, 8), 4, rng)
        cases[f"case{i}"] = case_metrics(np.roll(label, i, axis=1), label, 4, (0.8, 0.8, 3.0))
    cases["case3"] = case_metrics(np.zeros((8, 8, 4), int), np.zeros((8, 8, 4), int), 4)
    summary = summarize(cases, names, errors={"case9": "ValueError: broken"})
    csv_path, json_path = write_report(summary, tmp_path / "out")
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 4 * 3 + 3 + 1 + 1
    assert {r["class"] for r in rows if r["case"] == "mean"} == {*names, "all"}
    assert float(next(r for r in rows if r["case"] == "mean" and r["class"] == "all")["dice"]) == summary["mean_dice"]
    report = json.loads(json_path.read_text(), parse_constant=pytest.fail)  # strict JSON: no NaN
    assert report["mean_dice"] == pytest.approx(summary["mean_dice"]) and report["class_names"] == names
    assert report["cases"]["case3"]["liver"]["dice"] is None and report["per_class"]["liver"]["n_both_empty"] == 1
    assert report["protocol"] == "default" and report["errors"] == {"case9": "ValueError: broken"}
    assert sorted(os.listdir(tmp_path / "out")) == ["metrics.csv", "metrics.json"]  # no temporary left behind
    table = format_table(summary)
    assert all(name in table for name in [*names, "Mean", "Dice %", "HD95 (mm)", "IoU %", "ASD (mm)", "case9"])


def save_nifti(path: Path, array: np.ndarray, zooms=(0.8, 0.9, 2.5)) -> None:
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = (-10.0, 5.0, 2.0)
    nib.save(nib.Nifti1Image(array.astype(np.uint8), affine), str(path))


def test_evaluate_folders_reports_bad_cases_and_scores_the_others(tmp_path):
    rng = np.random.default_rng(6)
    preds, labels = tmp_path / "pred", tmp_path / "labels"
    (preds / "good2").mkdir(parents=True)
    labels.mkdir()
    good = {}
    for case in ("good1", "good2"):
        label = random_blobs((20, 22, 8), 4, rng)
        good[case] = (np.roll(label, 1, axis=0), label)
        save_nifti(labels / f"{case}_gt.nii.gz", label)
        save_nifti(labels / f"{case}.nii.gz", label * 0)  # the image beside the label (ACDC layout): skipped
    save_nifti(preds / "good1.nii.gz", good["good1"][0])
    save_nifti(preds / "good2" / "good2_seg.nii.gz", good["good2"][0])  # SaveImaged's folder layout
    save_nifti(labels / "shape_gt.nii.gz", np.zeros((20, 22, 8)))
    save_nifti(preds / "shape_seg.nii.gz", np.zeros((20, 22, 9)))
    save_nifti(labels / "affine_gt.nii.gz", np.zeros((20, 22, 8)))
    save_nifti(preds / "affine_seg.nii.gz", np.zeros((20, 22, 8)), zooms=(1.0, 1.0, 1.0))
    save_nifti(labels / "broken_gt.nii.gz", np.zeros((20, 22, 8)))
    (preds / "broken_seg.nii.gz").write_bytes(b"not a nifti file")
    save_nifti(labels / "orphan_gt.nii.gz", np.zeros((20, 22, 8)))

    summary = evaluate(str(preds), str(labels), 4, class_names="background,RV,MYO,LV", output_dir=str(tmp_path / "o"))
    printed = format_table(summary)
    assert sorted(summary["cases"]) == ["good1", "good2"] and summary["class_names"] == ["RV", "MYO", "LV"]
    for case, (pred, label) in good.items():
        expected = case_metrics(pred, label, 4, (0.8, 0.9, 2.5))
        assert summary["cases"][case]["MYO"] == pytest.approx(expected[2])
    errors = summary["errors"]
    assert sorted(errors) == ["affine", "broken", "orphan", "shape"]
    assert "shape_seg.nii.gz" in errors["shape"] and "shape_gt.nii.gz" in errors["shape"]
    assert "affine_seg.nii.gz" in errors["affine"] and "broken_seg.nii.gz" in errors["broken"]
    assert "no prediction" in errors["orphan"]
    assert all(f"ERROR {case}" in printed for case in errors) and "LV" in printed
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["errors"].keys() == errors.keys()


def test_evaluate_folders_label_map_and_file_lists(tmp_path):
    label = np.zeros((12, 12, 6), np.uint8)
    label[2:6, 2:6, 1:4], label[7:10, 7:10, 2:5], label[0:2, 9:12, 0:2] = 8, 4, 13  # raw BTCV-like ids
    pred = np.zeros_like(label)
    pred[2:6, 2:6, 1:4], pred[7:10, 7:10, 2:5] = 1, 2
    save_nifti(tmp_path / "c1_gt.nii.gz", label)
    save_nifti(tmp_path / "c1_pred.nii.gz", pred)
    summary = evaluate_folders(
        [tmp_path / "c1_pred.nii.gz"], [tmp_path / "c1_gt.nii.gz"], 3, ["aorta", "gallbladder"], label_map={8: 1, 4: 2}
    )
    assert summary["errors"] == {} and summary["mean_dice"] == 1.0


def test_files_without_spacing_are_scored_and_labelled_in_voxels(tmp_path):
    import h5py

    from mgrad.evaluation import score_pairs

    label = np.zeros((6, 24, 20), np.uint8)  # h5 layout (Z, H, W), like the SSL4MIS volumes
    label[1:5, 4:12, 4:12], label[1:5, 14:20, 10:16] = 1, 2
    pred = np.roll(label, 2, axis=1)
    for kind, array in (("pred", pred), ("label", label)):
        with h5py.File(tmp_path / f"c1_{kind}.h5", "w") as f:
            f["label"] = array
    pairs = {"c1": {"pred": tmp_path / "c1_pred.h5", "label": tmp_path / "c1_label.h5"}}
    summary = score_pairs(pairs, 3, ["rv", "myo"], output_dir=tmp_path / "o")
    assert summary["errors"] == {} and summary["distance_unit"] == "vox"
    assert summary["mean"]["hd95"] == pytest.approx(summary["mean"]["hd95_vox"]) and summary["mean"]["hd95"] > 0
    printed = format_table(summary)
    assert "HD95 (vox)" in printed and "ASD (vox)" in printed and "(mm)" not in printed
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["distance_unit"] == "vox"
    # a NIfTI label stores its spacing: millimetres
    save_nifti(tmp_path / "c2_gt.nii.gz", np.moveaxis(label, 0, -1))
    save_nifti(tmp_path / "c2_seg.nii.gz", np.moveaxis(pred, 0, -1))
    nifti = evaluate_folders([tmp_path / "c2_seg.nii.gz"], [tmp_path / "c2_gt.nii.gz"], 3, ["rv", "myo"])
    assert nifti["distance_unit"] == "mm" and "HD95 (mm)" in format_table(nifti)
    assert (
        evaluate_folders(
            [tmp_path / "c2_seg.nii.gz"], [tmp_path / "c2_gt.nii.gz"], 3, ["rv", "myo"], protocol="transunet"
        )["distance_unit"]
        == "vox"
    )
