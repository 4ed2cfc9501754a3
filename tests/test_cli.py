"""The command line: help anywhere on the line runs nothing; an option nothing reads is an error naming the closest."""

import subprocess
import sys
from pathlib import Path

import pytest
from bundle_fixtures import copy_bundle

from mgrad.bundle import merged_config, run_config, split_overrides
from mgrad.cli import COMMANDS, _call, main
from mgrad.errors import UnknownOptionError


def exit_message(argv: list) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code not in (0, None)
    return str(exc.value.code)


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return copy_bundle(tmp_path / "bundle")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_anywhere_prints_help_and_runs_nothing(command, bundle, capsys):
    main([command, "--epochs", "1", "--bundle_root", str(bundle), "--help"])
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m mgrad {command}") and "Returns:" in out, out
    assert not (bundle / "models").exists() and not (bundle / "data").exists()


def test_train_rejects_a_mistyped_config_id(bundle):
    message = exit_message(["train", "--bundle_root", str(bundle), "--epoch", "1", "--device", "cpu"])
    assert "--epoch (did you mean --epochs" in message
    assert not (bundle / "models").exists() and not (bundle / "data").exists()  # nothing ran


def test_infer_rejects_options_that_no_config_reads(bundle, tmp_path):
    args = ["infer", "--input", str(tmp_path), "--output_dir", str(tmp_path / "out"), "--bundle_root", str(bundle)]
    message = exit_message([*args, "--no_such_option", "true", "--fast_inferenc", "false"])
    assert "--no_such_option" in message and "--fast_inferenc (did you mean --fast_inference" in message
    assert not (tmp_path / "out").exists()


def test_evaluate_rejects_unknown_options_on_both_ways_in(bundle, tmp_path):
    folders = ["evaluate", "--pred_dir", str(tmp_path), "--label_dir", str(tmp_path), "--num_classes", "3"]
    assert "--protocl (did you mean --protocol" in exit_message([*folders, "--protocl", "transunet"])
    split = ["evaluate", "--dataset", "synthetic", "--dataset_dir", str(tmp_path), "--bundle_root", str(bundle)]
    assert "--splt (did you mean --split" in exit_message([*split, "--splt", "test"])


@pytest.mark.parametrize(
    "argv,wrong,right",
    [
        (["check-data", "x", "--datset", "acdc"], "--datset", "--dataset"),
        (["demo", "--slice", "2"], "--slice", "--slices"),
        (["export-bundle", "--outptu", "x.zip"], "--outptu", "--output"),
    ],
)
def test_commands_without_config_ids_reject_unknown_arguments(argv, wrong, right):
    assert f"{wrong} (did you mean {right}" in exit_message(argv)


def test_bundle_front_rejects_unknown_overrides(bundle):
    with pytest.raises(UnknownOptionError, match=r"--val_intervl \(did you mean --val_interval"):
        run_config(["train"], bundle, val_intervl=2)
    assert not (bundle / "models").exists()


def test_reproduce_rejects_a_mistyped_config_id_before_writing(bundle, tmp_path):
    data, out = tmp_path / "acdc", tmp_path / "out"
    (data / "volumes").mkdir(parents=True)
    args = ["reproduce", "acdc", "--dataset_dir", str(data), "--output_dir", str(out), "--bundle_root", str(bundle)]
    assert "--optimizer_nam (did you mean --optimizer_name" in exit_message([*args, "--optimizer_nam", "sgd"])
    assert not out.exists()


def test_reproduce_options_go_to_the_runs_that_read_them(bundle):
    runs = [merged_config(["train"], bundle), merged_config(["inference", "evaluate"], bundle)]
    options = {"optimizer_name": "sgd", "fast": False, "preset": "paper", "seed": 1}
    assert split_overrides(options, runs) == [
        {"optimizer_name": "sgd", "preset": "paper", "seed": 1},
        {"fast": False, "preset": "paper", "seed": 1},  # the seed of the patient split of --folds too
    ]


def test_the_installed_mgrad_command_runs_the_cli():
    command = Path(sys.executable).with_name("mgrad")  # the console script beside the environment's python
    assert command.is_file(), "the package is installed without its mgrad command"
    result = subprocess.run([str(command), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert all(name in result.stdout for name in COMMANDS)


def test_json_literals_reach_the_commands_as_python_values():
    def command(input, **overrides):
        return input, overrides

    argv = ["infer", "false", "--fast_inference", "false", "--tta=null", "--amp", "true", "--preset", "paper"]
    got = _call("infer", command, [*argv, "--epochs", "3", "--channels_last=False"])
    overrides = {"fast_inference": False, "tta": None, "amp": True, "preset": "paper", "epochs": 3}
    assert got == ("false", {**overrides, "channels_last": False})  # a positional argument stays as it is
