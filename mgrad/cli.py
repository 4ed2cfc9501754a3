"""Command line: ``python -m mgrad COMMAND [--option value ...]``; ``python -m mgrad COMMAND --help`` for options.

The commands are library functions that return results and raise errors; this module alone prints their reports
and turns errors into exit codes. Only the module of the command being run is imported.
"""

import functools
import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

import fire

from mgrad.errors import root_cause, unknown_options

# command name -> "module:function"
COMMANDS: dict[str, str] = {
    "demo": "mgrad.demo:demo",
    "check-data": "mgrad.data.check:check_data",
    "train": "mgrad.bundle:train",
    "infer": "mgrad.bundle:infer",
    "evaluate": "mgrad.evaluation:evaluate",
    "export": "mgrad.model_export:export_model",
    "export-bundle": "mgrad.export:export_bundle",
    "reproduce": "mgrad.reproduce:reproduce",
}
HELP_FLAGS = ("-h", "--help")
JSON_LITERALS = {"true": "True", "false": "False", "null": "None"}
"""Option values written as JSON (and as the docs write them) -> Python's, which fire reads as values: fire passes
``false`` on as the string ``"false"``, which a config reads as true."""


def _function(target: str) -> Callable[..., Any]:
    module_name, func_name = target.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def _usage() -> str:
    listing = "\n".join(f"  {name}" for name in COMMANDS)
    return (
        f"usage: python -m mgrad COMMAND [--option value ...]\n\ncommands:\n{listing}\n\n"
        "python -m mgrad COMMAND --help shows a command's options."
    )


def _help(name: str, func: Callable[..., Any]) -> str:
    """The command's signature and docstring."""
    params = []
    for p in inspect.signature(func).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            params.append("[--CONFIG_ID value ...]")
        elif p.default is inspect.Parameter.empty:
            params.append(f"--{p.name} VALUE" if p.kind is p.KEYWORD_ONLY else p.name.upper())
        else:
            params.append(f"[--{p.name} {p.default!r}]")
    return f"usage: python -m mgrad {name} {' '.join(params)}\n\n{inspect.cleandoc(func.__doc__ or '')}"


def _report(name: str, result: Any) -> int:
    """Print a command's result for a person (the bundle's own ``run`` already reports a training); return the exit
    status."""
    if name == "evaluate":
        _report_evaluation(result)
        return 1 if result.get("errors") else 0
    if name == "check-data":
        for line in result["problems"]:
            print(line)
        print(
            f"check-data {result['path']}: {result['cases']} cases in {result['splits']}, {result['broken']} broken, "
            f"{len(result['problems'])} problem lines"
        )
        return 1 if result["problems"] else 0
    if name == "infer":
        print(f"wrote {len(result)} prediction(s)")
    elif name in ("export", "export-bundle"):
        print(f"wrote {result}")
    elif name == "reproduce":
        print(result["markdown"])
    elif name == "demo":
        from mgrad.demo import format_demo

        print(format_demo(result))
    return 0


def _report_evaluation(result: dict[str, Any]) -> None:
    """The evaluation table (the cross-validation table over folds), then the same with the chosen
    post-processing."""
    from mgrad.metrics import format_table

    if "cross_validation" in result:
        from mgrad.crossval import format_cross_validation

        print(format_cross_validation(result["cross_validation"]))
    else:
        print(format_table(result))
    if "postprocessed" in result:
        from mgrad.postprocess import rule_name

        chosen = result["postprocessing"]
        names = result["postprocessed"]["class_names"]
        rules = ", ".join(
            f"{names[c - 1] if c <= len(names) else c}: {rule_name(rule)}" for c, rule in chosen["rules"].items()
        )
        print(f"\nwith the post-processing chosen per class on the validation split ({rules}; {chosen['path']}):")
        print(format_table(result["postprocessed"]))


def _check_options(func: Callable[..., Any], args: list[str]) -> None:
    """Reject ``--name`` options that name no argument of a command without ``**overrides`` (the bundle commands
    check the others against the config ids), with the closest argument names."""
    params = inspect.signature(func).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    given = [a[2:].split("=", 1)[0].replace("-", "_") for a in args if a.startswith("--")]
    error = unknown_options(given, params, "an argument of this command")
    if error:
        raise error


def _python_literals(argv: list[str]) -> list[str]:
    """``argv`` with the options' values ``true``, ``false`` and ``null`` (``--fast_inference false``,
    ``--tta=null``) as Python's ``True``, ``False`` and ``None``; other arguments unchanged."""
    out = []
    for i, arg in enumerate(argv):
        if arg.startswith("--") and "=" in arg:
            option, value = arg.split("=", 1)
            arg = f"{option}={JSON_LITERALS.get(value, value)}"
        elif i > 0 and argv[i - 1].startswith("--") and "=" not in argv[i - 1]:
            arg = JSON_LITERALS.get(arg, arg)
        out.append(arg)
    return out


def _call(name: str, func: Callable[..., Any], argv: list[str]) -> Any:
    """``func`` with the command line parsed by fire (``true``/``false``/``null`` as Python's); its result (fire
    itself would print it)."""
    result = {}

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> None:
        result["value"] = func(*args, **kwargs)

    fire.Fire({name: command}, command=_python_literals(argv), name="mgrad")
    return result.get("value")


def main(argv: list[str] | None = None) -> None:
    """Run one command; an error ends it with its root cause in one line (``MGRAD_DEBUG=1``: the traceback)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(_usage())
        if argv and argv[0] not in HELP_FLAGS:
            raise SystemExit(f"unknown command '{argv[0]}'")
        return
    name = argv[0]
    func = _function(COMMANDS[name])
    if any(arg in HELP_FLAGS for arg in argv[1:]):
        print(_help(name, func))
        return
    try:
        _check_options(func, argv[1:])
        result = _call(name, func, argv)
    except Exception as e:
        if os.environ.get("MGRAD_DEBUG"):
            raise
        cause = root_cause(e)
        raise SystemExit(f"mgrad {name}: {type(cause).__name__}: {cause}") from None
    status = _report(name, result)
    if status:
        raise SystemExit(status)
