"""Assemble the full structure from chosen candidates and measure how well neighbours connect."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..errors import InvalidValueError, describe
from ..material import Material
from .compatibility import DEFAULT_CACHE, TractionCache, _candidate_arrays, grid_edges, theta_g, theta_m
from .solver import MRFResult


@dataclass
class Assembly:
    """Result of `assemble`.

    Attributes
    ----------
    structure : bool array (n*H, n*W)
        Full structure, row 0 at the bottom; element (i, j) fills rows ``n j .. n j + n-1`` and
        columns ``n i .. n i + n-1``.
    labels : int array (H, W)
        Chosen candidate per element (``labels[j, i]`` for element (i, j)).
    cells : bool array (H, W, n, n)
        The chosen cells.
    theta_G, theta_M : arrays (E,)
        Per adjacent pair (horizontal pairs first, then vertical; see ``grid_edges``); ``theta_M``
        is None when ``mechanical=False``.
    theta_G_zero_fraction : float
        Fraction of adjacent pairs with ``theta_G == 0``.
    theta_G_mean, theta_M_mean : float
        Means over adjacent pairs (``theta_M_mean`` is nan when not computed).
    n_components : int
        Connected solid components of the structure (4-connectivity); 1 for a connected design.
    """

    structure: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    cells: np.ndarray = field(repr=False)
    theta_G: np.ndarray = field(repr=False)
    theta_M: np.ndarray | None = field(repr=False)
    theta_G_zero_fraction: float
    theta_G_mean: float
    theta_M_mean: float
    n_components: int

    @property
    def stats(self) -> dict:
        """The scalar statistics as a dict."""
        return {"theta_G_zero_fraction": self.theta_G_zero_fraction, "theta_G_mean": self.theta_G_mean,
                "theta_M_mean": self.theta_M_mean, "n_components": self.n_components}


def place_cells(cells) -> np.ndarray:
    """Full structure (n*H, n*W) from cells (H, W, n, n) with element (i, j) at ``cells[j, i]``."""
    c = np.asarray(cells)
    h, w, ny, nx = c.shape
    return c.transpose(0, 2, 1, 3).reshape(h * ny, w * nx)


def count_components(structure) -> int:
    """Number of 4-connected solid components of a bool image."""
    return int(ndimage.label(np.asarray(structure, bool))[1])


def assemble(candidates, labels, *, mechanical: bool = True, tractions: TractionCache | None = None,
             material: Material = Material()) -> Assembly:
    """Full structure from one candidate per element, with compatibility statistics.

    Parameters
    ----------
    candidates : Candidates-like or array (H, W, L, n, n)
        Object with ``cells`` (H, W, L, n, n) (see `mrf_from_candidates`), or the cells array.
    labels : int array (H*W,) or (H, W), or MRFResult
        Chosen candidate per element; node ``j * W + i`` / entry ``[j, i]`` is element (i, j).
    mechanical : bool
        Also compute theta_M (needs the boundary tractions of the chosen cells; cached).
    tractions : TractionCache, optional
        Cache for the traction profiles (default: the module-level cache used by `mrf_from_candidates`).
    material : Material
        Base material of the cells.

    Returns
    -------
    Assembly
    """
    cells = candidates.cells if hasattr(candidates, "cells") else candidates
    cells, _ = _candidate_arrays(cells, np.zeros(np.shape(cells)[:3]))
    h, w, n_labels, n, _ = cells.shape
    x = labels.labels if isinstance(labels, MRFResult) else np.asarray(labels)
    if x.size != h * w or not np.issubdtype(x.dtype, np.integer) or x.min() < 0 or x.max() >= n_labels:
        raise InvalidValueError(f"assemble: labels must be integers in [0, {n_labels}) of shape ({h * w},) or ({h}, {w}), "
                                f"got {describe(x)}")
    x = x.reshape(h, w)
    chosen = np.take_along_axis(cells, x[:, :, None, None, None], axis=2)[:, :, 0]
    structure = place_cells(chosen)
    horizontal, vertical = grid_edges(h, w)
    flat = chosen.reshape(h * w, n, n)
    tg = np.concatenate([
        _diag(theta_g, flat[horizontal[:, 0], :, -1], flat[horizontal[:, 1], :, 0]),
        _diag(theta_g, flat[vertical[:, 0], -1, :], flat[vertical[:, 1], 0, :]),
    ])
    tm = None
    if mechanical and len(tg):
        cache = DEFAULT_CACHE if tractions is None else tractions
        prof = cache.profiles(flat, material)
        tm = np.concatenate([
            _diag(theta_m, prof[horizontal[:, 0], 0], prof[horizontal[:, 1], 0]),
            _diag(theta_m, prof[vertical[:, 0], 1], prof[vertical[:, 1], 1]),
        ])
    return Assembly(
        structure=structure, labels=x, cells=chosen, theta_G=tg, theta_M=tm,
        theta_G_zero_fraction=float(np.mean(tg == 0)) if len(tg) else 1.0,
        theta_G_mean=float(tg.mean()) if len(tg) else 0.0,
        theta_M_mean=float(tm.mean()) if tm is not None else (0.0 if mechanical else float("nan")),
        n_components=count_components(structure),
    )


def _diag(measure, a, b) -> np.ndarray:
    """measure applied to corresponding rows of a and b (E,), without forming the E x E matrix."""
    return np.array([measure(a[k : k + 1], b[k : k + 1])[0, 0] for k in range(len(a))])
