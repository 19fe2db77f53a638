"""Matplotlib helpers shared by every subpackage's plots: a headless backend and atomic figure writes."""

from __future__ import annotations

from pathlib import Path

from .io import atomic_path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (plots are files; no screen is needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, *, title: str = "", dpi: int | None = None) -> Path:
    """Title and lay out ``fig``, write it atomically (temporary file, then rename) and close it."""
    if title:
        fig.suptitle(title)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or None)
    pyplot().close(fig)
    return path
