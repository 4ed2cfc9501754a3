"""The bundle's training configs, run as users run them: monai.bundle, mgrad train, torchrun, resume, time budget."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from bundle_fixtures import REPO, cli_args, config_arg, config_files, copy_bundle, run_cli, tiny_overrides
from monai.bundle import ConfigWorkflow


def epoch_of(checkpoint: Path) -> int:
    """The number of epochs the trainer state in ``checkpoint`` had completed."""
    trainer = torch.load(checkpoint, weights_only=False)["trainer"]
    return trainer["iteration"] // trainer["epoch_length"]


def validation_dice(root: Path, dataset_dir: Path, weights: Path = None) -> float:
    """Mean Dice of the bundle's validation evaluator, with untrained weights or ``weights``."""
    workflow = ConfigWorkflow(
        config_file=config_files(root, "train"),
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        **tiny_overrides(root, dataset_dir),
        **{"validate#handlers": []},  # no checkpoint saver: models/model.pt stays as trained
    )
    workflow.initialize()
    if weights is not None:
        workflow.parser.get_parsed_content("network").load_state_dict(torch.load(weights, weights_only=True))
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    evaluator.run()
    return evaluator.state.metrics["val_mean_dice"]


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


def test_training_raises_validation_dice(trained_bundle, phantom_dir):
    weights = trained_bundle / "models" / "model.pt"
    assert weights.is_file() and (trained_bundle / "models" / "checkpoint.pt").is_file()
    untrained = validation_dice(trained_bundle, phantom_dir)
    trained = validation_dice(trained_bundle, phantom_dir, weights)
    assert trained > untrained + 0.15, (untrained, trained)
    assert list((trained_bundle / "logs").glob("events.out.tfevents.*"))


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
    assert set(state) == {"model", "optimizer", "lr_scheduler", "trainer"}
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
