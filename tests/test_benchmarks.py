"""The benchmarks stay runnable as the package changes: each imports, and the 3D metrics benchmark (the one that
reaches into the metrics' modules) runs end to end at a small size and finds medpy's values; the training-step
benchmark, which the GPU check runs under a time limit, reports as it goes."""

import importlib.util
import json
from pathlib import Path

import pytest
from bundle_fixtures import run_cli

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_imports(path):
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert path.stem == "common" or callable(module.main)


def test_metrics_benchmark_matches_medpy_and_names_the_machine():
    run = run_cli([str(ROOT / "benchmarks" / "bench_metrics.py"), "--shape", "64", "64", "16"], timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert lines[0].startswith(("CPU ", "GPU ")) and "torch " in lines[0]
    rows = {line.split()[0]: line.split() for line in lines if line.startswith(("mgrad (CPU)", "medpy"))}
    assert set(rows) == {"mgrad", "medpy"}
    assert float(rows["mgrad"][-1]) <= 1e-6  # the largest difference from medpy's values


def test_train_step_benchmark_reports_each_iteration_and_each_configuration(tmp_path):
    """The GPU check stops a configuration that runs past its time limit (a cold compilation): the iterations are
    printed as they end and the JSON holds every configuration finished before."""
    result = tmp_path / "train_step.json"
    command = [str(ROOT / "benchmarks" / "bench_train_step.py"), "--size", "32", "--batch", "1"]
    command += ["--steps", "1", "--configs", "plain", "--json", str(result)]
    run = run_cli(command, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "    plain: iteration 1: " in run.stdout and "    plain: iteration 2: " in run.stdout
    report = json.loads(result.read_text())
    assert list(report["configs"]) == ["plain"] and len(report["configs"]["plain"]["all_seconds"]) == 2
    assert report["configs"]["plain"]["peak_mib"] > 0 and not (tmp_path / "train_step.json.partial").exists()
    assert list(tmp_path.iterdir()) == [result]  # no temporary file left beside it
