"""The bundle's training configs, run as users run them: monai.bundle, mgrad train, torchrun, resume, time budget."""

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from bundle_fixtures import REPO, cli_args, config_arg, config_files, copy_bundle, run_cli, tiny_overrides
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from mgrad.data import dataset_info


def epoch_of(checkpoint: Path) -> int:
    """The number of epochs the trainer state in ``checkpoint`` had completed."""
    trainer = torch.load(checkpoint, weights_only=False)["trainer"]
    return trainer["iteration"] // trainer["epoch_length"]


def validation_scores(root: Path, dataset_dir: Path, weights: Path = None, fast: bool = None) -> tuple:
    """``(mean Dice over the organs, foreground Dice)`` of the bundle's validation evaluator, with untrained weights
    or ``weights``, on the fast (``True``) or plain (``False``) inference path. The foreground Dice scores "any organ"
    against background over all validation volumes."""
    workflow = ConfigWorkflow(
        config_file=config_files(root, "train"),
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        **tiny_overrides(root, dataset_dir, fast_inference=fast),
        **{"validate#handlers": []},  # no checkpoint saver: models/model.pt stays as trained
    )
    workflow.initialize()
    if weights is not None:
        workflow.parser.get_parsed_content("network").load_state_dict(torch.load(weights, weights_only=True))
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    overlap = torch.zeros(3)  # |pred & label|, |pred|, |label| of the foreground

    def count_foreground(engine) -> None:
        for item in engine.state.output:
            pred, label = item["pred"][1:].sum(0) > 0, item["label"][1:].sum(0) > 0
            overlap.add_(torch.stack([(pred & label).sum(), pred.sum(), label.sum()]).float())

    evaluator.add_event_handler(Events.ITERATION_COMPLETED, count_foreground)
    evaluator.run()
    return evaluator.state.metrics["val_mean_dice"], float(2 * overlap[0] / (overlap[1] + overlap[2]))


def test_properties_of_train_and_inference_configs(tmp_path, phantom_dir):
    root = copy_bundle(tmp_path / "bundle")
    for config, kind in (("train", "train"), ("inference", "infer")):
        workflow = ConfigWorkflow(
            config_file=config_files(root, config),
            meta_file=str(root / "configs" / "metadata.json"),
            logging_file=False,
            workflow_type=kind,
            bundle_root=str(root),
            dataset_dir=str(phantom_dir),
        )
        workflow.initialize()
        assert workflow.check_properties() == []


@pytest.mark.parametrize("fast", [False, True], ids=["plain_inference", "fast_inference"])
def test_training_raises_validation_dice(trained_bundle, phantom_dir, fast):
    weights = trained_bundle / "models" / "model.pt"
    assert weights.is_file() and (trained_bundle / "models" / "checkpoint.pt").is_file()
    untrained_mean, untrained_foreground = validation_scores(trained_bundle, phantom_dir, fast=fast)
    trained_mean, trained_foreground = validation_scores(trained_bundle, phantom_dir, weights, fast=fast)
    # The tiny model learns where the organs are decisively: after 8 of the fixture's 10 epochs, seeds 0-6 (a CPU
    # without native bf16 is one more such draw) reached a foreground Dice of 0.56-0.71 against 0.14 untrained,
    # on either inference path; telling the eight organs apart takes longer (mean Dice 0.09-0.16 against 0.00).
    # The best model of 10 epochs is at least as good as that of their first 8.
    assert trained_foreground > untrained_foreground + 0.3, (untrained_foreground, trained_foreground)
    assert trained_mean > untrained_mean + 0.03, (untrained_mean, trained_mean)
    assert list((trained_bundle / "logs").glob("events.out.tfevents.*"))


def test_the_best_model_is_saved_with_the_settings_inference_needs(trained_bundle, phantom_dir):
    info = dataset_info("synthetic", str(phantom_dir))
    assert json.loads((trained_bundle / "models" / "model.json").read_text()) == {
        "preset": "small",
        "in_channels": 1,
        "num_classes": info.num_classes,
        "class_names": list(info.class_names),
        "intensity": info.intensity,
        "dataset": "synthetic",
    }


@pytest.mark.parametrize("run_id", ["training", None])
def test_monai_bundle_cli_run_ids(tmp_path, phantom_dir, run_id):
    root = copy_bundle(tmp_path / "bundle")
    args = ["-m", "monai.bundle", "run", *([run_id] if run_id else [])]
    args += [
        "--config_file",
        config_arg(root, "train"),
        "--meta_file",
        str(root / "configs" / "metadata.json"),
    ]
    result = run_cli(args + cli_args(tiny_overrides(root, phantom_dir, epochs=1, val_interval=1)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "best validation mean Dice:" in result.stdout
    assert (root / "models" / "model.pt").is_file()


def test_mgrad_train_with_time_budget(tmp_path, phantom_dir):
    root = copy_bundle(tmp_path / "bundle")
    overrides = tiny_overrides(root, phantom_dir, epochs=500, val_interval=1000, time_budget=3)
    start = time.monotonic()
    result = run_cli(["-m", "mgrad", "train", *cli_args(overrides)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert time.monotonic() - start < 120
    assert "Time budget of 3 s spent" in result.stdout + result.stderr
    # the run stopped early, then validated its final weights so that models/model.pt exists
    assert (root / "models" / "model.pt").is_file()
    checkpoint = root / "models" / "checkpoint.pt"
    assert not checkpoint.exists() or epoch_of(checkpoint) < 500
    # the final validation is recorded under the epoch and iteration it ran at, also inside a partial epoch
    history = json.loads((root / "logs" / "history.json").read_text())
    lengths = {len(v) for v in history.values()}
    assert len(lengths) == 1 and history["epoch"] == sorted(set(history["epoch"])), history
    epoch_length = 5  # five training volumes, one volume (8 slices) per batch
    assert history["epoch"][-1] == -(-history["iteration"][-1] // epoch_length), history
    assert history["val_mean_dice"][-1] is not None and all(d is None for d in history["val_mean_dice"][:-1])


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path, phantom_dir):
    root = copy_bundle(tmp_path / "bundle")
    config = ["-m", "monai.bundle", "run", "--config_file", config_arg(root, "train")]
    checkpoint = root / "models" / "checkpoint.pt"
    overrides = tiny_overrides(root, phantom_dir, epochs=1000, val_interval=1000)
    process = subprocess.Popen([sys.executable, *config, *cli_args(overrides)], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not checkpoint.is_file() and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)  # let it train on into its next epoch
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert checkpoint.is_file(), "no checkpoint was written before the deadline"
    state = torch.load(checkpoint, weights_only=False)
    saved_epoch = epoch_of(checkpoint)
    assert set(state) == {"model", "optimizer", "lr_scheduler", "trainer", "validation"}
    assert not list(checkpoint.parent.glob(".*partial*")), "a half-written file was left behind"

    overrides = tiny_overrides(root, phantom_dir, epochs=saved_epoch + 1, val_interval=1000)
    result = run_cli([*config, *cli_args(overrides)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resuming from {checkpoint}" in result.stdout + result.stderr
    assert epoch_of(checkpoint) == saved_epoch + 1

    # a finished run's checkpoint is not resumed (MONAI Label's next training request): training starts afresh
    result = run_cli([*config, *cli_args(overrides)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Not resuming from {checkpoint}" in result.stdout + result.stderr
    assert epoch_of(checkpoint) == saved_epoch + 1

    # another network's run into the same folder stops before it writes anything: the checkpoint is not its own
    saved = checkpoint.read_bytes()
    baseline = ["-m", "monai.bundle", "run", "--config_file", config_arg(root, "train", "baseline_basicunet")]
    result = run_cli([*baseline, *cli_args({**overrides, "model_dir": str(checkpoint.parent)})])
    assert result.returncode != 0
    assert f"checkpoint {checkpoint} does not fit the network" in result.stderr
    assert "another run, which this one would overwrite" in result.stderr
    assert checkpoint.read_bytes() == saved


def test_torchrun_two_processes_on_cpu(tmp_path, phantom_dir):
    root = copy_bundle(tmp_path / "bundle")
    configs = config_arg(root, "train", "multi_gpu_train")
    args = ["-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
    args += ["-m", "monai.bundle", "run", "training", "--config_file", configs]
    overrides = tiny_overrides(root, phantom_dir, epochs=2, val_interval=1)
    overrides.pop("device")  # multi_gpu_train.json picks the device of each rank
    result = run_cli(args + cli_args(overrides), timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("best validation mean Dice:") == 1  # printed by rank 0 only
    state = torch.load(root / "models" / "checkpoint.pt", weights_only=False)
    assert not any(k.startswith("module.") for k in state["model"])  # saved unwrapped, loadable without DDP
    assert epoch_of(root / "models" / "checkpoint.pt") == 2


def _train(root: Path, phantom_dir: Path, **overrides) -> None:
    from monai.bundle import run

    run(
        "training",
        config_file=config_files(root, "train"),
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=False,
        **tiny_overrides(root, phantom_dir, val_interval=1, **overrides),
    )


def _set_best(checkpoint: Path, best_metric: float, best_metric_epoch: int) -> None:
    state = torch.load(checkpoint, weights_only=False)
    state["validation"] = {"best_metric": best_metric, "best_metric_epoch": best_metric_epoch}
    torch.save(state, checkpoint)


def test_resumed_run_keeps_its_best_model(tmp_path, phantom_dir):
    """The best validation before an interruption is restored with the checkpoint: the best model is replaced only
    by a strictly better one after the resume."""
    root = copy_bundle(tmp_path / "bundle")
    models = root / "models"
    _train(root, phantom_dir, epochs=2)
    saved = torch.load(models / "checkpoint.pt", weights_only=False)["validation"]
    assert saved["best_metric_epoch"] in (1, 2) and 0.0 <= saved["best_metric"] <= 1.0

    # as if the run had reached a Dice no later validation beats at epoch 1, then been killed after epoch 2
    _set_best(models / "checkpoint.pt", 0.999, 1)
    best_weights = hashlib.sha256((models / "model.pt").read_bytes()).hexdigest()
    _train(root, phantom_dir, epochs=3)
    assert hashlib.sha256((models / "model.pt").read_bytes()).hexdigest() == best_weights
    assert torch.load(models / "checkpoint.pt", weights_only=False)["validation"] == {
        "best_metric": 0.999,
        "best_metric_epoch": 1,
    }

    # a validation better than the restored best replaces the model and becomes the best
    _set_best(models / "checkpoint.pt", -0.5, 1)
    _train(root, phantom_dir, epochs=4)
    assert hashlib.sha256((models / "model.pt").read_bytes()).hexdigest() != best_weights
    assert torch.load(models / "checkpoint.pt", weights_only=False)["validation"]["best_metric_epoch"] == 4


def test_monai_bundle_cli_refuses_a_lowercase_false_before_it_writes(tmp_path, phantom_dir):
    root = copy_bundle(tmp_path / "bundle")
    args = ["-m", "monai.bundle", "run", "training", "--config_file", config_arg(root, "train")]
    result = run_cli(args + cli_args(tiny_overrides(root, phantom_dir, epochs=1)) + ["--amp", "false"])
    assert result.returncode != 0
    assert "--amp 'false' arrived as text, which reads as true" in result.stderr
    assert "--amp True, False or None" in result.stderr
    assert not (root / "models" / "model.pt").exists() and not (root / "logs").exists()
