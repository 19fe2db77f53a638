"""Figures of the latent space: PCA by property (paper Fig. 8), traversals along latent axes (Fig. 7a)
and semantic arrows (Fig. 9, 10), prior samples (Fig. 6c), reconstructions (Fig. 6a, b)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..plotting import pyplot, save_figure

PROPERTY_NAMES = ("C11", "C12", "C22", "C33")




def _show(ax, cell, title=None, color="black"):
    ax.imshow(cell, origin="lower", cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=6, color=color)


def plot_pca(lm, path, max_points: int = 30_000, seed=0) -> Path:
    """2-D PCA of the database's latent codes coloured by each property (Fig. 8)."""
    plt = pyplot()
    pca = lm.pca(2)
    props = np.asarray(lm.database.properties)
    idx = np.arange(len(props))
    if len(idx) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(len(idx), max_points, replace=False))
    fig, axes = plt.subplots(2, 2, figsize=(9, 8))
    for k, ax in enumerate(axes.flat):
        sc = ax.scatter(pca.coords[idx, 0], pca.coords[idx, 1], c=props[idx, k], s=1, cmap="viridis", rasterized=True)
        fig.colorbar(sc, ax=ax)
        ax.set_title(PROPERTY_NAMES[k])
        ax.set_xlabel(f"PC1 ({100 * pca.explained_variance_ratio[0]:.0f}%)")
        ax.set_ylabel(f"PC2 ({100 * pca.explained_variance_ratio[1]:.0f}%)")
    fig.suptitle(f"latent space PCA ({len(props)} cells)")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_traversals(lm, path, cell_index: int, axes=(0, 1, 2), steps: int = 9, size: float = 0.75) -> Path:
    """Decoded cells along latent axes through one database cell (Fig. 7a)."""
    plt = pyplot()
    z = lm.encode(lm.database.get_cells([cell_index]))[0]
    fig, grid = plt.subplots(len(axes), steps, figsize=(1.1 * steps, 1.2 * len(axes)))
    grid = np.atleast_2d(grid)
    for r, a in enumerate(axes):
        cells = lm.to_cells(lm.traverse(z, int(a), steps, size))
        for c in range(steps):
            _show(grid[r, c], cells[c], f"z{a + 1} {(c - (steps - 1) / 2) * size:+.2f}")
    fig.suptitle(f"traversals along latent axes, database cell {cell_index}", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_arrows(lm, path, cell_indices, kinds=("C11", "anisotropy", "poisson", "C33"), steps: int = 7,
                size: float = 0.75) -> Path:
    """Traversals along the semantic arrows with the homogenized (C11, C22) of each decoded cell (Fig. 9, 10)."""
    from ..fem import homogenize

    plt = pyplot()
    z0 = lm.encode(lm.database.get_cells(np.asarray(cell_indices)))
    rows = [(i, k) for i in range(len(z0)) for k in kinds]
    fig, grid = plt.subplots(len(rows), steps, figsize=(1.25 * steps, 1.35 * len(rows)))
    grid = np.atleast_2d(grid)
    for r, (i, kind) in enumerate(rows):
        cells = lm.to_cells(lm.traverse(z0[i], lm.arrow(kind), steps, size))
        C = homogenize(cells)
        for c in range(steps):
            _show(grid[r, c], cells[c], f"{kind} {(c - (steps - 1) / 2) * size:+.2f}\nC11 {C[c, 0, 0]:.3f} C22 {C[c, 1, 1]:.3f}")
    fig.suptitle("traversals along semantic arrows (unit arrows, homogenized C of the decoded cells)", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_prior_samples(lm, path, n: int = 100, seed=0) -> Path:
    """Cells decoded from codes drawn from the prior (Fig. 6c); invalid ones titled in red."""
    from ..database.repair import is_valid

    plt = pyplot()
    cells = lm.to_cells(lm.sample_prior(n, seed=seed))
    ok = is_valid(cells)
    side = int(np.ceil(np.sqrt(n)))
    fig, grid = plt.subplots(side, side, figsize=(side, side))
    for k, ax in enumerate(np.asarray(grid).flat):
        if k < n:
            _show(ax, cells[k], "valid" if ok[k] else "invalid", "black" if ok[k] else "red")
        else:
            ax.axis("off")
    fig.suptitle(f"{n} prior samples: {int(ok.sum())} valid", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_reconstructions(lm, path, cell_indices) -> Path:
    """Database cells (top), their decoded probabilities (middle) and binary cells (bottom) (Fig. 6a, b)."""
    plt = pyplot()
    cells = lm.database.get_cells(np.asarray(cell_indices))
    z = lm.encode(cells)
    prob, binary = lm.decode(z), lm.to_cells(z)
    n = len(cells)
    fig, grid = plt.subplots(3, n, figsize=(1.1 * n, 3.6))
    grid = np.asarray(grid).reshape(3, n)
    for c in range(n):
        _show(grid[0, c], cells[c], f"#{cell_indices[c]}")
        _show(grid[1, c], prob[c], "decoded p")
        _show(grid[2, c], binary[c], f"{(binary[c] == cells[c]).mean():.3f}")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_all(lm, out_dir, seed: int = 0) -> list[Path]:
    """Every figure into ``out_dir``; returns the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = len(lm.database)
    picks = rng.choice(n, size=min(10, n), replace=False)
    return [
        plot_pca(lm, out / "latent_pca.png", seed=seed),
        plot_traversals(lm, out / "traversal_axes.png", int(picks[0])),
        plot_arrows(lm, out / "traversal_arrows.png", picks[1:3]),
        plot_prior_samples(lm, out / "prior_samples.png", seed=seed),
        plot_reconstructions(lm, out / "reconstructions.png", picks),
    ]
