"""Plots of macro property optimization results: property maps (paper Fig. 16d, 17b) and the deformed mesh.

All images use the metasys convention: y up (``origin="lower"``), element (i, j) at column i, row j.
Figures are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import numpy as np

from ..plotting import pyplot, save_figure

NAMES = ("C11", "C12", "C22", "C33")


def plot_property_maps(properties, path, title: str = "", signed_distance=None) -> None:
    """Maps of C11, C12, C22, C33 over the macro grid (and the feasibility signed distance if given).

    Parameters
    ----------
    properties : array (H, W, 4)
    path : str or Path
        Image file (suffix picks the format, e.g. ``.png``).
    signed_distance : array (H, W), optional
        Adds a fifth map; infeasible elements (< 0) are outlined in red.
    """
    plt = pyplot()
    p = np.asarray(properties, dtype=float)
    h, w = p.shape[:2]
    n = 4 + (signed_distance is not None)
    aspect = h / w
    fig, axes = plt.subplots(n, 1, figsize=(6.5, max(1.6, 5.5 * aspect + 0.9) * n)) if aspect < 0.5 else \
        plt.subplots(1, n, figsize=(3.6 * n, 3.4))
    for k, ax in enumerate(np.atleast_1d(axes)):
        if k < 4:
            im = ax.imshow(p[..., k], origin="lower", cmap="viridis", extent=(0, w, 0, h))
            ax.set_title(NAMES[k])
        else:
            d = np.asarray(signed_distance, dtype=float)
            lim = max(float(np.abs(d).max()), 1e-12)
            im = ax.imshow(d, origin="lower", cmap="RdBu", vmin=-lim, vmax=lim, extent=(0, w, 0, h))
            bad = np.argwhere(d < 0)
            for j, i in bad:
                ax.add_patch(plt.Rectangle((i, j), 1, 1, fill=False, edgecolor="red", linewidth=0.8))
            ax.set_title(f"signed distance ({np.mean(d >= 0):.1%} feasible)")
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.8)
    save_figure(fig, path, title=title)


def plot_deformed(displacement, problem, path, title: str = "", scale: float = 1.0) -> None:
    """Deformed macro mesh with the target displacements of ``problem`` marked.

    Parameters
    ----------
    displacement : array (H + 1, W + 1, 2)
        Nodal displacements (e.g. ``MacroResult.displacement``).
    problem : metasys.problems.Problem
    scale : float
        Displacement magnification (1 = true scale).
    """
    plt = pyplot()
    u = np.asarray(displacement, dtype=float)
    h, w = u.shape[0] - 1, u.shape[1] - 1
    y, x = np.mgrid[0:h + 1, 0:w + 1].astype(float)
    dx, dy = x + scale * u[..., 0], y + scale * u[..., 1]
    fig, ax = plt.subplots(figsize=(8, max(2.5, 8 * h / w + 1)))
    for j in range(h + 1):
        ax.plot(x[j], y[j], color="0.85", lw=0.5)
        ax.plot(dx[j], dy[j], color="tab:blue", lw=0.6)
    for i in range(w + 1):
        ax.plot(x[:, i], y[:, i], color="0.85", lw=0.5)
        ax.plot(dx[:, i], dy[:, i], color="tab:blue", lw=0.6)
    nodes = problem.target_nodes
    target = np.zeros((len(nodes), 2))
    target[np.arange(len(nodes)), problem.target_components] = problem.target_values
    # Untargeted components of target nodes are drawn at the achieved displacement.
    achieved = u[nodes[:, 1], nodes[:, 0]]
    other = 1 - problem.target_components
    target[np.arange(len(nodes)), other] = achieved[np.arange(len(nodes)), other]
    ax.scatter(nodes[:, 0] + scale * target[:, 0], nodes[:, 1] + scale * target[:, 1], s=10, color="tab:red", zorder=3,
               label="target")
    ax.scatter(nodes[:, 0] + scale * achieved[:, 0], nodes[:, 1] + scale * achieved[:, 1], s=6, color="k", zorder=4,
               label="achieved")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or f"{problem.name}: deformed mesh (x{scale:g}) vs target")
    save_figure(fig, path)


def plot_history(history, path, title: str = "") -> None:
    """Convergence history: RRMSE, constraint and variable change per evaluation."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, key in zip(axes, ("rrmse", "constraint", "change")):
        ax.plot(history[key])
        ax.set_title(key)
        ax.set_xlabel("evaluation")
        if key != "constraint":
            ax.set_yscale("log")
    save_figure(fig, path, title=title)
