"""Plots of a database's property space (paper Fig. 4)."""

from __future__ import annotations

from itertools import combinations

import numpy as np

from ..fem.element import PROPERTY_NAMES
from ..plotting import pyplot, save_figure
from .storage import SOURCES


def plot_property_space(properties: np.ndarray, path, source: np.ndarray | None = None, title: str = "") -> None:
    """Pairwise scatter of (C11, C12, C22, C33), coloured by provenance, written to ``path`` (PNG/PDF/SVG)."""
    plt = pyplot()
    properties = np.asarray(properties)
    source = np.zeros(len(properties), int) if source is None else np.asarray(source)
    fig, axes = plt.subplots(2, 3, figsize=(12, 7.5), constrained_layout=True)
    colors = {0: "tab:red", 1: "tab:blue", 2: "tab:green", 3: "tab:gray"}
    # Draw the most common source first so that rare ones (seeds) stay visible on top.
    order = sorted(np.unique(source), key=lambda s: -np.sum(source == s))
    for ax, (i, j) in zip(axes.ravel(), combinations(range(4), 2)):
        for s in order:
            sel = source == s
            ax.scatter(properties[sel, i], properties[sel, j], s=1.5 if s else 4, alpha=0.4 if s else 0.9, lw=0,
                       color=colors.get(int(s), "k"), label=f"{SOURCES[int(s)]} ({int(sel.sum())})", rasterized=True)
        ax.set_xlabel(PROPERTY_NAMES[i])
        ax.set_ylabel(PROPERTY_NAMES[j])
    axes[0, 0].legend(markerscale=4, loc="best", fontsize=8)
    save_figure(fig, path, title=title or f"property space of {len(properties)} cells", dpi=120)
