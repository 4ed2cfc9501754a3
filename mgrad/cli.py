"""Command line: ``python -m mgrad COMMAND [--option value ...]``; ``python -m mgrad COMMAND --help`` for options.

Each command lives beside the code it drives; only the module of the command being run is imported.
"""

import functools
import importlib
import os
import sys
from typing import Any, Callable, Dict, List, Optional

import fire

from mgrad.errors import root_cause

# command name -> "module:function"
COMMANDS: Dict[str, str] = {
    "demo": "mgrad.demo:demo",
    "check-data": "mgrad.data.check:check_data",
    "train": "mgrad.bundle:train",
    "infer": "mgrad.bundle:infer",
    "evaluate": "mgrad.evaluation:evaluate",
    "export": "mgrad.model_export:export_model",
    "export-bundle": "mgrad.export:export_bundle",
}


def _load(target: str) -> Callable[..., Any]:
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> None:
        # the functions print their own report; their return value serves Python callers, not the terminal
        func(*args, **kwargs)

    return command


def main(argv: Optional[List[str]] = None) -> None:
    """Run one command; an error ends it with its root cause in one line (``MGRAD_DEBUG=1``: the traceback)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        try:
            fire.Fire({argv[0]: _load(COMMANDS[argv[0]])}, command=argv, name="mgrad")
        except Exception as e:
            if os.environ.get("MGRAD_DEBUG"):
                raise
            cause = root_cause(e)
            raise SystemExit(f"mgrad {argv[0]}: {type(cause).__name__}: {cause}") from None
    else:
        listing = "\n".join(f"  {name}" for name in COMMANDS)
        print(f"usage: python -m mgrad COMMAND [--option value ...]\n\ncommands:\n{listing}\n")
        print("python -m mgrad COMMAND --help shows a command's options.")
        if argv and argv[0] not in ("-h", "--help"):
            raise SystemExit(f"unknown command '{argv[0]}'")
