"""Helpers for reporting errors as users need them: the cause, not the wrappers around it."""

import difflib
from collections.abc import Iterable

__all__ = ["UnknownOptionError", "root_cause", "unknown_options"]


def root_cause(error: BaseException) -> BaseException:
    """The error under the generic wrappers: MONAI raises ``RuntimeError("applying transform ...")`` and
    ``RuntimeError("Failed to evaluate ...")`` from the real error, which already names the file and the problem."""
    while isinstance(error, RuntimeError) and error.__cause__ is not None:
        error = error.__cause__
    return error


class UnknownOptionError(ValueError):
    """An option (a command argument or a bundle config id) that nothing reads; the message lists the closest ones."""


def unknown_options(given: Iterable[str], valid: Iterable[str], what: str = "an option") -> UnknownOptionError | None:
    """The error for the names of ``given`` that are not in ``valid``, each with up to three close valid names.

    Args:
        given: option names as typed, without the leading ``--``.
        valid: the names that are read.
        what: what a valid name is, with its article, for the message.

    Returns:
        an :class:`UnknownOptionError` to raise, or ``None`` where every name is valid.

    Example:
        >>> str(unknown_options(["epoch"], ["epochs", "seed"], "a config id"))
        'unknown option --epoch (did you mean --epochs?): not a config id'
    """
    valid = sorted(set(valid))
    unknown = [name for name in given if name not in valid]
    if not unknown:
        return None
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
        parts.append(f"--{name}" + (f" (did you mean {', '.join('--' + c for c in close)}?)" if close else ""))
    plural = "s" if len(parts) > 1 else ""
    return UnknownOptionError(f"unknown option{plural} {', '.join(parts)}: not {what}")
