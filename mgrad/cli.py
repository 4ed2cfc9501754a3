"""Command line: ``python -m mgrad COMMAND [--option value ...]`` (see ``python -m mgrad --help``).

Each command lives beside the code it drives and is imported only when it runs, so ``--help`` stays fast.
"""

import importlib
from typing import Any, Callable, Dict

import fire

# command name -> "module:function"
COMMANDS: Dict[str, str] = {
    "demo": "mgrad.demo:demo",
}


def _lazy(target: str) -> Callable[..., Any]:
    module_name, func_name = target.split(":")

    def command(*args: Any, **kwargs: Any) -> None:
        # the functions print their own report; their return value serves Python callers, not the terminal
        getattr(importlib.import_module(module_name), func_name)(*args, **kwargs)

    command.__doc__ = f"See {module_name}.{func_name} (run the command with --help for its options)."
    return command


def main() -> None:
    fire.Fire({name: _lazy(target) for name, target in COMMANDS.items()})
