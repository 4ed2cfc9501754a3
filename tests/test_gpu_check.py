"""The GPU check's time keeping (scripts/gpu_check.py), which must finish within its budget on any machine: a part
stopped at its limit takes the processes it started with it, and a part without time left is skipped."""

import importlib.util
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(gpu_check)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, killed and not yet reaped, does not)."""
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" not in status.read_text()
    except FileNotFoundError:
        return False


def test_a_part_over_its_limit_is_killed_with_its_children(tmp_path):
    pid_file = tmp_path / "child.pid"
    sleeper = f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)"  # noqa: E501
    start = time.monotonic()
    result = gpu_check.run(tmp_path, "sleeper", [sys.executable, "-c", sleeper], 3, gpu_check.Budget(600))
    assert result["rc"] == "timeout" and time.monotonic() - start < 30
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(child), "the part's own child outlived it"
    assert (tmp_path / "sleeper.log").read_text().startswith("$ ")


def test_a_part_runs_in_the_environment_it_is_given(tmp_path):
    show = [sys.executable, "-c", "import os; print(os.environ['TORCH_LOGS'], 'PATH' in os.environ)"]
    result = gpu_check.run(tmp_path, "env", show, 60, gpu_check.Budget(600), gpu_check.COMPILE_LOGS)
    assert result["rc"] == 0
    assert (tmp_path / "env.log").read_text().splitlines()[1:] == ["dynamo True"]  # added to the environment


def test_a_part_runs_for_what_the_budget_has_left_or_not_at_all(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check.Budget, "MIN_PART_SECONDS", 2)
    finished = gpu_check.run(tmp_path, "quick", [sys.executable, "-c", "print('done')"], 60, gpu_check.Budget(600))
    assert finished["rc"] == 0 and "done" in (tmp_path / "quick.log").read_text()
    stopped = gpu_check.run(
        tmp_path, "long", [sys.executable, "-c", "import time; time.sleep(60)"], 600, gpu_check.Budget(4)
    )
    assert stopped["rc"] == "timeout" and stopped["seconds"] < 20
    skipped = gpu_check.run(tmp_path, "late", [sys.executable, "-c", "print(1)"], 60, gpu_check.Budget(1))
    assert skipped["rc"] == "skipped" and "budget" in skipped["reason"]
    assert not (tmp_path / "late.log").exists()


def test_the_check_reports_every_part_it_skips(tmp_path):
    out, archive = tmp_path / "check", tmp_path / "check.tar.gz"
    command = [sys.executable, "scripts/gpu_check.py", "--out", str(out), "--parts", "train_step", "loss"]
    subprocess.run(command + ["--budget", "0", "--archive", str(archive)], cwd=ROOT, check=True, capture_output=True)
    report = json.loads((out / "gpu_check.json").read_text())
    with tarfile.open(archive) as tar:  # the same report, packed for a machine that sends back few files
        assert json.load(tar.extractfile("check/gpu_check.json")) == report
    assert report["budget_seconds"] == 0
    assert {name: part["rc"] for name, part in report["parts"].items()} == {"train_step": "skipped", "loss": "skipped"}
    assert "CPU" in report["machine"]


@pytest.mark.parametrize("wheels", [None, "wheels"])
def test_the_shell_entry_takes_options_with_or_without_a_wheel_folder(tmp_path, wheels):
    """``gpu_check.sh OUT [WHEEL_DIR] [options]``: the options reach gpu_check.py whether a wheel folder is given or
    not (a stand-in ``python3`` records each call)."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    shim = bin_dir / "python3"
    shim.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    shim.chmod(0o755)
    command = ["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(tmp_path / "out")]
    command += ([] if wheels is None else [wheels]) + ["--parts", "compile", "--budget", "60"]
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    pip, check = calls.read_text().splitlines()
    installed = pip.split()[pip.split().index("/tmp/site") + 1 :]  # the wheels (or the pattern, where none)
    assert pip.startswith("-m pip install") and installed
    assert all(path.startswith(f"{wheels or '.device/whl'}/") for path in installed)
    assert check == f"scripts/gpu_check.py --out {tmp_path / 'out'} --parts compile --budget 60"
