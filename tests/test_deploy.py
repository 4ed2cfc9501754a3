"""Deployment paths: MONAI Deploy's bundle operator (its own loading and saving), MLflow tracking, exported metadata."""

import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_fixtures import REPO, TINY, cli_args, run_cli
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose

from mgrad.bundle import infer, load_workflow
from mgrad.bundle_metadata import md5sum
from mgrad.model_export import export_model, load_bundle_network


def torchscript_bundle_config(path: Path) -> ConfigParser:
    """The configs MONAI Deploy's bundle operator reads from a TorchScript file: ``<file stem>/extra/metadata.json``
    and ``<file stem>/extra/inference.json``, that one config alone."""
    parser = ConfigParser()
    with zipfile.ZipFile(path) as archive:
        parser.read_meta(json.loads(archive.read(f"{path.stem}/extra/metadata.json")))
        parser.read_config(json.loads(archive.read(f"{path.stem}/extra/inference.json")))
    return parser


@pytest.mark.parametrize("fast", [False, True], ids=["float32", "bfloat16"])
def test_inference_config_runs_under_monai_deploy_filtering(fast, trained_bundle, phantom_dir, tmp_path):
    """MonaiBundleInferenceOperator drops the pre-transforms named like LoadImage and the post-transforms named like
    SaveImage, feeds an in-memory image and keeps the prediction in memory: it must match the file-based run, with
    the bundle's configs and the PyTorch network, and with the configs and network of ``mgrad export --format
    torchscript``, the file Deploy runs. Both inference paths run on every CPU: the plain float32 one (``--fast
    false``) and the bfloat16 fast path (``--fast true``; the default on CPUs with AMX), where the TorchScript file,
    frozen, computes the PyTorch network's numbers."""
    image_path = sorted((phantom_dir / "imagesTr").glob("*.nii.gz"))[0]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / image_path.name).symlink_to(image_path)
    settings = {"size": dict(TINY), "device": "cpu", "fast": fast}
    (written,) = infer(str(inputs), str(tmp_path / "preds"), str(trained_bundle), **settings)
    from_file = nib.load(written)

    workflow = load_workflow(["inference"], trained_bundle, dataset_dir=str(inputs), **settings)
    scripted = Path(export_model("torchscript", str(tmp_path / "model.ts"), str(trained_bundle), size=dict(TINY)))
    runs = {
        "bundle configs, PyTorch": (workflow.parser, load_bundle_network(trained_bundle, size=dict(TINY))[0]),
        "TorchScript file": (torchscript_bundle_config(scripted), torch.jit.load(str(scripted))),
    }
    for name, (parser, network) in runs.items():
        parser["fast"] = fast
        pre, post = (parser.get_parsed_content(key).transforms for key in ("preprocessing", "postprocessing"))
        pre = [t for t in pre if "LoadImage" not in type(t).__name__]
        post = [t for t in post if "SaveImage" not in type(t).__name__]
        assert len(pre) == len(parser.get_parsed_content("preprocessing").transforms) - 1

        nifti = nib.load(image_path)
        affine = torch.as_tensor(nifti.affine, dtype=torch.float64)
        meta = {"affine": affine, "original_affine": affine.clone(), "original_channel_dim": "no_channel"}
        meta.update(spatial_shape=np.asarray(nifti.shape), filename_or_obj=image_path.name)
        data = Compose(pre)({"image": MetaTensor(np.asarray(nifti.dataobj, dtype=np.float32), meta=meta)})
        with torch.no_grad():
            data["pred"] = parser.get_parsed_content("inferer")(data["image"][None], network)[0]
        pred = Compose(post)(data)["pred"]
        assert tuple(pred.shape[1:]) == from_file.shape, name
        np.testing.assert_allclose(pred.affine.numpy(), from_file.affine, atol=1e-4)
        assert np.array_equal(pred[0].numpy().astype(np.uint8), np.asarray(from_file.dataobj)), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "model.ts", "preds"]  # no temporary left


def test_mlflow_tracking_records_params_losses_dice_and_best_model(phantom_dir, tmp_path):
    mlflow = pytest.importorskip("mlflow", reason="MLflow tracking needs mlflow (pip install mgrad[tracking])")
    from bundle_fixtures import copy_bundle

    root = copy_bundle(tmp_path / "bundle")
    store = f"sqlite:///{tmp_path / 'mlruns.db'}"  # a local store; MONAI 1.6 refuses file:// with MLflow >= 3.13
    # mgrad train passes --tracking to MONAI's workflow as `python -m monai.bundle run --tracking mlflow` does
    args = ["-m", "mgrad", "train", "--tracking", "mlflow", "--tracking_uri", store, "--experiment_name", "mgrad_test"]
    overrides = {"bundle_root": str(root), "dataset_dir": str(phantom_dir), "size": TINY, "epochs": 2}
    overrides.update(val_interval=1, device="cpu", dataset="synthetic")
    result = run_cli(args + cli_args(overrides), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow.MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("mgrad_test").experiment_id])
    assert run.data.params["max_epochs"] == "2" and "epoch_length" in run.data.params
    losses = client.get_metric_history(run.info.run_id, "train_epoch_loss")
    dice = client.get_metric_history(run.info.run_id, "val_mean_dice")
    assert [m.step for m in losses] == [1, 2] and all(np.isfinite(m.value) and m.value > 0 for m in losses)
    assert [m.step for m in dice] == [1, 2] and all(0 <= m.value <= 1 for m in dice)
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) > 2  # one per iteration
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert "model.pt" in artifacts and any(a.startswith("config_") for a in artifacts), artifacts


def test_exported_metadata_validates_and_carries_its_evaluation(trained_bundle, phantom_dir, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    from mgrad.export import export_bundle

    archive = export_bundle(
        str(tmp_path / "mgrad_unet.zip"),
        bundle_root=str(trained_bundle),
        eval_dataset="synthetic",
        eval_dataset_dir=str(phantom_dir),
        size=dict(TINY),
        device="cpu",
    )
    with zipfile.ZipFile(archive) as z:
        meta = json.loads(z.read("mgrad_unet/configs/metadata.json"))
        report = json.loads(z.read("mgrad_unet/eval/metrics.json"))
        large_files = z.read("mgrad_unet/large_files.yml").decode()
        names = z.namelist()
    jsonschema.validate(meta, json.loads((REPO / "tests" / "data" / "meta_schema.json").read_text()))
    assert meta["eval_metrics"]["mean_dice"] == pytest.approx(report["mean"]["dice"]) and report["num_cases"] == 2
    assert meta["eval_protocol"] == {
        "dataset": "synthetic",
        "split": "validation",
        "model_md5": md5sum(trained_bundle / "models" / "model.pt"),
        "protocol": "default",
        "num_cases": 2,
    }
    assert f'hash_val: "{md5sum(trained_bundle / "models" / "model.pt")}"' in large_files
    assert 'path: "models/model.pt"' in large_files and "mgrad_unet/models/model.pt" in names
    assert "mgrad" not in meta["required_packages_version"] and "nibabel" in meta["required_packages_version"]
    assert {"mgrad_unet/setup.cfg", "mgrad_unet/pyproject.toml", "mgrad_unet/mgrad/__init__.py"} <= set(names)
