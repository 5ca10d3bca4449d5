"""Errors that the command line reports as one line, without a traceback."""

from __future__ import annotations

from pathlib import Path


class PtyjaxError(Exception):
    """An error caused by the user's input or configuration (not a bug in ptyjax)."""


class DataError(PtyjaxError):
    """A data file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
