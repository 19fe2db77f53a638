"""Stochastic shape perturbation and parent selection for database growth (VAE paper, Sec. 3.2).

The paper grows its database from topology-optimized seeds by "an iterative stochastic shape
perturbation algorithm [that] perturbs microstructure geometries that correspond to extreme and
sparse properties; the extremeness and sparsity are measured by the distance to the boundary and
the number of neighbouring microstructures in the property space" (following Wang et al. 2020,
"Deep generative modeling for mechanistic-based learning and design of metamaterial systems").
This module provides the three pieces of one round: `select_parents` (weights from
`selection_weights`), `perturb` (random smooth shape changes of the parents) and the
`coverage` metric of the property space. Children are repaired and validated by
`metasys.database.repair` before they are homogenized.

Properties are rows ``p = (C11, C12, C22, C33)``; cells follow the package conventions (``cell[r, c]``,
row 0 at the bottom, 1 = solid, doubly mirror-symmetric).
"""

from __future__ import annotations

import numpy as np
from scipy import fft, ndimage

from ..errors import InvalidValueError, describe
from ..fem import mirror_quarter
from .repair import _BATCH_CROSS, as_cells

# Morphological steps drawn with probability ``morph_probability`` (equally likely).
_DILATE, _ERODE, _ADD_BLOB, _REMOVE_BLOB = 1, 2, 3, 4


# ---------------------------------------------------------------------------------------------------
# Perturbation


def _smooth_field(rng: np.random.Generator, n: int, qy: int, qx: int, sigma: np.ndarray) -> np.ndarray:
    """Smooth random quarter fields (n, qy, qx), each with its own Gaussian width, scaled to unit RMS.

    The field is white noise on the mirrored periodic cell smoothed by a Gaussian of ``sigma`` (n,)
    pixels. A doubly mirror-symmetric periodic field is a cosine (DCT-II) series of its quarter,
    and the orthonormal DCT of white noise is white noise, so the field is drawn directly as DCT
    coefficients times the Gaussian's transfer function: one inverse DCT for the whole batch,
    smooth across the mirror lines and the cell edge alike.
    """
    ky = np.arange(qy)[:, None] / (2.0 * qy)  # cycles per pixel of DCT-II mode k on the period 2 q
    kx = np.arange(qx)[None, :] / (2.0 * qx)
    transfer = np.exp(-2.0 * np.pi**2 * sigma[:, None, None] ** 2 * (ky**2 + kx**2))
    field = fft.idctn(rng.standard_normal((n, qy, qx)) * transfer, type=2, axes=(1, 2), norm="ortho")
    return field / np.maximum(np.sqrt(np.mean(field**2, axis=(1, 2), keepdims=True)), 1e-12)


def _morph(q: np.ndarray, op: np.ndarray) -> np.ndarray:
    """One-pixel dilation or erosion of every quarter (N, qy, qx) selected by ``op``."""
    # Mode "reflect" continues each quarter by its mirror image: exactly the neighbourhood of the
    # quarter inside the mirrored periodic cell.
    u8 = q.astype(np.uint8)
    dil = ndimage.grey_dilation(u8, footprint=_BATCH_CROSS, mode="reflect").astype(bool)
    ero = ndimage.grey_erosion(u8, footprint=_BATCH_CROSS, mode="reflect").astype(bool)
    sel = op[:, None, None]
    return np.where(sel == _DILATE, dil, np.where(sel == _ERODE, ero, q))


def _disks(rng: np.random.Generator, n: int, qy: int, qx: int, radius: tuple[float, float]) -> np.ndarray:
    """One random disk per quarter (centre anywhere in the quarter); bool (n, qy, qx)."""
    r0 = rng.uniform(0, qy, n)[:, None, None]
    c0 = rng.uniform(0, qx, n)[:, None, None]
    rad = rng.uniform(*radius, n)[:, None, None]
    rr, cc = np.ogrid[:qy, :qx]
    return (rr + 0.5 - r0) ** 2 + (cc + 0.5 - c0) ** 2 <= rad**2


def _perturb_quarters(q: np.ndarray, rng: np.random.Generator, strength: float, amplitude: float, smoothing: float,
                      sigma_range: tuple[float, float], morph_probability: float, blob_radius: tuple[float, float]) -> np.ndarray:
    """One perturbation of quarters q (N, qy, qx) bool; see `perturb`."""
    n, qy, qx = q.shape
    # (a) level set: smoothed indicator (zero on the boundary) plus a smooth random field. Across a
    # straight boundary |grad phi| = 2 / (sqrt(2 pi) smoothing) ~ 0.8 / pixel, so the boundary moves
    # by about strength * amplitude * F / 0.8 pixels: 0.6 F at the defaults, F of unit RMS.
    phi = ndimage.gaussian_filter(2.0 * q - 1.0, sigma=(0, smoothing, smoothing), mode="reflect")
    sigma = rng.uniform(*sigma_range, n)
    phi += strength * amplitude * _smooth_field(rng, n, qy, qx, sigma)
    out = phi > 0
    # (b) occasional morphological step. All draws are made for every cell so that the random
    # stream does not depend on which cells get which step.
    op = np.where(rng.random(n) < morph_probability, rng.integers(_DILATE, _REMOVE_BLOB + 1, n), 0)
    out = _morph(out, op)
    disk = _disks(rng, n, qy, qx, blob_radius)
    sel = op[:, None, None]
    return np.where(sel == _ADD_BLOB, out | disk, np.where(sel == _REMOVE_BLOB, out & ~disk, out))


def _force_change(q: np.ndarray, rng: np.random.Generator, blob_radius: tuple[float, float]) -> np.ndarray:
    """Flip a small disk around one random pixel of the majority phase of each quarter to the minority phase.

    The last resort for quarters that random fields did not change (typically fully solid or
    empty ones); the centre pixel always flips, so the result differs from the input.
    """
    n, qy, qx = q.shape
    majority = q.mean(axis=(1, 2)) >= 0.5
    keys = np.where(q == majority[:, None, None], rng.random(q.shape), -1.0).reshape(n, -1)
    r0, c0 = np.unravel_index(keys.argmax(axis=1), (qy, qx))
    rad = rng.uniform(*blob_radius, n)
    rr, cc = np.ogrid[:qy, :qx]
    disk = (rr - r0[:, None, None]) ** 2 + (cc - c0[:, None, None]) ** 2 <= rad[:, None, None] ** 2
    return np.where(disk, ~majority[:, None, None], q)


def perturb(cells, rng, strength: float = 1.0, *, amplitude: float = 0.5, smoothing: float = 1.0,
            sigma_range: tuple[float, float] = (1.5, 4.0), morph_probability: float = 0.3,
            blob_radius: tuple[float, float] = (1.0, 3.0), max_retries: int = 3):
    """Random smooth shape changes of doubly symmetric cells.

    Each cell's bottom-left quarter is changed and mirrored back, so outputs are doubly
    symmetric (the input's other three quarters are ignored). Two mechanisms:

    (a) level set: ``phi = G_s * (2 q - 1) + strength * amplitude * F``, child = ``phi > 0``, where
        ``G_s`` is a Gaussian of ``smoothing`` pixels and ``F`` white noise smoothed by a Gaussian of
        a random width in ``sigma_range`` pixels and scaled to unit RMS, both taken on the
        mirrored periodic cell. The boundary moves smoothly, by about ``0.6 strength |F|`` pixels
        at the defaults (a pixel or so where ``|F|`` is large), so shapes change but keep their
        character;
    (b) with probability ``morph_probability``, one of (equally likely): a one-pixel dilation or
        erosion of the quarter, adding or removing a disk of radius in ``blob_radius`` pixels.

    A child equal to its parent is redrawn (up to ``max_retries`` times with the strength doubled
    each time), then changed by flipping a small disk (this catches fully solid or empty cells,
    whose level set is far from zero everywhere, and ``strength = 0``).

    Parameters
    ----------
    cells : array (N, ny, nx) or (ny, nx), bool or 0/1; ny, nx even
    rng : numpy.random.Generator or int seed
        Same generator state, same result (for the same batch: the draws depend on N).
    strength : float >= 0
        Scales the random field; 1 changes about 3-15 % of the pixels of typical cells.

    Returns
    -------
    bool array of the same shape as ``cells``, doubly mirror-symmetric. Children are not
    repaired: run `metasys.database.repair.repair` on them.
    """
    x, single = as_cells(cells)
    n, ny, nx = x.shape
    if ny % 2 or nx % 2:
        raise InvalidValueError(f"cells: expected even ny and nx (a mirrored quarter), got shape {(ny, nx)}")
    if not np.isfinite(strength) or strength < 0:
        raise InvalidValueError(f"strength: expected a finite number >= 0, got {strength!r}")
    rng = np.random.default_rng(rng)
    args = dict(amplitude=amplitude, smoothing=smoothing, sigma_range=sigma_range, morph_probability=morph_probability,
                blob_radius=blob_radius)
    q = x[:, : ny // 2, : nx // 2]
    out = _perturb_quarters(q, rng, strength, **args)
    same = np.flatnonzero((out == q).all(axis=(1, 2)))
    for attempt in range(1, max_retries + 1):
        if not len(same):
            break
        out[same] = _perturb_quarters(q[same], rng, strength * 2.0**attempt, **args)
        same = same[(out[same] == q[same]).all(axis=(1, 2))]
    if len(same):
        out[same] = _force_change(q[same], rng, blob_radius)
    out = mirror_quarter(out)
    return out[0] if single else out


# ---------------------------------------------------------------------------------------------------
# Property space: selection weights and coverage


def _check_properties(properties, min_rows: int, name: str = "properties") -> np.ndarray:
    """Properties as a finite float array (N, d), N >= min_rows."""
    expected = f"{name}: expected a finite numeric array (N, d) with N >= {min_rows}, got {describe(properties)}"
    try:
        p = np.asarray(properties, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(expected) from exc
    if p.ndim != 2 or p.shape[1] < 1 or len(p) < min_rows or not np.all(np.isfinite(p)):
        raise InvalidValueError(expected)
    return p


def _bin_index(p: np.ndarray, lo: np.ndarray, hi: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin indices (N, d) of points in the box [lo, hi] split into n_bins per axis, and an in-box mask (N,).

    A point on the upper face goes to the last bin; a degenerate axis (hi == lo) has one used bin.
    """
    span = np.where(hi > lo, hi - lo, 1.0)
    u = (p - lo) / span
    inside = np.all((u >= 0) & (u <= 1), axis=1)
    return np.clip((u * n_bins).astype(int), 0, n_bins - 1), inside


def selection_weights(properties, n_bins: int = 20) -> np.ndarray:
    """Probabilities (N,) of choosing each cell as a perturbation parent, favouring extreme and sparse properties.

    The properties (N, d) are scaled per column to [0, 1] by their min/max and binned on an
    ``n_bins^d`` grid. For the bin b(i) of cell i:

    - ``n_i`` = number of cells in b(i) and its 3^d - 1 neighbouring bins (sparsity = 1 / n_i);
    - ``depth_i`` = number of binary erosions (3^d structuring element, outside the grid counts as
      empty) of the occupied-bin set that b(i) survives: 0 for a bin next to an empty bin or the
      grid's face, i.e. on the boundary of the cloud or of a hole in it, larger deeper inside
      (extremeness = 1 / (1 + depth_i), the paper's "distance to the boundary" in bins);

    and ``w_i = (1 / (1 + depth_i)) / n_i``, normalized to sum 1. Dividing by the neighbourhood
    count makes the total weight of a region of bins roughly independent of how many cells it
    holds, so rounds do not keep perturbing the crowded regions; the depth factor then favours the
    boundary of the property cloud (by 2x over the next layer of bins, etc.).
    """
    p = _check_properties(properties, 1)
    if int(n_bins) < 1:
        raise InvalidValueError(f"n_bins: expected a positive integer, got {n_bins!r}")
    n_bins, d = int(n_bins), p.shape[1]
    idx, _ = _bin_index(p, p.min(axis=0), p.max(axis=0), n_bins)
    flat = np.ravel_multi_index(tuple(idx.T), (n_bins,) * d)
    counts = np.bincount(flat, minlength=n_bins**d).reshape((n_bins,) * d).astype(float)
    # uniform_filter is the mean over the 3^d neighbourhood (zero outside the grid).
    neighbours = ndimage.uniform_filter(counts, size=3, mode="constant") * 3**d
    occupied = counts > 0
    depth = np.zeros(counts.shape, int)
    structure = np.ones((3,) * d, bool)
    layer = ndimage.binary_erosion(occupied, structure=structure, border_value=0)
    while layer.any():  # at most n_bins / 2 erosions
        depth += layer
        layer = ndimage.binary_erosion(layer, structure=structure, border_value=0)
    # rint: the filter's float sum of integer counts.
    w = 1.0 / (1.0 + depth.ravel()[flat]) / np.rint(neighbours.ravel()[flat])
    return w / w.sum()


def select_parents(properties, n: int, rng, n_bins: int = 20) -> np.ndarray:
    """Indices (n,) of parents drawn with replacement with `selection_weights`; ``rng``: Generator or seed."""
    if int(n) < 0:
        raise InvalidValueError(f"n: expected a number of parents >= 0, got {n!r}")
    w = selection_weights(properties, n_bins)
    return np.random.default_rng(rng).choice(len(w), size=int(n), replace=True, p=w)


def coverage(properties, box_min, box_max, n_bins: int = 20) -> int:
    """Number of occupied bins of the ``n_bins^d`` grid over the box [box_min, box_max] of the property space.

    Each axis of the box is split into ``n_bins`` equal bins; points outside the box are not
    counted and points on its upper faces fall in the last bins.
    """
    p = _check_properties(properties, 0)
    lo = np.asarray(box_min, dtype=float).reshape(-1)
    hi = np.asarray(box_max, dtype=float).reshape(-1)
    if lo.shape != (p.shape[1],) or hi.shape != lo.shape or np.any(hi < lo):
        raise InvalidValueError(f"box_min, box_max: expected two vectors of length {p.shape[1]} with box_min <= box_max, "
                                f"got {describe(box_min)} and {describe(box_max)}")
    if int(n_bins) < 1:
        raise InvalidValueError(f"n_bins: expected a positive integer, got {n_bins!r}")
    idx, inside = _bin_index(p, lo, hi, int(n_bins))
    return int(len(np.unique(np.ravel_multi_index(tuple(idx[inside].T), (int(n_bins),) * p.shape[1]))))
