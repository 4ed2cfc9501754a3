"""The benchmarks stay runnable as the package changes: each imports, and the 3D metrics benchmark (the one that
reaches into the metrics' modules) runs end to end at a small size and finds medpy's values."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_imports(path):
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert path.stem == "common" or callable(module.main)


def test_metrics_benchmark_matches_medpy_and_names_the_machine():
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_metrics.py"), "--shape", "64", "64", "16"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert lines[0].startswith(("CPU ", "GPU ")) and "torch " in lines[0]
    rows = {line.split()[0]: line.split() for line in lines if line.startswith(("mgrad (CPU)", "medpy"))}
    assert set(rows) == {"mgrad", "medpy"}
    assert float(rows["mgrad"][-1]) <= 1e-6  # the largest difference from medpy's values
