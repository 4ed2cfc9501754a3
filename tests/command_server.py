"""The tests' command lines (``python -m <module> ...`` and ``python <script> ...``), each run in a process of its own
forked from a server that has imported torch, MONAI and mgrad once.

A fresh interpreter spends 4 to 11 s (by CPU) importing MONAI, which loads all its submodules and the optional
packages installed beside it, before a command does anything, and 1 to 3 s in its shutdown; the suite runs dozens of
commands. Forked from a server that paid for those imports once, each command still runs as ``python`` runs it: in
its own process, with its own working directory, environment, arguments, standard streams, exit code and
interpreter shutdown (``atexit``, threads joined, streams flushed); an uncaught exception prints its traceback and
exits with 1. The server is started with the first command's environment (so the interpreter's start-up options,
such as ``PYTHONWARNINGS``, are the commands'), imports nothing but modules, and never runs torch code, so its
children start as a fresh process would; its objects are frozen out of garbage collection (``gc.freeze``), so the
children's collections do not copy their pages.

``MGRAD_TEST_FRESH_PROCESSES=1`` starts a fresh interpreter for each command instead.

Run as a script, this file is the server: it reads one JSON request per line on its standard input and answers with
two lines, the child's process id and then its exit code (negative: killed by that signal), as ``subprocess`` does.
"""

import gc
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

PRELOADED = ("torch", "monai", "monai.bundle", "mgrad.cli", "ignite.engine")


def serve() -> list | None:
    """Answer requests until standard input closes (``None``); in each child, the command line to run."""
    for module in PRELOADED:
        __import__(module)
    gc.freeze()  # the imports' objects: the children's collections, down to the last at exit, leave them alone
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            _become(request)
            return request["argv"]
        print(pid, flush=True)
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
    return None


def _become(request: dict) -> None:
    """In the child: take the request's working directory, environment, streams and arguments."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    streams = {0: (os.devnull, os.O_RDONLY), 1: (request["stdout"], os.O_WRONLY), 2: (request["stderr"], os.O_WRONLY)}
    for fd, (path, mode) in streams.items():
        target = os.open(path, mode)
        os.dup2(target, fd)
        os.close(target)
    sys.stdin = open(0, closefd=False)  # the process's own standard input: /dev/null
    argv = request["argv"]
    if argv[0] == "-m":  # as python sets them (runpy then puts the module's file first in ``sys.argv``)
        sys.argv, sys.path[0] = argv[1:], os.getcwd()
    else:
        sys.argv, sys.path[0] = argv, os.path.dirname(os.path.abspath(argv[0]))


class CommandServer:
    """Client of the server, started at the first command with that command's environment: :meth:`run` is
    ``subprocess.run([sys.executable, *args], capture_output=True, text=True, ...)``."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None

    def run(self, args: list, timeout: float, cwd: Path, env: dict) -> subprocess.CompletedProcess:
        if args[0].startswith("-") and args[0] != "-m":
            raise ValueError(f"only `python -m <module> ...` and `python <script> ...` run forked, not {args}")
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(
                [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
            )
        with tempfile.TemporaryDirectory() as folder:
            streams = {name: os.path.join(folder, name) for name in ("stdout", "stderr")}
            for path in streams.values():
                Path(path).touch()
            request = {"argv": [str(a) for a in args], "cwd": str(cwd), "env": env, **streams}
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            pid = int(self._line(timeout=None))
            try:
                code = int(self._line(timeout))
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                self._line(timeout=None)
                raise subprocess.TimeoutExpired([sys.executable, *args], timeout) from None
            stdout, stderr = (Path(path).read_text(errors="replace") for path in streams.values())
        return subprocess.CompletedProcess([sys.executable, *args], code, stdout, stderr)

    def _line(self, timeout: float | None) -> str:
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise subprocess.TimeoutExpired("command server", timeout)
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the command server ended (exit code {self.process.wait()})")
        return line

    def close(self) -> None:
        if self.process is not None:
            self.process.stdin.close()
            self.process.wait(timeout=60)
            self.process = None


if __name__ == "__main__":
    command = serve()
    if command is not None and command[0] == "-m":
        runpy.run_module(command[1], run_name="__main__", alter_sys=True)
    elif command is not None:
        runpy.run_path(command[0], run_name="__main__")
