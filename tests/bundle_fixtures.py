"""Fixtures for the bundle tests: a copy of the bundle, a small phantom dataset and a tiny size preset."""

import atexit
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from command_server import CommandServer

from mgrad.data.synthetic import make_dataset

REPO = Path(__file__).resolve().parents[1]
COMMANDS = CommandServer()
atexit.register(COMMANDS.close)
# a size preset small enough for CI: trains in seconds on two cores
TINY = {
    "features": [8, 16, 32, 64, 128],
    "rfb_channels": 8,
    "spatial_size": 48,
    "batch_size": 8,
    "learning_rate": 0.01,
}


def tiny_overrides(bundle_root: Path, dataset_dir: Path, **extra) -> dict:
    return {
        "bundle_root": str(bundle_root),
        "dataset_dir": str(dataset_dir),
        "size": dict(TINY),
        "device": "$torch.device('cpu')",
        **extra,
    }


def config_files(bundle_root: Path, *names: str) -> list:
    """The bundle's ``configs/common.json`` and ``configs/<name>.json`` files, in the order a run merges them."""
    return [str(bundle_root / "configs" / f"{name}.json") for name in ("common", *names)]


def config_arg(bundle_root: Path, *names: str) -> str:
    """:func:`config_files` as one ``--config_file`` value of ``python -m monai.bundle``."""
    return "[" + ",".join(f"'{f}'" for f in config_files(bundle_root, *names)) + "]"


def cli_args(overrides: dict) -> list:
    """``--key value`` arguments for ``python -m monai.bundle run``."""
    args = []
    for key, value in overrides.items():
        args += [f"--{key}", json.dumps(value) if isinstance(value, (dict, list)) else str(value)]
    return args


def run_cli(args: list, timeout: int = 600, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``python *args`` (``-m <module> ...`` or ``<script> ...``), its output captured: forked from the server of
    :data:`COMMANDS` (see ``command_server.py``) on Linux, otherwise (or with ``MGRAD_TEST_FRESH_PROCESSES=1``) a
    fresh interpreter."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if sys.platform != "linux" or os.environ.get("MGRAD_TEST_FRESH_PROCESSES") == "1":
        command = [sys.executable, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
    return COMMANDS.run(args, timeout, cwd, env)


def copy_bundle(dest: Path) -> Path:
    """The repository's bundle (configs, docs, LICENSE) without trained models or data."""
    shutil.copytree(REPO / "bundle", dest, ignore=shutil.ignore_patterns("models", "data", "eval", "logs"))
    return dest


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six small phantom volumes (48x48x12, non-identity affines, anisotropic spacing): 5 training, 1 validation."""
    out = tmp_path_factory.mktemp("phantom")
    make_dataset(str(out), num_cases=6, shape=(48, 48, 12), spacing=(1.6, 1.6, 5.0))
    meta = json.loads((out / "dataset.json").read_text())
    meta["validation"] = meta["validation"] + meta["training"][:1]  # two validation volumes, for two DDP ranks
    (out / "dataset.json").write_text(json.dumps(meta))
    return out


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory: pytest.TempPathFactory, phantom_dir: Path) -> Path:
    """A bundle copy trained for a few epochs on the phantom with the tiny preset (``models/model.pt``)."""
    from monai.bundle import run

    root = copy_bundle(tmp_path_factory.mktemp("trained") / "bundle")
    run(
        "training",
        config_file=config_files(root, "train"),
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=str(root / "configs" / "logging.conf"),
        **tiny_overrides(root, phantom_dir, epochs=10, val_interval=2),
    )
    return root
