"""Figures of the composite designer: sample grids as the paper's Fig. 1 and the K histogram of a dataset.

Images are drawn as the paper does: the normalized (E, nu, rho) of every pixel as (r, g, b) (``(x + 1) / 2``),
row 0 at the bottom (``origin="lower"``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .materials import normalize

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
"""Columns of `design_grid`: the designs at these quantiles of eps_r (best on the left, worst on the right)."""


def rgb(image) -> np.ndarray:
    """Physical image (3, ny, nx) of (E, nu, rho) -> (ny, nx, 3) colours in [0, 1]."""
    return np.clip((normalize(np.moveaxis(np.asarray(image, dtype=float), 0, -1)) + 1.0) / 2.0, 0.0, 1.0)


def _save(fig, path):
    from ..io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def design_grid(results, path, quantiles=QUANTILES):
    """One row per `DesignResult` (target), the designs at ``quantiles`` of eps_r; labels K_s / K_theta / eps_r."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = list(results)
    fig, axes = plt.subplots(len(results), len(quantiles), figsize=(1.9 * len(quantiles), 2.1 * len(results)),
                             squeeze=False)
    for row, res in zip(axes, results):
        eps = res.eps_r
        order = np.argsort(eps, kind="stable")
        for ax, q in zip(row, quantiles):
            j = order[int(round(q * (len(order) - 1)))]
            ax.imshow(rgb(res.images[j]), origin="lower", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            e = f"{eps[j]:.3f}" if np.isfinite(eps[j]) else "nan"
            ax.set_title(f"{res.k_sample[j]:.1f} / {res.k_theta[j]:.1f} / {e}", fontsize=7)
        row[0].set_ylabel(f"K* = {res.k_target:.1f}\n{res.method}", fontsize=8)
    for ax, q in zip(axes[0], quantiles):
        ax.set_xlabel(f"{int(100 * q)}%", fontsize=7)
        ax.xaxis.set_label_position("top")
    fig.suptitle("designs ordered by eps_r quantile; labels K_s / K_theta / eps_r", fontsize=9)
    return _save(fig, path)


def image_grid(images, path, columns: int = 8, titles=None, title: str = ""):
    """A plain grid of physical images (n, 3, ny, nx), optional per-image ``titles``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.asarray(images)
    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.7 * rows), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if k < len(images):
            ax.imshow(rgb(images[k]), origin="lower", interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[k], fontsize=6)
        else:
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def k_histogram(k_values, path, targets=None, bins: int = 60):
    """Histogram of the bulk moduli of a dataset with the targets marked (the paper's Fig. 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.hist(np.asarray(k_values, dtype=float), bins=bins, color="0.5")
    for t in [] if targets is None else targets:
        ax.axvline(t, color="C3", lw=1)
    ax.set_xlabel("K [GPa]")
    ax.set_ylabel("samples")
    return _save(fig, path)
