"""Errors raised for bad input data; each message starts with the file (or folder) it concerns."""


class DataError(ValueError):
    """A data file, folder or datalist that cannot be used, with the path and the problem in the message."""


class MissingSplitError(DataError):
    """The dataset layout has no such split (e.g. no ``test.list``); not a broken case."""
