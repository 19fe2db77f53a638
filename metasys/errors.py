"""Exception types raised by metasys.

Every error a user can cause is a subclass of `MetasysError` and also of the built-in
type a Python user would expect (``ValueError`` or ``TypeError``), so ``except ValueError`` keeps
working. Messages name the argument, what was expected and what was given.
"""

from __future__ import annotations


class MetasysError(Exception):
    """Base class of every error raised deliberately by metasys."""


class InvalidValueError(MetasysError, ValueError):
    """An argument has the right type but a value metasys cannot use."""


class InvalidTypeError(MetasysError, TypeError):
    """An argument has a type metasys cannot use."""


class InvalidCellError(InvalidValueError):
    """A microstructure array has the wrong shape, dtype or values."""


class FileFormatError(InvalidValueError):
    """A file is missing, unreadable or not in the format metasys expects."""


class SolverError(MetasysError, RuntimeError):
    """A numerical solve failed (singular system, no convergence)."""


def describe(value) -> str:
    """Short description of a value for error messages: type, and shape/dtype for arrays."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"{type(value).__name__} of shape {tuple(shape)} and dtype {getattr(value, 'dtype', '?')}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
