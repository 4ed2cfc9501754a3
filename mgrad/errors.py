"""Helpers for reporting errors as users need them: the cause, not the wrappers around it."""

__all__ = ["root_cause"]


def root_cause(error: BaseException) -> BaseException:
    """The error under the generic wrappers: MONAI raises ``RuntimeError("applying transform ...")`` and
    ``RuntimeError("Failed to evaluate ...")`` from the real error, which already names the file and the problem."""
    while isinstance(error, RuntimeError) and error.__cause__ is not None:
        error = error.__cause__
    return error
