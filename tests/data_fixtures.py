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


def link_acdc_subset(root: Path, training_volumes: int, num_slices: int, splits: dict[str, list[int]]) -> Path:
    """The shared ACDC folder's SSL4MIS layout under ``root`` with the first ``num_slices`` training slices of its first
    ``training_volumes`` training volumes, and for each split list (e.g. ``{"val": [0], "test": [1]}``) the volumes of
    ``val.list`` at those positions (links, nothing copied); skips the test where the data are absent."""
    source = shared_data_dir() / "ACDC_SSL4MIS_h5"
    if not (source / "volumes").is_dir():
        pytest.skip(f"real ACDC h5 data not available at {source}")
    (root / "slices").mkdir(parents=True)
    (root / "volumes").mkdir()
    train = (source / "train.list").read_text().split()[:training_volumes]
    slices = sorted(p for p in (source / "slices").iterdir() if p.name.rsplit("_slice_", 1)[0] in train)
    for path in slices[:num_slices]:
        os.symlink(path, root / "slices" / path.name)
    (root / "train.list").write_text("\n".join(train) + "\n")
    volumes = (source / "val.list").read_text().split()
    for split, positions in splits.items():
        names = [volumes[i] for i in positions]
        for name in names:
            os.symlink(source / "volumes" / f"{name}.h5", root / "volumes" / f"{name}.h5")
        (root / f"{split}.list").write_text("\n".join(names) + "\n")
    return root
