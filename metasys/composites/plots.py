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


CHANNELS = ("E [GPa]", "nu", "rho [g/cm^3]")
PLANES = ("x-y (z mid)", "x-z (y mid)", "y-z (x mid)")


def mid_slices(volume) -> list[np.ndarray]:
    """The three orthogonal mid-slices of a voxel field (nz, ny, nx, ...): x-y at z mid (ny, nx, ...), x-z at y mid
    (nz, nx, ...) and y-z at x mid (nz, ny, ...); each drawn with its second axis horizontal and ``origin="lower"``."""
    v = np.asarray(volume)
    nz, ny, nx = v.shape[:3]
    return [v[nz // 2], v[:, ny // 2], v[:, :, nx // 2]]


def _check_voxel_image(image) -> np.ndarray:
    from ..errors import InvalidValueError, describe

    img = np.asarray(image, dtype=float)
    if img.ndim != 4 or img.shape[0] != 3:
        raise InvalidValueError(f"image: expected a 3D material image (3, nz, ny, nx) of (E, nu, rho), got {describe(image)}")
    return img


def slice_plot(image, path, title: str = ""):
    """Three orthogonal mid-slices (columns) of each channel E, nu, rho (rows) of a 3D sample (3, nz, ny, nx), with
    one colour bar per channel in physical units, and a last row of the normalized (r, g, b) colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = _check_voxel_image(image)
    fig, axes = plt.subplots(4, 3, figsize=(7.2, 9.0), squeeze=False, layout="constrained")
    for row, channel, name in zip(axes, img, CHANNELS):
        lo, hi = float(channel.min()), float(channel.max())
        lo, hi = (lo - 0.5, hi + 0.5) if hi - lo < 1e-12 else (lo, hi)  # a single material still gets a colour scale
        for ax, plane in zip(row, mid_slices(channel)):
            im = ax.imshow(plane, origin="lower", interpolation="nearest", vmin=lo, vmax=hi, cmap="viridis")
        fig.colorbar(im, ax=row.tolist(), shrink=0.9, label=name)
    colours = rgb(img.reshape(3, img.shape[1], -1)).reshape(*img.shape[1:], 3)  # (nz, ny, nx, 3)
    for ax, plane in zip(axes[3], mid_slices(colours)):
        ax.imshow(plane, origin="lower", interpolation="nearest")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for ax, plane in zip(axes[0], PLANES):
        ax.set_title(plane, fontsize=8)
    for ax, labels in zip(axes[3], (("x", "y"), ("x", "z"), ("y", "z"))):
        ax.set_xlabel(f"{labels[0]} (horizontal), {labels[1]} up", fontsize=7)
    axes[3][0].set_ylabel("(E, nu, rho) as rgb", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def particle_phase(image) -> np.ndarray:
    """Bool mask (nz, ny, nx) of the voxels whose material differs from the most frequent one (the matrix of every
    dataset sample, where particles fill at most 45 %)."""
    img = _check_voxel_image(image)
    flat = img.reshape(3, -1).T
    values, inverse, counts = np.unique(flat, axis=0, return_inverse=True, return_counts=True)
    return (inverse.ravel() != np.argmax(counts)).reshape(img.shape[1:])


def render_3d(image, path, mask=None, title: str = "", elev: float = 22.0, azim: float = -58.0):
    """A 3D view of a sample (3, nz, ny, nx): the marching-cubes surface of its particles (`mask`, default
    `particle_phase`) coloured by the particle material's (r, g, b), inside the wire frame of the unit cube."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    from ..export3d import voxel_surface

    img = _check_voxel_image(image)
    mask = particle_phase(img) if mask is None else np.asarray(mask, dtype=bool)
    fig = plt.figure(figsize=(4.6, 4.4))
    ax = fig.add_subplot(projection="3d")
    if mask.any():
        colour = rgb(img[:, mask][:, :1, None])[0, 0]  # the (first) particle voxel's material
        tri = voxel_surface(mask)
        # light the faces by their normals so that the spheres read as spheres in a still image
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-15)
        shade = 0.45 + 0.55 * np.clip(normal @ np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8]), 0, 1)
        ax.add_collection3d(Poly3DCollection(tri, facecolors=np.clip(shade[:, None] * colour, 0, 1), linewidths=0))
    for a, b in _cube_edges():
        ax.plot(*np.stack([a, b], axis=1), color="0.3", lw=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1), zlim=(0, 1), xlabel="x", ylabel="y", zlabel="z")
    ax.set_box_aspect((1, 1, 1))
    ax.view_init(elev=elev, azim=azim)
    ax.tick_params(labelsize=6)
    if title:
        ax.set_title(title, fontsize=8)
    return _save(fig, path)


def _cube_edges():
    corners = np.array([[x, y, z] for z in (0, 1) for y in (0, 1) for x in (0, 1)], dtype=float)
    return [(corners[i], corners[j]) for i in range(8) for j in range(i + 1, 8)
            if np.abs(corners[i] - corners[j]).sum() == 1]
