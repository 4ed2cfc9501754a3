"""The inference and training options through the commands: probabilities, test-time augmentation, post-processing
chosen by evaluate, cross-validation folds and their ensemble, fine-tuning from a checkpoint of another label set."""

import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_fixtures import TINY, cli_args, copy_bundle, run_cli

from mgrad.bundle import checkpoint_paths
from mgrad.networks import MGRADUNet
from mgrad.postprocess import apply_rules, load_rules


def mgrad(command: str, bundle_root: Path, **options) -> tuple[str, str]:
    """Run ``python -m mgrad command`` with the tiny preset on the CPU; its stdout and stderr (it must succeed)."""
    args = ["-m", "mgrad", command, *cli_args({"bundle_root": str(bundle_root), "size": TINY, "device": "cpu"})]
    result = run_cli(args + cli_args(options))
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, result.stderr


def two_volumes(phantom_dir: Path, dest: Path) -> Path:
    dest.mkdir()
    for name in ("case_000.nii.gz", "case_005.nii.gz"):
        shutil.copy(phantom_dir / "imagesTr" / name, dest / name)
    return dest


def read(path: Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    image = nib.load(path)
    return np.asarray(image.dataobj), image


def test_probabilities_tta_and_the_postprocessing_chosen_by_evaluate(trained_bundle, phantom_dir, tmp_path):
    stdout, _ = mgrad(
        "evaluate", trained_bundle, dataset="synthetic", dataset_dir=str(phantom_dir), output_dir=str(tmp_path / "ev")
    )
    rules_file = tmp_path / "ev" / "postprocessing.json"
    rules = load_rules(rules_file)
    assert sorted(rules) == list(range(1, 9))
    assert "with the post-processing chosen per class on the validation split" in stdout
    assert json.loads((tmp_path / "ev" / "postprocessed" / "metrics.json").read_text())["num_cases"] == 2
    inputs = two_volumes(phantom_dir, tmp_path / "inputs")

    mgrad("infer", trained_bundle, input=str(inputs), output_dir=str(tmp_path / "plain"), probabilities="true")
    mgrad(
        "infer",
        trained_bundle,
        input=str(inputs),
        output_dir=str(tmp_path / "tta"),
        probabilities="true",
        tta="flip",
        postprocess=str(rules_file),
    )
    for case in ("case_000", "case_005"):
        image = nib.load(inputs / f"{case}.nii.gz")
        plain_labels, _ = read(tmp_path / "plain" / f"{case}_seg.nii.gz")
        plain, prob_image = read(tmp_path / "plain" / f"{case}_prob.nii.gz")
        # per-class probabilities in the input's geometry, classes along the fourth axis, summing to 1
        assert prob_image.shape == (*image.shape, 9)
        np.testing.assert_allclose(prob_image.affine, image.affine, atol=1e-4)
        probs = prob_image.get_fdata()
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=9 / 65535)
        np.testing.assert_array_equal(np.asarray(plain).argmax(-1), plain_labels)
        # TTA: other probabilities on the same grid; its labels are their argmax with the chosen rules applied
        tta_labels, _ = read(tmp_path / "tta" / f"{case}_seg.nii.gz")
        tta = np.asarray(nib.load(tmp_path / "tta" / f"{case}_prob.nii.gz").dataobj)
        assert tta.shape == plain.shape and np.abs(tta - plain).max() > 0.05
        spacing = image.header.get_zooms()[:3]
        expected = apply_rules(torch.as_tensor(tta.argmax(-1))[None], rules, spacing)[0].numpy()
        np.testing.assert_array_equal(tta_labels, expected)


def test_two_folds_their_ensemble_and_the_cross_validation_table(phantom_dir, tmp_path):
    root = copy_bundle(tmp_path / "bundle")
    for fold in (0, 1):
        mgrad("train", root, dataset_dir=str(phantom_dir), folds=2, fold=fold, epochs=2, val_interval=2)
    splits = [json.loads((root / "models" / f"fold{k}" / "split.json").read_text()) for k in (0, 1)]
    held_out = [set(split["patients"]["validation"]) for split in splits]
    assert held_out[0].isdisjoint(held_out[1]) and len(held_out[0] | held_out[1]) == 5  # every patient once
    assert all((root / "models" / f"fold{k}" / "model.pt").is_file() for k in (0, 1))
    assert not (root / "models" / "model.pt").exists()

    inputs = two_volumes(phantom_dir, tmp_path / "inputs")
    mgrad("infer", root, input=str(inputs), output_dir=str(tmp_path / "ens"), folds=2)
    labels, image = read(tmp_path / "ens" / "case_000_seg.nii.gz")
    assert labels.shape == nib.load(inputs / "case_000.nii.gz").shape and labels.dtype == np.uint8

    stdout, _ = mgrad("evaluate", root, dataset="synthetic", dataset_dir=str(phantom_dir), folds=2)
    rows = [line.split() for line in stdout.splitlines() if re.match(r"\s+[01]\s+\d", line)]
    assert [row[0] for row in rows] == ["0", "1"] and sum(int(row[1]) for row in rows) == 5
    assert "all held-out cases pooled:" in stdout and (root / "eval" / "postprocessing.json").is_file()


def test_fold_ensemble_checkpoints_follow_the_configs_model_folders(tmp_path):
    root = copy_bundle(tmp_path / "bundle")
    assert checkpoint_paths(None, folds=2, bundle_root=root) == [f"{root}/models/fold{k}/model.pt" for k in (0, 1)]
    # the baseline keeps its folds in its own folder, where `train --configs baseline_basicunet --folds` put them
    baseline = checkpoint_paths(None, folds=2, bundle_root=root, configs="baseline_basicunet")
    assert baseline == [f"{root}/models/basicunet/fold{k}/model.pt" for k in (0, 1)]


def test_baseline_and_test_split_evaluations_keep_their_own_folders(phantom_dir, tmp_path, one_thread):
    from monai.networks.nets import BasicUNet

    from mgrad.evaluation import evaluate

    root = copy_bundle(tmp_path / "bundle")
    (root / "models" / "basicunet").mkdir(parents=True)
    torch.save(
        BasicUNet(spatial_dims=2, in_channels=1, out_channels=9).state_dict(), root / "models/basicunet/model.pt"
    )
    summary = evaluate(
        dataset="synthetic", dataset_dir=str(phantom_dir), bundle_root=str(root), configs="baseline_basicunet",
        device="cpu", size=TINY,
    )  # fmt: skip
    # beside MGRAD-UNet's eval/, which it must not overwrite
    assert (root / "eval" / "basicunet" / "metrics.json").is_file() and summary["num_cases"] == 2
    rules_file = root / "eval" / "basicunet" / "postprocessing.json"
    assert summary["postprocessing"]["path"] == str(rules_file)
    assert not (root / "eval" / "metrics.json").exists() and not (root / "eval" / "postprocessing.json").exists()

    # the test split keeps a folder of its own and chooses nothing: the validation's rules are applied to it
    validation_report, chosen = (root / "eval/basicunet/metrics.json").read_text(), rules_file.read_text()
    test = evaluate(
        dataset="synthetic", dataset_dir=str(phantom_dir), bundle_root=str(root), configs="baseline_basicunet",
        device="cpu", size=TINY, split="test",
    )  # fmt: skip
    test_dir = root / "eval" / "basicunet" / "test"
    assert (test_dir / "metrics.json").is_file() and not (test_dir / "postprocessing.json").exists()
    assert (root / "eval/basicunet/metrics.json").read_text() == validation_report and rules_file.read_text() == chosen
    assert test["postprocessing"] == {
        "path": str(rules_file), "rules": load_rules(rules_file), "dice": None, "chosen_on": "validation"
    }  # fmt: skip
    assert json.loads((test_dir / "postprocessed" / "metrics.json").read_text())["num_cases"] == test["num_cases"] == 1
    rules_file.unlink()  # without the validation's rules, the test split is reported as it is
    assert "postprocessing" not in evaluate(
        dataset="synthetic", dataset_dir=str(phantom_dir), bundle_root=str(root), configs="baseline_basicunet",
        device="cpu", size=TINY, split="test",
    )  # fmt: skip


def test_fine_tune_a_nine_class_checkpoint_to_four_classes(phantom_dir, tmp_path):
    data = tmp_path / "four"
    shutil.copytree(phantom_dir, data)
    for path in (data / "labelsTr").glob("*.nii.gz"):
        labels, image = read(path)
        nib.save(nib.Nifti1Image(np.where(labels < 4, labels, 0).astype(labels.dtype), image.affine), path)
    pretrained = tmp_path / "synapse.pt"
    nine = MGRADUNet(2, 1, 9, features=TINY["features"], rfb_channels=TINY["rfb_channels"])
    torch.save({"model": nine.state_dict()}, pretrained)
    root = copy_bundle(tmp_path / "bundle")

    stdout, stderr = mgrad(
        "train", root, dataset_dir=str(data), num_classes=4, pretrained=str(pretrained), epochs=1, val_interval=1
    )
    log = stdout + stderr
    assert f"Pretrained weights from {pretrained}" in log
    assert "msd.pred.conv.weight (checkpoint (9, 8, 1, 1), network (4, 8, 1, 1))" in log
    trained = torch.load(root / "models" / "model.pt", weights_only=True)
    assert trained["msd.pred.conv.weight"].shape[0] == 4


def test_evaluating_a_model_on_a_dataset_of_other_classes_is_refused(trained_bundle, acdc_h5_dir, tmp_path):
    """The trained model's classes come from its ``model.json`` (the phantom's 9); ACDC's labels hold 4."""
    from mgrad.errors import root_cause
    from mgrad.evaluation import evaluate

    out = tmp_path / "ev"
    options = {"dataset": "acdc_h5", "dataset_dir": str(acdc_h5_dir), "output_dir": str(out), "size": TINY}
    with pytest.raises(RuntimeError) as error:  # MONAI's wrapper of the handler's error, which the CLI prints
        evaluate(bundle_root=str(trained_bundle), **options)
    message = str(root_cause(error.value))
    assert re.match("the model segments 9 classes .* the dataset to evaluate hold 4: score it on", message), message
    assert not list(out.rglob("*.nii.gz"))
