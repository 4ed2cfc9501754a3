"""The tests' command server runs ``python -m <module>`` and ``python <script>`` as a fresh interpreter does."""

import os
import subprocess
import sys

import pytest
from bundle_fixtures import COMMANDS as server  # the server the other tests' commands run on

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the tests' commands run forked on Linux only")

PROBE = """
import atexit, os, sys, threading, time, warnings
print(os.getcwd(), sys.argv[1:], os.environ.get("PROBE"), repr(sys.stdin.read()), sys.path[0])
print(__name__, os.path.basename(sys.argv[0]))
atexit.register(lambda: print("atexit ran"))
threading.Thread(target=lambda: (time.sleep(0.2), print("thread finished"))).start()
warnings.warn("a warning PYTHONWARNINGS=ignore hides")
print("to stderr", file=sys.stderr)
if sys.argv[1] == "raise":
    raise ValueError("boom")
if sys.argv[1] == "sleep":
    time.sleep(60)
sys.exit(int(sys.argv[1]))
"""


@pytest.mark.parametrize("as_script", [False, True], ids=["module", "script"])
@pytest.mark.parametrize("argument", ["0", "3", "raise"])
def test_a_forked_command_behaves_as_a_fresh_interpreter(tmp_path, argument, as_script):
    (tmp_path / "probe.py").write_text(PROBE)
    env = {**os.environ, "PROBE": f"seen-{argument}", "PYTHONWARNINGS": "ignore"}  # not the server's own
    cwd = tmp_path / "elsewhere" if as_script else tmp_path
    cwd.mkdir(exist_ok=True)
    args = [str(tmp_path / "probe.py"), argument, "--flag"] if as_script else ["-m", "probe", argument, "--flag"]
    command = [sys.executable, *args]
    fresh = subprocess.run(
        command, capture_output=True, text=True, cwd=cwd, env=env, stdin=subprocess.DEVNULL, timeout=60
    )
    forked = server.run(args, timeout=60, cwd=cwd, env=env)
    assert forked.returncode == fresh.returncode == {"0": 0, "3": 3, "raise": 1}[argument]
    assert forked.stdout == fresh.stdout
    assert fresh.stdout.splitlines() == [
        f"{cwd} ['{argument}', '--flag'] seen-{argument} '' {tmp_path}",  # sys.path[0]: the module's or script's folder
        "__main__ probe.py",
        "thread finished",
        "atexit ran",
    ]
    assert forked.stderr.splitlines()[-1] == fresh.stderr.splitlines()[-1]
    assert forked.stderr.splitlines()[0] == fresh.stderr.splitlines()[0] == "to stderr"  # no warning shown


def test_a_command_over_its_time_is_killed_and_the_server_goes_on(tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    with pytest.raises(subprocess.TimeoutExpired):
        server.run(["-m", "probe", "sleep"], timeout=3, cwd=tmp_path, env=dict(os.environ))
    assert server.run(["-m", "probe", "5"], timeout=60, cwd=tmp_path, env=dict(os.environ)).returncode == 5
    with pytest.raises(ValueError, match="only `python -m <module> ...` and `python <script> ...`"):
        server.run(["-c", "print(1)"], timeout=60, cwd=tmp_path, env=dict(os.environ))


def test_a_forked_command_computes_with_torch_threads_as_a_fresh_one(tmp_path):
    """The server only imports, so its children get torch's intra-op threads as a fresh process does."""
    (tmp_path / "threads.py").write_text(
        "import torch\nx = torch.randn(512, 512)\nprint(torch.get_num_threads(), float((x @ x).trace()) != 0)\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "threads"]
    fresh = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    forked = server.run(["-m", "threads"], timeout=60, cwd=tmp_path, env=env)
    assert forked.returncode == fresh.returncode == 0, forked.stderr
    assert forked.stdout == fresh.stdout and fresh.stdout.endswith(" True\n")
