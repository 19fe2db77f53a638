"""Defect repair and validity checks of database cells (VAE paper, Sec. 3.2).

The paper: "possible defects, such as isolated pixels and checkerboard patterns, are detected and
fixed to ensure the feasibility of generated microstructures". A database cell must in addition
tile into a single connected solid (checked on a 3x3 tiling).

Cells are binary, ``cell[r, c]`` with row 0 at the bottom, 1 = solid, periodic (they tile the plane)
and, in the database, mirror-symmetric about both mid-lines. Every neighbourhood below is taken on
the torus (indices wrap). The four mirror symmetries of a cell map the torus onto itself and map
4-neighbours to 4-neighbours and 2x2 blocks to 2x2 blocks, so every step of `repair` that is
defined from the pattern alone (no choice among equal candidates) maps a symmetric cell to a
symmetric cell; the one step that could choose (the largest component) keeps all ties.

Everything is vectorized over the batch: the 3-D labelling uses a structuring element with no
connectivity along the batch axis, so one ``scipy.ndimage`` call handles all cells.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..errors import InvalidCellError, InvalidTypeError, describe

# 4-connectivity within each cell, none across the batch axis.
_BATCH_CROSS = np.zeros((3, 3, 3), bool)
_BATCH_CROSS[1] = ndimage.generate_binary_structure(2, 1)

# Names of the validity criteria, in the order of validity_report.
CRITERIA = ("symmetric", "connected", "touches_edges", "no_isolated", "no_checkerboard", "not_empty")


def as_cells(cells, name: str = "cells") -> tuple[np.ndarray, bool]:
    """Validate binary cells; return them as bool (N, ny, nx) and whether a single (ny, nx) cell was given."""
    expected = f"{name}: expected a binary array of shape (ny, nx) or (N, ny, nx), got {describe(cells)}"
    if isinstance(cells, (str, bytes)) or cells is None:
        raise InvalidTypeError(expected)
    try:
        arr = np.asarray(cells)
    except Exception as exc:  # ragged lists and similar
        raise InvalidTypeError(expected) from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InvalidTypeError(f"{name}: expected a numeric or bool array, got {describe(arr)}")
    single = arr.ndim == 2
    if single:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1] < 2 or arr.shape[2] < 2:
        raise InvalidCellError(f"{name}: expected shape (ny, nx) or (N, ny, nx) with ny, nx >= 2, got shape {arr.shape}")
    if arr.dtype != bool:
        if not np.all((arr == 0) | (arr == 1)):
            raise InvalidCellError(f"{name}: expected binary values (0/1 or bool), got values in [{arr.min()}, {arr.max()}]")
        arr = arr.astype(bool)
    return arr, single


# ---------------------------------------------------------------------------------------------------
# Local defects (periodic neighbourhoods, vectorized with np.roll)


def _neighbour_count(x: np.ndarray) -> np.ndarray:
    """Number (0..4) of 4-neighbours (periodic) of each pixel that are True; x (N, ny, nx) bool."""
    x = x.astype(np.uint8)
    return np.roll(x, 1, 1) + np.roll(x, -1, 1) + np.roll(x, 1, 2) + np.roll(x, -1, 2)


def isolated_solid(cells: np.ndarray) -> np.ndarray:
    """Solid pixels with no solid 4-neighbour (periodic); (N, ny, nx) bool."""
    return cells & (_neighbour_count(cells) == 0)


def isolated_void(cells: np.ndarray) -> np.ndarray:
    """Void pixels with no void 4-neighbour (periodic); (N, ny, nx) bool."""
    return ~cells & (_neighbour_count(~cells) == 0)


def checkerboard_blocks(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2 blocks (periodic) whose two solid pixels touch only at a corner.

    Returns two (N, ny, nx) bool masks indexed by the block's lower-left pixel ``(r, c)``: ``main``
    for solid at (r, c) and (r+1, c+1), ``anti`` for solid at (r, c+1) and (r+1, c).
    """
    a = cells                                   # (r, c)
    b = np.roll(cells, -1, 2)                   # (r, c+1)
    c = np.roll(cells, -1, 1)                   # (r+1, c)
    d = np.roll(b, -1, 1)                       # (r+1, c+1)
    return a & d & ~b & ~c, b & c & ~a & ~d


def _bridge_checkerboards(cells: np.ndarray) -> np.ndarray:
    """Fill both void pixels of every checkerboard block until none is left.

    Filling the whole block (rather than one of its two void pixels) is the choice that needs no
    tie-break, so it commutes with the mirror symmetries. Filling can create a new checkerboard
    next to the block, hence the loop; it ends because solids only grow.
    """
    out = cells.copy()
    todo = np.arange(len(out))
    while len(todo):
        x = out[todo]
        main, anti = checkerboard_blocks(x)
        hit = (main | anti).any(axis=(1, 2))
        if not hit.any():
            break
        fill = np.roll(main, 1, 2) | np.roll(main, 1, 1) | anti | np.roll(anti, (1, 1), (1, 2))
        out[todo] = x | fill
        todo = todo[hit]
    return out


# ---------------------------------------------------------------------------------------------------
# Components


def _label(cells: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """4-connected solid components of each cell on its own (no wrap).

    Returns labels (N, ny, nx) (0 on void, ids 1..n unique over the batch), n, and the owner (n + 1,)
    cell index of each id (each component lies in one cell; entry 0 is unused).
    """
    lab, n = ndimage.label(cells, structure=_BATCH_CROSS)
    owner = np.zeros(n + 1, int)
    owner[lab] = np.arange(len(cells))[:, None, None]
    return lab, n, owner


def _edge_pairs(lab: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Labels facing each other across the cell's edges: (top row, bottom row) and (right column, left column).

    Each is a pair of equal-length id arrays (u, v): u touches v when a copy of the cell is placed
    above (resp. to the right of) it.
    """
    out = []
    for u, v in ((lab[:, -1, :], lab[:, 0, :]), (lab[:, :, -1], lab[:, :, 0])):
        both = (u > 0) & (v > 0)
        out.append((u[both], v[both]))
    return out[0], out[1]


def _union(n_nodes: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected-component id of each of n_nodes graph nodes given undirected edges (i, j)."""
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n_nodes, n_nodes))
    return connected_components(graph, directed=False)[1]


def keep_largest_component(cells: np.ndarray) -> np.ndarray:
    """Keep the solid of the largest 4-connected component(s) on the torus of each cell; (N, ny, nx) bool.

    Components that meet through the wrap (a pixel of the top row over one of the bottom row, of the
    right column beside one of the left column) are one. When several components share the
    largest size all of them are kept: in a symmetric cell equal components are typically mirror
    images of each other, and keeping one would break the symmetry (keeping all is symmetric and
    makes the step idempotent). The work is per component id after one labelling pass.
    """
    lab, n, owner = _label(cells)
    (vu, vv), (hu, hv) = _edge_pairs(lab)
    root = _union(n + 1, np.concatenate([vu, hu]), np.concatenate([vv, hv]))
    pixels = np.bincount(lab.ravel(), minlength=n + 1)
    pixels[0] = 0  # background
    size = np.bincount(root, weights=pixels)[root]  # periodic component size of every id
    largest = np.zeros(len(cells))
    np.maximum.at(largest, owner[1:], size[1:])
    keep = np.zeros(n + 1, bool)  # id 0: background
    keep[1:] = size[1:] >= largest[owner[1:]]
    return keep[lab]


def tiling_components(cells: np.ndarray) -> np.ndarray:
    """Number of 4-connected solid components of the 3x3 tiling of each cell; int (N,).

    A cell whose tiling is one component joins its neighbours in every direction; a cell whose
    solid only wraps in one direction (parallel bars) gives 3 components, an island 9.

    Computed without building the tiling: the graph's nodes are (component of the cell, tile
    t = 3 ty + tx) and its edges join, for every pair of adjacent tiles, the components facing each
    other across their shared edge; the tiling's components are this graph's components. Same
    result as labelling ``np.tile(cells, (1, 3, 3))``, at a ninth of the labelling work.
    """
    lab, n, owner = _label(cells)
    (vu, vv), (hu, hv) = _edge_pairs(lab)
    i, j = [], []
    for ty in range(3):
        for tx in range(3):
            t = 3 * ty + tx
            if tx < 2:  # tile t's right column meets tile t + 1's left column
                i.append(9 * (hu - 1) + t)
                j.append(9 * (hv - 1) + t + 1)
            if ty < 2:  # tile t's top row meets tile t + 3's bottom row
                i.append(9 * (vu - 1) + t)
                j.append(9 * (vv - 1) + t + 3)
    root = _union(9 * n, np.concatenate(i), np.concatenate(j))
    comp_owner = np.zeros(root.max(initial=-1) + 1, int)
    comp_owner[root] = owner[1:].repeat(9)
    return np.bincount(comp_owner, minlength=len(cells))


# ---------------------------------------------------------------------------------------------------
# Public API


def repair(cells):
    """Fix defects of binary cells, keeping mirror symmetry.

    Steps, in this order (each maps a symmetric cell to a symmetric one, see the module notes):

    1. remove isolated solid pixels, then fill isolated void pixels (no 4-neighbour of the same
       phase, periodic); a solid pixel that only touches the structure at a corner is noise, so it
       is removed before step 2 would bridge it in;
    2. bridge checkerboards: fill the void pixels of every 2x2 block whose solids touch only
       diagonally (repeated until none is left);
    3. fill the isolated void pixels that step 2 may have enclosed;
    4. keep only the largest 4-connected solid component on the periodic cell (all of them on a
       tie).

    No step creates a defect an earlier step removes (removing or filling an isolated pixel
    leaves at least three pixels of one phase in each of its 2x2 blocks; dropping a whole
    component changes no remaining pixel's neighbours), so the result has no isolated pixels
    nor checkerboards and ``repair(repair(x)) == repair(x)``.

    Parameters
    ----------
    cells : array (N, ny, nx) or (ny, nx), bool or 0/1

    Returns
    -------
    bool array of the same shape.
    """
    x, single = as_cells(cells)
    x = x & ~isolated_solid(x)
    x = x | isolated_void(x)
    x = _bridge_checkerboards(x)
    x = x | isolated_void(x)
    x = keep_largest_component(x)
    return x[0] if single else x


def validity_report(cells) -> dict[str, np.ndarray]:
    """Each validity criterion of each cell.

    Returns
    -------
    dict name -> bool (N,) (a scalar bool per entry for a single (ny, nx) cell):

    ``symmetric``
        mirror-symmetric about both mid-lines;
    ``connected``
        the 3x3 tiling of the cell is one 4-connected solid;
    ``touches_edges``
        solid on each of the four edges (bottom and top rows, left and right columns);
    ``no_isolated``
        no solid pixel without a solid 4-neighbour and no void pixel without a void one (periodic);
    ``no_checkerboard``
        no 2x2 block (periodic) whose solids touch only at a corner;
    ``not_empty``
        at least one solid pixel.
    """
    x, single = as_cells(cells)
    main, anti = checkerboard_blocks(x)
    report = {
        "symmetric": (x == x[:, ::-1, :]).all(axis=(1, 2)) & (x == x[:, :, ::-1]).all(axis=(1, 2)),
        "connected": tiling_components(x) == 1,
        "touches_edges": x[:, 0, :].any(1) & x[:, -1, :].any(1) & x[:, :, 0].any(1) & x[:, :, -1].any(1),
        "no_isolated": ~(isolated_solid(x) | isolated_void(x)).any(axis=(1, 2)),
        "no_checkerboard": ~(main | anti).any(axis=(1, 2)),
        "not_empty": x.any(axis=(1, 2)),
    }
    return {k: v[0] for k, v in report.items()} if single else report


def is_valid(cells):
    """True where a cell meets every criterion of `validity_report`; bool (N,) (scalar for one cell)."""
    report = validity_report(cells)
    return np.logical_and.reduce(list(report.values()))
