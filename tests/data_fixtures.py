"""Fixtures shared by the data tests (imported by them; kept out of conftest.py, which other suites own)."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from mgrad.data.synthetic import make_dataset


def shared_data_dir() -> Path:
    """``../shared/data`` beside the repository, or ``$MGRAD_SHARED_DATA``."""
    return Path(os.environ.get("MGRAD_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default synthetic phantom (8 cases of 96x96x24), generated once per test session."""
    out = tmp_path_factory.mktemp("synthetic")
    make_dataset(str(out))
    return out


@pytest.fixture
def acdc_h5_dir() -> Path:
    path = shared_data_dir() / "ACDC_SSL4MIS_h5"
    if not (path / "volumes").is_dir():
        pytest.skip(f"real ACDC h5 data not available at {path}")
    return path


@pytest.fixture
def totalseg_dir() -> Path:
    path = shared_data_dir() / "TotalSegmentator_example"
    if not (path / "example_seg_dicom.nii.gz").is_file():
        pytest.skip(f"TotalSegmentator example not available at {path}")
    return path


@pytest.fixture
def one_thread():
    """Run torch single-threaded, as DataLoader workers do (and robust to a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_h5(path: Path, image: np.ndarray, label: np.ndarray) -> Path:
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image)
        f.create_dataset("label", data=label)
    return path
