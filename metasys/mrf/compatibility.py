"""Compatibility of adjacent cells (DESIGN.md §4) and the assembly MRF over candidate sets (Eq. 16-17).

- ``theta_G`` of a shared boundary pixel line: (positions where exactly one side is solid) /
  (positions where at least one side is solid); 1 when neither side has solid.
- ``theta_M``: ``sum |t_a - t_b| / sum (|t_a| + |t_b|)`` over positions, the two traction
  components and the three unit macro strains, with ``t = sigma . n`` on the shared boundary for the
  common normal ``n`` (pointing from the first cell to the second).

A cell's traction profile on its vertical boundary is the mean of the two one-sided FE estimates
at its left and right sides (the same line of the periodic cell): the one-sided estimates of one
cell differ by theta_M up to 0.18 on database cells (the stress of a Q4 pixel is discontinuous), so
a cell next to a copy of itself would not get theta_M = 0 otherwise. Likewise bottom/top for the
horizontal boundary. Profiles come from `metasys.fem.homogenization.boundary_tractions`
(about 1,000 database cells/s on 2 cores via the quarter solve); a `TractionCache` keyed
by cell content and material keeps them, so every database cell is solved once per session.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from scipy.spatial.distance import cdist

from ..errors import InvalidTypeError, InvalidValueError, describe
from ..material import Material
from ..progress import progress_bar
from .model import MRFModel

SIDES = ("left", "right", "bottom", "top")


def boundary_lines(cells) -> dict:
    """Boundary pixel lines of cells (..., ny, nx): ``left``/``right`` (..., ny) bottom to top,
    ``bottom``/``top`` (..., nx) left to right (row 0 is the bottom row)."""
    c = np.asarray(cells).astype(bool)
    return {"left": c[..., :, 0], "right": c[..., :, -1], "bottom": c[..., 0, :], "top": c[..., -1, :]}


def theta_g(lines_a, lines_b) -> np.ndarray:
    """Geometric incompatibility of every pair of pixel lines: (La, n) x (Lb, n) -> (La, Lb).

    ``#(exactly one solid) / #(at least one solid)``, 1 where neither line has a solid pixel.
    """
    a = np.atleast_2d(np.asarray(lines_a)).astype(float)
    b = np.atleast_2d(np.asarray(lines_b)).astype(float)
    if a.shape[-1] != b.shape[-1]:
        raise InvalidValueError(f"theta_g: lines must have the same length, got {describe(lines_a)} and {describe(lines_b)}")
    both = a @ b.T
    sa, sb = a.sum(1)[:, None], b.sum(1)[None, :]
    union = sa + sb - both
    xor = sa + sb - 2 * both
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, xor / np.maximum(union, 1), 1.0)


def theta_m(profiles_a, profiles_b) -> np.ndarray:
    """Mechanical incompatibility of every pair of traction profiles: (La, ...) x (Lb, ...) -> (La, Lb).

    Profiles are ``t = sigma . n`` for one common normal, any trailing shape (e.g. (3, n, 2)).
    ``sum |t_a - t_b| / sum (|t_a| + |t_b|)``; 0 when both profiles vanish.
    """
    a = np.asarray(profiles_a, float)
    b = np.asarray(profiles_b, float)
    a = a.reshape(len(a), -1)
    b = b.reshape(len(b), -1)
    if a.shape[1] != b.shape[1]:
        raise InvalidValueError(f"theta_m: profiles must have the same size, got {describe(profiles_a)} "
                                f"and {describe(profiles_b)}")
    num = cdist(a, b, "cityblock")
    den = np.abs(a).sum(1)[:, None] + np.abs(b).sum(1)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def traction_profiles(cells, material: Material = Material()) -> np.ndarray:
    """Boundary traction profiles (N, 2, 3, ny|nx, 2): ``[:, 0]`` on the vertical boundary with normal +x
    (3 unit strains, ny positions bottom to top, components x, y), ``[:, 1]`` on the horizontal
    boundary with normal +y (nx positions left to right); each the mean of the cell's two sides."""
    from ..fem.homogenization import boundary_tractions

    c = np.asarray(cells)
    if c.ndim == 2:
        c = c[None]
    if c.shape[1] != c.shape[2]:
        raise InvalidValueError(f"traction_profiles: cells must be square (N, n, n), got {describe(cells)}")
    t = boundary_tractions(c, material)  # outward normals: right/top = +x/+y, left/bottom = -x/-y
    x = 0.5 * (t["right"] - t["left"])
    y = 0.5 * (t["top"] - t["bottom"])
    return np.stack([x, y], axis=1)


class TractionCache:
    """Traction profiles of cells, keyed by cell content and material (least recently used dropped
    beyond ``max_cells``; a 50x50 cell's profiles take 4.8 kB)."""

    def __init__(self, max_cells: int = 50_000, batch_size: int = 64):
        self.max_cells = int(max_cells)
        self.batch_size = int(batch_size)
        self._store: OrderedDict = OrderedDict()
        self.computed = 0

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        self._store.clear()

    @staticmethod
    def _material_key(material: Material) -> tuple:
        return (material.E, material.nu, material.E_void, material.plane, material.penal)

    def profiles(self, cells, material: Material = Material(), progress: bool = False) -> np.ndarray:
        """Profiles (N, 2, 3, n, 2) of cells (N, n, n), computing only those not cached."""
        c = np.asarray(cells).astype(bool)
        if c.ndim != 3:
            raise InvalidValueError(f"TractionCache.profiles: cells must have shape (N, ny, nx), got {describe(cells)}")
        if len(c) == 0:
            return np.zeros((0, 2, 3, c.shape[1], 2))
        mkey = self._material_key(material)
        packed = np.packbits(c.reshape(len(c), -1), axis=1)
        uniq, first, inverse = np.unique(packed, axis=0, return_index=True, return_inverse=True)
        keys = [(mkey, c.shape[1:], row.tobytes()) for row in uniq]
        missing = [u for u, k in enumerate(keys) if k not in self._store]
        with progress_bar("boundary tractions", len(missing), enabled=progress and len(missing) > 0) as advance:
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start : start + self.batch_size]
                prof = traction_profiles(c[first[chunk]], material)
                for u, pr in zip(chunk, prof):
                    self._store[keys[u]] = pr
                self.computed += len(chunk)
                advance(len(chunk))
        out = np.stack([self._store[k] for k in keys])
        for k in keys:
            self._store.move_to_end(k)
        while len(self._store) > self.max_cells:
            self._store.popitem(last=False)
        return out[inverse.ravel()]


DEFAULT_CACHE = TractionCache()


def _candidate_arrays(candidates, errors):
    """cells (H, W, L, n, n) bool and errors (H, W, L) from a Candidates-like object or arrays."""
    if hasattr(candidates, "cells"):
        cells = candidates.cells
        errors = getattr(candidates, "errors", None) if errors is None else errors
    else:
        cells = candidates
    if cells is None or isinstance(cells, (str, bytes)):
        raise InvalidTypeError(f"mrf_from_candidates: candidates must have .cells (H, W, L, n, n), got {describe(candidates)}")
    cells = np.asarray(cells)
    if cells.ndim != 5 or cells.shape[-1] != cells.shape[-2] or min(cells.shape[:3]) < 1:
        raise InvalidValueError(f"mrf_from_candidates: candidate cells must have shape (H, W, L, n, n), got {describe(cells)}")
    if errors is None:
        raise InvalidValueError("mrf_from_candidates: node costs are needed: give candidates with .errors or errors=(H, W, L)")
    errors = np.asarray(errors, float)
    if errors.shape != cells.shape[:3]:
        raise InvalidValueError(f"mrf_from_candidates: errors must have shape {cells.shape[:3]}, got {describe(errors)}")
    # bool/0-1 cells as they are; grayscale (decoded) cells are read as solid where the density is >= 0.5
    return (cells if cells.dtype == bool else cells >= 0.5), errors


def grid_edges(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Edges of an H x W macro grid (node ``j * W + i``): horizontal pairs ((i, j), (i+1, j)) and
    vertical pairs ((i, j), (i, j+1)), each (E, 2)."""
    node = np.arange(h * w).reshape(h, w)
    horizontal = np.stack([node[:, :-1].ravel(), node[:, 1:].ravel()], axis=1)
    vertical = np.stack([node[:-1, :].ravel(), node[1:, :].ravel()], axis=1)
    return horizontal, vertical


def pair_costs(cells, profiles, weight: float = 1.0):
    """theta_G and theta_M (E, L, L) for all label pairs of all grid edges.

    cells (H, W, L, n, n) bool, profiles (H, W, L, 2, 3, n, 2). Returns ``(edges (E, 2), theta_G,
    theta_M)`` with the horizontal edges first.
    """
    h, w, n_labels = cells.shape[:3]
    lines = boundary_lines(cells)
    flat = lambda a: a.reshape((h * w,) + a.shape[2:])  # noqa: E731
    horizontal, vertical = grid_edges(h, w)
    edges = np.concatenate([horizontal, vertical])
    tg = np.empty((len(edges), n_labels, n_labels))
    tm = np.empty_like(tg)
    right, left, top, bottom = flat(lines["right"]), flat(lines["left"]), flat(lines["top"]), flat(lines["bottom"])
    px, py = flat(profiles[:, :, :, 0]), flat(profiles[:, :, :, 1])
    for e, (a, b) in enumerate(edges.tolist()):
        if e < len(horizontal):  # a's right side meets b's left side
            tg[e] = theta_g(right[a], left[b])
            tm[e] = theta_m(px[a], px[b]) if weight else 0.0
        else:  # a's top meets b's bottom
            tg[e] = theta_g(top[a], bottom[b])
            tm[e] = theta_m(py[a], py[b]) if weight else 0.0
    return edges, tg, tm


def mrf_from_candidates(candidates, weight: float = 1.0, tractions: TractionCache | None = None,
                        material: Material = Material(), errors=None, progress: bool = False) -> MRFModel:
    """The assembly MRF over candidate sets (VAE paper Eq. 16-17).

    Parameters
    ----------
    candidates : Candidates-like or array (H, W, L, n, n)
        Object with ``cells`` (H, W, L, n, n) and ``errors`` (H, W, L) = ``||p - p_target||_inf``
        (e.g. `metasys.selection.candidates.diverse_candidates`), or the cells array with ``errors=``.
        Element (i, j) (column i, row j from the bottom) is ``[j, i]``; its node is ``j * W + i``.
        Non-bool cells are solid where >= 0.5.
    weight : float
        Edge cost ``theta_G + weight * theta_M`` (0 skips the traction computation).
    tractions : TractionCache, optional
        Cache of boundary traction profiles (default: a module-level cache shared by all calls).
    material : Material
        Base material of the cells (the database's).
    errors : array (H, W, L), optional
        Node costs when ``candidates`` has none; non-finite entries forbid a label.
    progress : bool
        Show a progress bar while tractions are computed.

    Returns
    -------
    MRFModel
        ``unary`` (H*W, L) = errors, ``pairwise`` (E, L, L) = theta_G + weight theta_M;
        ``info`` holds ``theta_G`` and ``theta_M`` (E, L, L) and ``weight``; ``grid_shape`` = (H, W).
    """
    cells, err = _candidate_arrays(candidates, errors)
    if not (np.isscalar(weight) and np.isfinite(weight) and weight >= 0):
        raise InvalidValueError(f"mrf_from_candidates: weight must be a number >= 0, got {weight!r}")
    if tractions is not None and not isinstance(tractions, TractionCache):
        raise InvalidTypeError(f"mrf_from_candidates: tractions must be a TractionCache or None, got {describe(tractions)}")
    h, w, n_labels, n, _ = cells.shape
    cache = DEFAULT_CACHE if tractions is None else tractions
    if weight:
        profiles = cache.profiles(cells.reshape(-1, n, n), material, progress=progress).reshape(h, w, n_labels, 2, 3, n, 2)
    else:
        profiles = np.zeros((h, w, n_labels, 2, 3, n, 2))
    edges, tg, tm = pair_costs(cells, profiles, weight)
    unary = np.where(np.isfinite(err), err, np.inf).reshape(h * w, n_labels)
    if not np.isfinite(unary.min(axis=1)).all():
        raise InvalidValueError("mrf_from_candidates: every element needs at least one candidate with a finite error")
    return MRFModel(unary, edges, tg + weight * tm, grid_shape=(h, w), info={"theta_G": tg, "theta_M": tm, "weight": weight})
