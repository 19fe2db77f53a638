"""Plots of metamaterial families (paper Fig. 12-13) and candidate sets (Fig. 11).

Cells are drawn with the metasys convention (row 0 at the bottom, ``origin="lower"``), solid dark.
Figures are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import numpy as np

from ..plotting import pyplot, save_figure

NAMES = ("C11", "C12", "C22", "C33")


def _colors(n: int):
    cmap = pyplot().get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


def _cell(ax, cell, label: str = "", color=None) -> None:
    ax.imshow(np.asarray(cell, float), origin="lower", cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if label:
        ax.set_title(label, fontsize=7)
    if color is not None:
        for s in ax.spines.values():
            s.set_edgecolor(color)
            s.set_linewidth(2)


def plot_family_cells(families, path, title: str = "Metamaterial families (C11 increasing to the right)",
                      c11_solid: float | None = None) -> None:
    """One row of cells per family, ordered by C11 (paper Fig. 12b); each cell labelled with its C11."""
    plt = pyplot()
    n_rows = max(1, len(families))
    n_cols = max([len(f) for f in families] + [1])
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.15 * n_cols + 0.6, 1.3 * n_rows + 0.6), squeeze=False)
    colors = _colors(n_rows)
    for r, fam in enumerate(families):
        for c in range(n_cols):
            ax = axes[r, c]
            if c >= len(fam):
                ax.axis("off")
                continue
            c11 = fam.properties[c, 0] / (c11_solid or 1.0)
            _cell(ax, fam.cells[c], f"C11={c11:.3f}", colors[r])
        axes[r, 0].set_ylabel(f"family {r + 1}", fontsize=8)
    save_figure(fig, path, title=title, dpi=110)


def plot_family_graph(graph, families, path, coords=None, title: str = "Family graph in the latent space (PCA)") -> None:
    """The weighted directed graph on the first two latent principal components, paths coloured (paper Fig. 12a).

    Parameters
    ----------
    graph : FamilyGraph
    families : list of Family
        The families found on it (their members are located by database index).
    coords : array (n, 2), optional
        2-D positions of the graph's nodes (default: PCA of ``graph.z``).
    """
    from matplotlib.collections import LineCollection

    plt = pyplot()
    if coords is None:
        from sklearn.decomposition import PCA

        coords = PCA(n_components=2).fit_transform(np.asarray(graph.z, np.float64))
    coords = np.asarray(coords, float)
    fig, ax = plt.subplots(figsize=(7.5, 6))
    inner = [(a, b) for a, b in graph.graph.edges() if not isinstance(a, str) and not isinstance(b, str)]
    segs = [(coords[a], coords[b]) for a, b in inner]
    if segs:
        ax.add_collection(LineCollection(segs, colors="0.8", linewidths=0.3, zorder=1))
    sc = ax.scatter(coords[:, 0], coords[:, 1], c=graph.properties[:, 0], s=6, cmap="viridis", zorder=2)
    fig.colorbar(sc, ax=ax, label="C11")
    pos = {int(i): n for n, i in enumerate(graph.indices)}
    for r, (fam, color) in enumerate(zip(families, _colors(len(families)))):
        nodes = [pos[int(i)] for i in fam.indices if int(i) in pos]
        ax.plot(coords[nodes, 0], coords[nodes, 1], "-o", color=color, ms=5, lw=2, zorder=3, label=f"family {r + 1} ({len(fam)})")
    ax.set_xlabel("latent PC 1")
    ax.set_ylabel("latent PC 2")
    ax.autoscale()
    if families:
        ax.legend(fontsize=8, loc="best")
    save_figure(fig, path, title=title, dpi=110)


def plot_family_properties(families, gradation, path, interpolated=None, c11_solid: float | None = None,
                           title: str = "Family properties against the gradation") -> None:
    """C12, C22, C33 against C11 for each family with the gradation curve (paper Fig. 13).

    ``interpolated`` (list of Family, one per family, e.g. from `Family.interpolate`) adds the
    decoded members as open markers (Fig. 13b).
    """
    from .families import gradation_samples

    plt = pyplot()
    _, curve = gradation_samples(gradation, 401)
    scale = c11_solid or 1.0
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    colors = _colors(len(families))
    for ax, j in zip(axes, (1, 2, 3)):
        ax.plot(curve[:, 0] / scale, curve[:, j] / scale, "k-", lw=1.2, label="gradation")
        for r, (fam, color) in enumerate(zip(families, colors)):
            ax.plot(fam.properties[:, 0] / scale, fam.properties[:, j] / scale, "o-", color=color, ms=4, lw=0.8,
                    label=f"family {r + 1}")
            if interpolated is not None and r < len(interpolated):
                q = interpolated[r].properties
                ax.plot(q[:, 0] / scale, q[:, j] / scale, "x", color=color, ms=5)
        unit = " / C11_solid" if c11_solid else ""
        ax.set_xlabel("C11" + unit)
        ax.set_ylabel(NAMES[j] + unit)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if interpolated is not None:
        axes[-1].plot([], [], "kx", label="interpolated (decoded)")
        axes[-1].legend(fontsize=7)
    save_figure(fig, path, title=title, dpi=110)


def plot_candidates(sets, labels, path, coords=None, title: str = "Candidate sets") -> None:
    """Candidate cells of one target per row (paper Fig. 11), and their latent PCA positions.

    Parameters
    ----------
    sets : list of Candidates for a single target each (``indices`` (k,))
    labels : list of str
    coords : callable z (n, d) -> (n, 2), optional
        Projection for the scatter panel (e.g. ``model.pca(2).transform``); default PCA of all codes shown.
    """
    plt = pyplot()
    k = max(int(c.indices.shape[-1]) for c in sets)
    fig, axes = plt.subplots(len(sets), k + 1, figsize=(1.2 * k + 3.5, 1.45 * len(sets) + 0.6), squeeze=False,
                             gridspec_kw={"width_ratios": [1] * k + [2.5]})
    zs = [np.asarray(c.z, float).reshape(-1, c.z.shape[-1]) for c in sets]
    if coords is None:
        from sklearn.decomposition import PCA

        p = PCA(n_components=2).fit(np.concatenate(zs))
        coords = p.transform
    for r, (c, label) in enumerate(zip(sets, labels)):
        for j in range(k):
            if j < c.indices.shape[-1]:
                _cell(axes[r, j], c.cells[j], f"{c.errors[j]:.3f}")
            else:
                axes[r, j].axis("off")
        axes[r, 0].set_ylabel(label, fontsize=8)
        ax = axes[r, -1]
        for zz, other, color in zip(zs, labels, _colors(len(sets))):
            xy = coords(zz)
            ax.scatter(xy[:, 0], xy[:, 1], s=10 if other == label else 4, color=color, alpha=1.0 if other == label else 0.25)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("latent PCA", fontsize=7)
    save_figure(fig, path, title=title, dpi=110)
