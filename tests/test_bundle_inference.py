"""Whole-volume inference and evaluation through the bundle: geometry round trip, reports, pictures, bad input."""

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_fixtures import TINY, cli_args, config_arg, run_cli

from mgrad.networks import MGRADUNet


def infer(bundle_root: Path, input_dir: Path, output_dir: Path, **extra):
    """``mgrad infer`` with the bundle's model, built at the size its ``model.json`` records (no ``--size``)."""
    args = ["-m", "mgrad", "infer", "--input", str(input_dir), "--output_dir", str(output_dir)]
    return run_cli(args + cli_args({"bundle_root": str(bundle_root), "device": "cpu", **extra}))


def foreground_dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


def test_predictions_keep_each_volumes_geometry(trained_bundle, phantom_dir, tmp_path):
    images = sorted((phantom_dir / "imagesTr").glob("*.nii.gz"))
    # the same volumes stored in RAS voxel order: the pipeline sees the same arrays, so the predictions must be the
    # same voxels, each written back in its own file's order (the phantoms are oblique, flipped and anisotropic)
    canonical = tmp_path / "canonical"
    canonical.mkdir()
    for image_path in images:
        nib.save(nib.as_closest_canonical(nib.load(image_path)), canonical / image_path.name)
    out, out_canonical = tmp_path / "preds", tmp_path / "preds_canonical"
    # the second run loads its volumes in two worker processes and postprocesses them in a worker thread (as on
    # CUDA), the first does both in the main process (as on a CPU)
    runs = ((phantom_dir / "imagesTr", out, 0, False), (canonical, out_canonical, 2, True))
    for folder, predictions, workers, background in runs:
        result = infer(trained_bundle, folder, predictions, num_workers=workers, background_postprocessing=background)
        assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(out.glob("*_seg.nii.gz"))) == len(images) == 6
    assert not list(out.glob(".*")), "temporary files were left behind"
    for image_path in images:
        image = nib.load(image_path)
        pred = nib.load(out / image_path.name.replace(".nii.gz", "_seg.nii.gz"))
        label = np.asarray(nib.load(phantom_dir / "labelsTr" / image_path.name).dataobj)
        assert pred.shape == image.shape
        np.testing.assert_allclose(pred.affine, image.affine, atol=1e-4)
        values = np.asarray(pred.dataobj)
        assert pred.get_data_dtype() == np.uint8 and set(np.unique(values)) <= set(range(9))
        pred_canonical = nib.load(out_canonical / image_path.name.replace(".nii.gz", "_seg.nii.gz"))
        reoriented = nib.as_closest_canonical(pred)
        np.testing.assert_allclose(reoriented.affine, pred_canonical.affine, atol=1e-4)
        np.testing.assert_array_equal(np.asarray(reoriented.dataobj), np.asarray(pred_canonical.dataobj))
        # and where the organs are: the trained model's foreground overlaps the labels (0.50-0.63 measured)
        assert foreground_dice(values, label) > 0.35


def test_bad_volumes_are_reported_and_the_others_processed(trained_bundle, phantom_dir, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("case_000.nii.gz", "case_001.nii.gz"):
        shutil.copy(phantom_dir / "imagesTr" / name, inputs / name)
    (inputs / "broken.nii.gz").write_bytes(b"\x1f\x8b this is not a volume")
    three_channels = np.zeros((48, 48, 12, 3), np.float32)
    nib.save(nib.Nifti1Image(three_channels, np.eye(4)), inputs / "rgb.nii.gz")
    out = tmp_path / "preds"
    result = infer(trained_bundle, inputs, out, num_workers=2)  # failures reported from the loader's workers too
    assert result.returncode == 1
    message = result.stdout + result.stderr
    assert "2 of 4 cases failed" in message
    assert f"{inputs / 'broken.nii.gz'}: cannot be read" in message
    assert "rgb.nii.gz" in message and "3 channels" in message
    assert sorted(p.name for p in out.iterdir()) == ["case_000_seg.nii.gz", "case_001_seg.nii.gz"]


def test_missing_checkpoint_is_named(trained_bundle, phantom_dir, tmp_path):
    missing = tmp_path / "nowhere" / "model.pt"
    result = infer(trained_bundle, phantom_dir / "imagesTr", tmp_path / "preds", ckpt_path=str(missing))
    assert result.returncode == 1
    assert f"checkpoint {missing} not found" in result.stderr


def test_checkpoint_for_other_classes_is_named(trained_bundle, phantom_dir, tmp_path):
    other = tmp_path / "acdc.pt"
    torch.save(MGRADUNet(2, 1, 4, features=TINY["features"], rfb_channels=TINY["rfb_channels"]).state_dict(), other)
    result = infer(trained_bundle, phantom_dir / "imagesTr", tmp_path / "preds", ckpt_path=str(other), size=TINY)
    assert result.returncode == 1
    assert f"checkpoint {other} does not fit the network" in result.stderr
    assert "msd.pred.conv.weight: checkpoint (4, 8, 1, 1), network (9, 8, 1, 1)" in result.stderr


def test_an_output_dir_that_is_a_file_is_refused_before_anything_runs(phantom_dir, tmp_path):
    """An ``output_dir`` naming a file (or a folder below one) is refused when the run is set up, naming the file,
    not after every volume's network pass; the file is left as it was."""
    from mgrad.bundle import infer as infer_in_process
    from mgrad.errors import root_cause

    blocker = tmp_path / "case_000.nii.gz"
    blocker.write_bytes(b"kept")
    for output_dir in (blocker, blocker / "preds"):
        with pytest.raises(RuntimeError) as exc:
            infer_in_process(str(phantom_dir / "imagesTr"), str(output_dir), size=dict(TINY), device="cpu")
        cause = root_cause(exc.value)
        assert isinstance(cause, NotADirectoryError), repr(cause)
        assert str(cause) == f"output folder {output_dir}: {blocker} is a file, not a folder; give another output_dir"
    assert blocker.read_bytes() == b"kept"


def test_evaluate_a_dataset_split(trained_bundle, phantom_dir, tmp_path):
    out = tmp_path / "eval"
    args = ["-m", "mgrad", "evaluate", "--dataset", "synthetic", "--dataset_dir", str(phantom_dir)]
    args += cli_args({"bundle_root": str(trained_bundle), "output_dir": str(out), "device": "cpu"})  # size: model.json
    result = run_cli(args)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "metrics.json").read_text())
    assert 0.0 < report["mean_dice"] <= 1.0
    assert sorted(report["cases"]) == ["case_000", "case_005"]
    header = next(line for line in result.stdout.splitlines() if "aorta" in line)
    assert all(organ in header for organ in ("gallbladder", "kidney_left", "pancreas", "stomach"))
    assert sorted(p.name for p in (out / "figures").glob("*.png")) == ["case_000.png", "case_005.png"]
    assert (out / "metrics.csv").read_text().startswith("case,")


@pytest.mark.parametrize("protocol", ["transunet"])
def test_evaluate_config_through_monai_bundle(trained_bundle, phantom_dir, tmp_path, protocol):
    configs = config_arg(trained_bundle, "inference", "evaluate")
    overrides = {"bundle_root": str(trained_bundle), "dataset_dir": str(phantom_dir), "output_dir": str(tmp_path)}
    overrides.update({"size": TINY, "protocol": protocol, "device": "$torch.device('cpu')"})
    result = run_cli(["-m", "monai.bundle", "run", "--config_file", configs, *cli_args(overrides)])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["protocol"] == "transunet" and "HD95 (vox)" in result.stdout
