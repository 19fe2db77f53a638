"""Reading and writing cells and result files."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import FileFormatError, InvalidCellError

CELL_SUFFIXES = (".npy", ".png", ".txt")


def publish(tmp, path) -> None:
    """Rename a finished temporary file onto ``path`` with ordinary permissions (mkstemp makes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


@contextmanager
def atomic_path(path, suffix: str | None = None):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    A crash or error inside the block leaves any existing file at ``path`` untouched and no
    half-written file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path, data) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def _suffix_error(path: Path, suffix: str) -> FileFormatError:
    return FileFormatError(f"cell file {str(path)!r}: expected one of {', '.join(CELL_SUFFIXES)}, got {suffix or 'no suffix'!r}")


def load_cell(path) -> np.ndarray:
    """Read one cell from ``.npy``, ``.png`` or ``.txt``.

    - ``.npy``: the array as stored, row 0 at the bottom (metasys convention).
    - ``.txt``: whitespace-separated numbers, read with ``numpy.loadtxt``; line 1 is row 0 (bottom).
    - ``.png``: an image as displayed, so the top image row is the top of the cell (the array is
      flipped to put row 0 at the bottom); dark pixels are solid, density = 1 - gray level.

    Returns a float array (ny, nx) of densities in [0, 1].
    """
    path = Path(path)
    if not path.exists():
        raise FileFormatError(f"cell file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix == ".txt":
            arr = np.loadtxt(path, ndmin=2)
        elif suffix == ".png":
            from PIL import Image

            with Image.open(path) as img:
                arr = 1.0 - np.asarray(img.convert("L"), dtype=float)[::-1] / 255.0
        else:
            raise _suffix_error(path, suffix)
    except FileFormatError:
        raise
    except Exception as exc:
        raise FileFormatError(f"cell file {str(path)!r} could not be read as {suffix}: {exc}") from exc
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise InvalidCellError(f"cell file {str(path)!r}: expected a 2-D array, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(float)
    if not np.issubdtype(arr.dtype, np.number):
        raise InvalidCellError(f"cell file {str(path)!r}: expected numbers, got dtype {arr.dtype}")
    return arr.astype(float)


def save_cell(path, cell) -> None:
    """Write a cell (ny, nx) as ``.npy``, ``.png`` or ``.txt`` (the inverse of `load_cell`)."""
    path = Path(path)
    cell = np.asarray(cell, dtype=float)
    suffix = path.suffix.lower()
    if suffix not in CELL_SUFFIXES:
        raise _suffix_error(path, suffix)
    with atomic_path(path) as tmp:
        if suffix == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, cell)
        elif suffix == ".txt":
            np.savetxt(tmp, cell, fmt="%.17g")
        else:
            from PIL import Image

            Image.fromarray(np.round(255 * (1.0 - cell[::-1])).astype(np.uint8), mode="L").save(tmp, format="PNG")
