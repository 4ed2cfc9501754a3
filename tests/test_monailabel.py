"""The bundle inside MONAI Label 0.8.5 (monaibundle app): BundleInferTask and BundleTrainTask, offline.

Needs monailabel, which needs its own virtual environment: run ``bash scripts/run_monailabel_check.sh``. The main
suite deselects these tests (marker ``monailabel``) and, where monailabel is missing, skips the module.
"""

import json
import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.monailabel
pytest.importorskip("monailabel")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from bundle_fixtures import TINY, config_files, copy_bundle  # noqa: E402
from monai.bundle import run  # noqa: E402
from monailabel.tasks.infer.bundle import BundleInferTask  # noqa: E402
from monailabel.tasks.train.bundle import BundleTrainTask  # noqa: E402
from monailabel.utils.others.generic import get_bundle_models  # noqa: E402

from mgrad.bundle import STANDALONE_CONFIGS, standalone_config  # noqa: E402

NAME = "mgrad_unet"
CONF = {"models": NAME, "zoo_source": "github"}  # not monaihosting: a local bundle, no network lookup
ORGANS = ["aorta", "gallbladder", "kidney_left", "kidney_right", "liver", "pancreas", "spleen", "stomach"]


def use_tiny_preset(bundle: Path) -> None:
    """MONAI Label instantiates the configs with their own defaults (preset ``small``): in this copy, ``small`` is
    the tiny test preset, so the weights trained below fit the network MONAI Label builds."""
    path = bundle / "configs" / "common.json"
    config = json.loads(path.read_text())
    config["size_presets"]["small"] = dict(TINY)
    path.write_text(json.dumps(config, indent=4))


def write_standalone_configs(source: Path, bundle: Path) -> None:
    """MONAI Label reads train.json and inference.json alone: ship them merged with common.json, as
    ``mgrad export-bundle`` does."""
    for name in STANDALONE_CONFIGS:
        (bundle / "configs" / f"{name}.json").write_text(json.dumps(standalone_config(source, name), indent=4))


def pairs(dataset_dir: Path) -> list:
    meta = json.loads((dataset_dir / "dataset.json").read_text())
    items = meta["training"] + meta["validation"]
    return [{k: str((dataset_dir / v).resolve()) for k, v in item.items()} for item in items]


class Datastore:
    """The part of a MONAI Label datastore that BundleTrainTask uses: labelled image/label pairs."""

    def __init__(self, items: list) -> None:
        self.items = items

    def datalist(self) -> list:
        return [dict(item) for item in self.items]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, phantom_dir: Path) -> Path:
    """A MONAI Label app folder with the bundle at ``model/mgrad_unet``: configs, docs, LICENSE and a
    ``models/model.pt`` trained briefly with the bundle's own training (as a downloaded bundle ships it)."""
    root = tmp_path_factory.mktemp("monailabel")
    trained = copy_bundle(root / "trained")
    use_tiny_preset(trained)
    run(
        "run",
        config_file=config_files(trained, "train"),
        meta_file=str(trained / "configs" / "metadata.json"),
        logging_file=str(trained / "configs" / "logging.conf"),
        bundle_root=str(trained),
        dataset_dir=str(phantom_dir),
        device="$torch.device('cpu')",
        epochs=4,
        val_interval=2,
    )
    assert (trained / "models" / "model.pt").is_file()

    bundle = root / "app" / "model" / NAME
    bundle.mkdir(parents=True)
    for name in ("configs", "docs"):
        shutil.copytree(trained / name, bundle / name)
    write_standalone_configs(trained, bundle)
    shutil.copy2(trained / "LICENSE", bundle / "LICENSE")
    (bundle / "models").mkdir()
    shutil.copy2(trained / "models" / "model.pt", bundle / "models" / "model.pt")
    return root / "app"


def bundle_path(app: Path) -> str:
    bundles = get_bundle_models(str(app), CONF)
    assert bundles == {NAME: str(app / "model" / NAME)}
    return bundles[NAME]


def bundle_inference(bundle: Path, image: str, out_dir: Path) -> np.ndarray:
    """The prediction of the bundle's own inference workflow (``monai.bundle run`` with inference.json)."""
    run(
        "run",
        config_file=str(bundle / "configs" / "inference.json"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
        bundle_root=str(bundle),
        datalist=[{"image": image}],
        output_dir=str(out_dir),
        device="$torch.device('cpu')",
    )
    (pred,) = sorted(out_dir.glob("*.nii.gz"))
    return np.asarray(nib.load(pred).dataobj)


def test_bundle_infer_task(app, phantom_dir, tmp_path):
    path = bundle_path(app)
    task = BundleInferTask(path, CONF)
    assert task.is_valid()
    assert task.labels == {organ: i + 1 for i, organ in enumerate(ORGANS)}
    assert task.type == "segmentation"

    image = pairs(phantom_dir)[-1]["image"]
    result_file, result_json = task({"image": image, "device": "cpu"})
    try:
        assert result_file and os.path.isfile(result_file), (result_file, result_json)
        src, out = nib.load(image), nib.load(result_file)
        pred = np.asarray(out.dataobj)
        assert pred.shape == src.shape[:3]
        assert np.allclose(out.affine, src.affine, atol=1e-3)
        assert set(np.unique(pred).astype(int).tolist()) <= set(range(len(ORGANS) + 1))
        # MONAI Label's pipeline (its own loader wrapper, inferer call, Restored) gives the bundle's own prediction
        expected = bundle_inference(Path(path), image, tmp_path / "bundle_pred")
        assert expected.shape == pred.shape
        assert np.mean(expected == pred) > 0.999, np.mean(expected == pred)
    finally:
        if result_file and os.path.isfile(result_file):
            os.remove(result_file)


def train_request(app: Path, items: list) -> tuple:
    """One MONAI Label training request (one epoch on ``items``, a third of them for validation); returns the
    weights MONAI Label serves (``models/model.pt``) before and after, and whether the request wrote them."""
    path = bundle_path(app)
    model = Path(path) / "models" / "model.pt"
    before, mtime = torch.load(model, weights_only=True), model.stat().st_mtime_ns
    task = BundleTrainTask(path, CONF)
    assert task.is_valid()
    request = {"model": NAME, "max_epochs": 1, "device": "cpu", "multi_gpu": False, "val_split": 0.34}
    assert task(request, Datastore(items)) == {}
    after = torch.load(model, weights_only=True)
    assert after.keys() == before.keys()
    return before, after, model.stat().st_mtime_ns > mtime


def changed(before: dict, after: dict) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())


def test_bundle_train_task(app, phantom_dir):
    items = pairs(phantom_dir)[:3]  # two for training, one for validation (val_split)
    before, after, written = train_request(app, items)
    checkpoint = app / "model" / NAME / "models" / "checkpoint.pt"
    assert checkpoint.is_file()  # the epoch ran
    # it started from the shipped weights (MONAI Label's CheckpointLoader), and the trained weights were validated
    # and saved as models/model.pt, which MONAI Label's inference serves
    assert written, "models/model.pt was not written: the one-epoch run was never validated"
    assert changed(before, after)

    # the retrained bundle still serves inference
    infer = BundleInferTask(bundle_path(app), CONF)
    image = items[-1]["image"]
    result_file, _ = infer({"image": image, "device": "cpu"})
    try:
        assert np.asarray(nib.load(result_file).dataobj).shape == nib.load(image).shape[:3]
    finally:
        os.remove(result_file)


def test_bundle_train_task_again(app, phantom_dir):
    """The next round of active learning: another request on more labels trains again (models/checkpoint.pt of
    the finished request before must not turn it into a no-op)."""
    before, after, written = train_request(app, pairs(phantom_dir)[:4])
    assert written, "models/model.pt was not written by the second training request"
    assert changed(before, after)
