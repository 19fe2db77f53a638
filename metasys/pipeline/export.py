"""Exports of a full pixel structure: ``.npy``, ``.png``, ``.svg``, ``.vtu`` and ``.stl``.

The structure is a bool array ``structure[r, c]`` of shape ``(50 H, 50 W)`` with row 0 at the
BOTTOM (y up) and column = x (DESIGN.md section 2). Pixel ``(r, c)`` covers the square
``[c, c + 1] x [r, r + 1]`` in pixel units; one pixel is ``1 / 50`` macro units (a cell has side 1).
Fine node ``[r, c]`` sits at ``(x, y) = (c, r)`` pixel units.

Geometry conventions shared by the vector outputs (``.svg``, ``.stl``) and the outline drawn in the
deformed ``.png``:

- the boundary of the solid is traced along pixel edges with the solid on the left, so outer
  boundaries run counter-clockwise and holes clockwise (y up);
- two solid pixels that touch only at a corner (a "diagonal contact") are **not** connected: the
  outline passes through the shared corner twice, once per pixel (the solid is 4-connected, the void
  8-connected). The full-scale FE model shares the corner node between the two Q4 elements; for a
  manufactured part the contact has zero width, so the geometric exports keep the pixels apart. In the
  ``.stl`` the corner vertex is split into one copy per pixel, each moved by ``corner_offset`` pixels
  towards its own pixel centre, so that the triangle mesh is a closed 2-manifold even for tools that
  merge vertices by coordinates.

Every file is written to a temporary name and renamed (`metasys.io.atomic_path`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import FileFormatError, InvalidTypeError, InvalidValueError, describe
from ..io import atomic_path

__all__ = [
    "CELL_PIXELS",
    "EXPORT_SUFFIXES",
    "export_structure",
    "read_npy",
    "read_png",
    "write_npy",
    "write_png",
    "write_svg",
    "write_stl",
    "write_vtu",
    "Loops",
    "boundary_loops",
    "stl_triangles",
]

CELL_PIXELS = 50
"""Pixels per unit-cell side; one pixel is ``1 / CELL_PIXELS`` macro units."""

EXPORT_SUFFIXES = (".npy", ".png", ".svg", ".vtu", ".stl")

DEFAULT_THICKNESS = 0.1
"""Default STL extrusion thickness, in the STL length unit (macro units with the default pixel size)."""

DEFAULT_CORNER_OFFSET = 0.01
"""Default move (in pixels) of the split copies of a diagonal-contact corner vertex in the STL."""

# directions of boundary edges: 0 = +x, 1 = +y, 2 = -x, 3 = -y
_DX = np.array([1, 0, -1, 0])
_DY = np.array([0, 1, 0, -1])
# offsets (in pixels, x then y) from a vertex to the pixels NE, NW, SW, SE around it
_QX = np.array([0, -1, -1, 0])
_QY = np.array([0, 0, -1, -1])


# --------------------------------------------------------------------------------------------------
# argument checks


def _check_structure(structure, name: str = "structure") -> np.ndarray:
    """Return ``structure`` as a 2-D bool array; raise a clear error otherwise."""
    if isinstance(structure, (str, bytes)) or structure is None:
        raise InvalidTypeError(f"{name}: expected a 2-D bool array (50 H, 50 W), got {describe(structure)}")
    try:
        arr = np.asarray(structure)
    except Exception as exc:  # pragma: no cover - ragged input on some numpy versions
        raise InvalidTypeError(f"{name}: expected a 2-D bool array (50 H, 50 W), got {describe(structure)}") from exc
    if arr.dtype != bool and not np.issubdtype(arr.dtype, np.number):
        raise InvalidTypeError(f"{name}: expected a 2-D bool array (50 H, 50 W), got {describe(arr)}")
    if arr.ndim != 2 or arr.size == 0:
        raise InvalidValueError(f"{name}: expected a non-empty 2-D array (50 H, 50 W), got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if np.iscomplexobj(arr) or not np.all((arr == 0) | (arr == 1)):
        finite = arr[np.isfinite(arr)] if not np.iscomplexobj(arr) else arr.real
        lo, hi = (finite.min(), finite.max()) if finite.size else (float("nan"), float("nan"))
        raise InvalidValueError(f"{name}: expected bool or 0/1 values (threshold grayscale densities first), "
                                f"got {arr.dtype} values in [{lo}, {hi}]")
    return arr.astype(bool)


def _check_path(path, suffix: str | None = None, name: str = "path") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidTypeError(f"{name}: expected a file path (str or os.PathLike), got {describe(path)}")
    path = Path(path)
    if suffix is not None and path.suffix.lower() != suffix:
        raise InvalidValueError(f"{name}: expected a file name ending in {suffix!r}, got {str(path)!r}")
    return path


def _check_positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidTypeError(f"{name}: expected a positive number, got {describe(value)}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise InvalidValueError(f"{name}: expected a positive finite number, got {value!r}")
    return value


def _check_displacement(displacement, shape, name: str = "displacement") -> np.ndarray:
    """Fine-node displacement (ny + 1, nx + 1, 2) as float (NaN allowed)."""
    ny, nx = shape
    try:
        u = np.asarray(displacement, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidTypeError(f"{name}: expected a float array ({ny + 1}, {nx + 1}, 2) of fine-node displacements, "
                               f"got {describe(displacement)}") from exc
    if u.shape != (ny + 1, nx + 1, 2):
        raise InvalidValueError(f"{name}: expected shape ({ny + 1}, {nx + 1}, 2) (fine nodes of a structure of shape "
                                f"{(ny, nx)}, components x and y), got shape {u.shape}")
    if np.isinf(u).any():
        raise InvalidValueError(f"{name}: expected finite values (NaN marks nodes not in the model), got infinite values")
    return u


def _check_problem(problem, shape):
    from ..macro.problems import Problem

    if not isinstance(problem, Problem):
        raise InvalidTypeError(f"problem: expected a metasys.problems.Problem, got {describe(problem)}")
    expected = (CELL_PIXELS * problem.height, CELL_PIXELS * problem.width)
    if tuple(shape) != expected:
        raise InvalidValueError(f"problem: a {problem.width} x {problem.height} grid needs a structure of shape {expected}, "
                                f"got structure of shape {tuple(shape)}")
    return problem


# --------------------------------------------------------------------------------------------------
# boundary tracing


class Loops(NamedTuple):
    """Closed boundary polygons of a pixel structure, in pixel units (y up).

    Attributes
    ----------
    x, y : int arrays (M,)
        Corner vertices of all loops, loop after loop, in traversal order (solid on the left: outer
        boundaries counter-clockwise, holes clockwise). Collinear edges are merged, so consecutive
        vertices alternate between horizontal and vertical moves.
    horizontal : bool array (M,)
        Whether the segment arriving at each vertex (from the previous vertex of its loop, cyclically)
        is horizontal.
    offsets : int array (L + 1,)
        Loop ``k`` is ``x[offsets[k]:offsets[k + 1]]``.
    """

    x: np.ndarray
    y: np.ndarray
    horizontal: np.ndarray
    offsets: np.ndarray

    def segments(self) -> np.ndarray:
        """All polygon sides as an array (M, 2, 2) of ((x0, y0), (x1, y1)) in pixel units."""
        m = len(self.x)
        prev = np.arange(m) - 1
        prev[self.offsets[:-1]] = self.offsets[1:] - 1
        end = np.stack([self.x, self.y], axis=1)
        return np.stack([end[prev], end], axis=1)

    def signed_areas(self) -> np.ndarray:
        """Signed area (L,) of each loop in pixel units (outer boundaries > 0, holes < 0)."""
        seg = self.segments().astype(np.int64)
        cross = seg[:, 0, 0] * seg[:, 1, 1] - seg[:, 1, 0] * seg[:, 0, 1]
        return np.add.reduceat(cross, self.offsets[:-1]) / 2 if len(cross) else np.zeros(0)


def _boundary_edges(solid: np.ndarray):
    """Directed unit boundary edges (solid on the left): start x, start y, direction, slot id (sorted)."""
    ny, nx = solid.shape
    p = np.pad(solid, 1)  # p[y + 1, x + 1] = solid[y, x]
    below, above = p[:-1, 1:-1], p[1:, 1:-1]  # horizontal slots (ny + 1, nx): line y, segment [x, x + 1]
    hy, hx = np.nonzero(below != above)
    up = above[hy, hx]
    left, right = p[1:-1, :-1], p[1:-1, 1:]  # vertical slots (ny, nx + 1): column x, segment [y, y + 1]
    vy, vx = np.nonzero(left != right)
    rs = right[vy, vx]
    sx = np.concatenate([np.where(up, hx, hx + 1), vx])
    sy = np.concatenate([hy, np.where(rs, vy + 1, vy)])
    d = np.concatenate([np.where(up, 0, 2), np.where(rs, 3, 1)]).astype(np.int64)
    slot = np.concatenate([hy * nx + hx, (ny + 1) * nx + vy * (nx + 1) + vx]).astype(np.int64)
    return sx.astype(np.int64), sy.astype(np.int64), d, slot, p


def _successors(solid: np.ndarray):
    """Boundary edges and, for each, the next edge of its loop (turning left at diagonal contacts)."""
    ny, nx = solid.shape
    sx, sy, d, slot, p = _boundary_edges(solid)
    ex, ey = sx + _DX[d], sy + _DY[d]
    # pixels ahead-left and ahead-right of the edge's end vertex (indices into NE, NW, SW, SE)
    al = p[ey + 1 + _QY[d], ex + 1 + _QX[d]]
    dr = (d + 3) % 4
    ar = p[ey + 1 + _QY[dr], ex + 1 + _QX[dr]]
    nd = np.where(~al, (d + 1) % 4, np.where(~ar, d, (d + 3) % 4))
    nh = (ny + 1) * nx
    nslot = np.choose(nd, [ey * nx + ex, nh + ey * (nx + 1) + ex, ey * nx + ex - 1, nh + (ey - 1) * (nx + 1) + ex])
    succ = np.searchsorted(slot, nslot)
    return ex, ey, d, succ


def _order_cycles(succ: np.ndarray):
    """Order the elements of a permutation's cycles: (order (E,), cycle label (E,), offsets (L + 1,)).

    Cycles are found with `scipy.sparse.csgraph.connected_components` (linear time) and each
    element's position in its cycle by pointer jumping from the cycle's smallest element
    (``log2`` of the longest cycle vectorized passes).
    """
    from scipy import sparse
    from scipy.sparse import csgraph

    e = len(succ)
    idx = np.arange(e)
    graph = sparse.csr_matrix((np.ones(e, dtype=np.int8), (idx, succ)), shape=(e, e))
    n, label = csgraph.connected_components(graph, directed=True, connection="weak")
    _, root = np.unique(label, return_index=True)
    ptr = np.empty(e, dtype=np.int64)
    ptr[succ] = idx  # predecessor
    ptr[root] = root
    rank = np.ones(e, dtype=np.int64)
    rank[root] = 0
    while True:
        nxt = ptr[ptr]
        if np.array_equal(nxt, ptr):
            break
        rank += rank[ptr]
        ptr = nxt
    sizes = np.bincount(label, minlength=n)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    order = np.empty(e, dtype=np.int64)
    order[offsets[label] + rank] = idx
    return order, label, offsets


def boundary_loops(structure) -> Loops:
    """Trace the boundary of the solid pixels as closed axis-aligned polygons.

    Parameters
    ----------
    structure : bool array (ny, nx)
        Pixel structure, row 0 at the bottom.

    Returns
    -------
    Loops
        Corner vertices in pixel units (see `Loops`). The enclosed area (sum of signed
        areas, or the even-odd fill) equals the number of solid pixels. Solid pixels touching only
        at a corner belong to different loops that meet at that point.

    Notes
    -----
    Edge extraction is vectorized; every boundary edge's successor is read from the 2 x 2 pixels
    around its end vertex (turn left at a diagonal contact, so the solid stays 4-connected); loops
    and positions along them come from `_order_cycles`; only the corners (direction changes)
    are kept, so straight runs are single segments.
    """
    solid = _check_structure(structure)
    ex, ey, d, succ = _successors(solid)
    if len(d) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Loops(empty, empty, np.zeros(0, dtype=bool), np.zeros(1, dtype=np.int64))
    order, label, _ = _order_cycles(succ)
    corner = order[d[succ[order]] != d[order]]
    counts = np.bincount(label[corner], minlength=label.max() + 1)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return Loops(ex[corner], ey[corner], d[corner] % 2 == 0, offsets)


# --------------------------------------------------------------------------------------------------
# .npy


def write_npy(structure, path) -> Path:
    """Write the structure as a bool ``.npy`` array, row 0 at the bottom (as given).

    Parameters
    ----------
    structure : bool array (50 H, 50 W)
    path : str or PathLike
        Target file, ending in ``.npy``.

    Returns
    -------
    Path
        The written file.
    """
    solid = _check_structure(structure)
    path = _check_path(path, ".npy")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, solid, allow_pickle=False)
    return path


def read_npy(path) -> np.ndarray:
    """Read a structure written by `write_npy`: bool array (ny, nx), row 0 at the bottom."""
    path = _check_path(path)
    if not path.exists():
        raise FileFormatError(f"path: structure file {str(path)!r} does not exist")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise FileFormatError(f"path: {str(path)!r} could not be read as .npy: {exc}") from exc
    try:
        return _check_structure(arr, name=f"structure in {str(path)!r}")
    except (InvalidValueError, InvalidTypeError) as exc:
        raise FileFormatError(str(exc)) from None


# --------------------------------------------------------------------------------------------------
# .png


def write_png(structure, path, *, displacement=None, problem=None, deformed: bool = False, scale: float = 1.0,
              dpi: int = 150) -> Path:
    """Write an image of the structure, or with ``deformed=True`` a plot of its deformed shape.

    Parameters
    ----------
    structure : bool array (ny, nx)
        Row 0 at the bottom.
    path : str or PathLike
        Target file, ending in ``.png``.
    displacement : float array (ny + 1, nx + 1, 2), optional
        Full-scale fine-node displacement in macro units, NaN at nodes not in the model. Required
        with ``deformed=True``, ignored otherwise.
    problem : metasys.problems.Problem, optional
        With ``deformed=True``: its target displacements are drawn as markers at ``x + scale * u_t``
        of the target macro nodes (a component without a target uses the full-scale value there), with
        the full-scale displacement of the same nodes (nearest fine node of the model, as in
        DESIGN.md section 2) for comparison. Its grid must match the structure (``50 H, 50 W``).
    deformed : bool
        False: one image pixel per structure pixel, solid black (0) and void white (255), 8-bit gray,
        top image row = top of the structure (the convention of `metasys.io.save_cell`, so
        `metasys.io.load_cell` reads it back). True: a matplotlib figure (Agg) in macro units,
        equal aspect, y up: the solid pixels at their displaced positions (pixels with a node outside
        the model are left out), the undeformed outline in gray, and the targets (paper Fig. 16-17).
    scale : float
        Displacement magnification of the deformed plot (positions ``x + scale * u``).
    dpi : int
        Resolution of the deformed plot.

    Returns
    -------
    Path
        The written file.
    """
    solid = _check_structure(structure)
    path = _check_path(path, ".png")
    if not deformed:
        from PIL import Image

        image = np.where(solid[::-1], 0, 255).astype(np.uint8)
        with atomic_path(path) as tmp:
            Image.fromarray(image, mode="L").save(tmp, format="PNG")
        return path
    if displacement is None:
        raise InvalidValueError("displacement: deformed=True needs the fine-node displacement array "
                                f"{(solid.shape[0] + 1, solid.shape[1] + 1, 2)}, got None")
    u = _check_displacement(displacement, solid.shape)
    scale = _check_positive(scale, "scale")
    dpi = int(_check_positive(dpi, "dpi"))
    if problem is not None:
        _check_problem(problem, solid.shape)
    import matplotlib

    fig = _deformed_figure(solid, u, problem, scale, dpi)
    with atomic_path(path) as tmp, matplotlib.rc_context({"agg.path.chunksize": 20000}):
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def read_png(path) -> np.ndarray:
    """Read a structure image written by `write_png` (not deformed): bool array, row 0 at the bottom.

    Pixels darker than mid-gray are solid.
    """
    path = _check_path(path)
    if not path.exists():
        raise FileFormatError(f"path: image file {str(path)!r} does not exist")
    from PIL import Image

    try:
        with Image.open(path) as img:
            gray = np.asarray(img.convert("L"))
    except Exception as exc:
        raise FileFormatError(f"path: {str(path)!r} could not be read as .png: {exc}") from exc
    return gray[::-1] < 128


def _macro_node_values(u: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Displacement (k, 2) of the fine node with a finite value nearest to each macro node (k, 2) as (x, y)."""
    from scipy import ndimage

    finite = np.isfinite(u).all(axis=2)
    if not finite.any():
        return np.full((len(nodes), 2), np.nan)
    rows, cols = ndimage.distance_transform_edt(~finite, return_distances=False, return_indices=True)
    r, c = nodes[:, 1] * CELL_PIXELS, nodes[:, 0] * CELL_PIXELS
    return u[rows[r, c], cols[r, c]]


def _deformed_figure(solid: np.ndarray, u: np.ndarray, problem, scale: float, dpi: int):
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    ny, nx = solid.shape
    h = 1.0 / CELL_PIXELS
    finite = np.isfinite(u).all(axis=2)
    gy, gx = np.mgrid[0 : ny + 1, 0 : nx + 1] * h
    ux = np.where(finite, u[..., 0], 0.0) * scale
    uy = np.where(finite, u[..., 1], 0.0) * scale
    xd, yd = gx + ux, gy + uy
    node_ok = finite[:-1, :-1] & finite[1:, :-1] & finite[:-1, 1:] & finite[1:, 1:]
    shown = solid & node_ok

    width, height = nx * h, ny * h
    margin = 0.05 * max(width, height)
    fig_w = 10.0
    fig_h = float(np.clip(fig_w * (height + 2 * margin) / (width + 2 * margin), 2.0, 12.0)) + 1.5
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    # deformed solid: one quad per shown pixel at its displaced nodes (QuadMesh, drawn in C++)
    values = np.ma.masked_array(np.ones(solid.shape), mask=~shown)
    ax.pcolormesh(xd, yd, values, shading="flat", cmap="Blues", vmin=0.0, vmax=1.6, antialiased=False)
    handles = [Patch(color=matplotlib.colormaps["Blues"](1.0 / 1.6), label="deformed" + (f" (x{scale:g})" if scale != 1 else ""))]
    # undeformed outline
    loops = boundary_loops(solid)
    if len(loops.x):
        # one polyline, loops closed and separated by NaN: a single Path, far cheaper than a LineCollection
        starts = loops.offsets[:-1]
        lengths = np.diff(loops.offsets)
        at = np.arange(len(loops.x)) + 2 * np.repeat(np.arange(len(starts)), lengths)
        line = np.full((len(loops.x) + 2 * len(starts), 2), np.nan)
        line[at, 0], line[at, 1] = loops.x * h, loops.y * h
        close = loops.offsets[1:] + 2 * np.arange(len(starts))
        line[close] = line[at[starts]]
        handles += ax.plot(line[:, 0], line[:, 1], color="0.45", lw=0.4, label="undeformed")
    xs = [0.0, width, float(np.nanmin(xd)), float(np.nanmax(xd))]
    ys = [0.0, height, float(np.nanmin(yd)), float(np.nanmax(yd))]
    if problem is not None:
        nodes = problem.target_nodes
        key = nodes[:, 1] * (problem.width + 1) + nodes[:, 0]
        _, first, inv = np.unique(key, return_index=True, return_inverse=True)
        unodes = nodes[first]
        measured = _macro_node_values(u, unodes)
        target = np.where(np.isfinite(measured), measured, 0.0)
        target[inv, problem.target_components] = problem.target_values
        tx, ty = unodes[:, 0] + scale * target[:, 0], unodes[:, 1] + scale * target[:, 1]
        handles += ax.plot(tx, ty, "o", ms=4, mfc="none", mec="tab:red", mew=1.0, label="target", zorder=4)
        ok = np.isfinite(measured).all(axis=1)
        handles += ax.plot(unodes[ok, 0] + scale * measured[ok, 0], unodes[ok, 1] + scale * measured[ok, 1], ".", ms=3,
                color="black", label="full scale at target nodes", zorder=5)
        xs += [float(tx.min()), float(tx.max())]
        ys += [float(ty.min()), float(ty.max())]
    ax.set_xlim(min(xs) - margin, max(xs) + margin)
    ax.set_ylim(min(ys) - margin, max(ys) + margin)
    ax.set_aspect("equal")
    ax.set_xlabel("x (macro units)")
    ax.set_ylabel("y (macro units)")
    title = "deformed structure" + (f" (displacements x{scale:g})" if scale != 1 else "")
    if problem is not None:
        title += f" - {problem.name}"
    ax.set_title(title)
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    return fig


# --------------------------------------------------------------------------------------------------
# .svg


def write_svg(structure, path, *, pixel_size: float = 1.0, unit: str = "", fill: str = "black") -> Path:
    """Write the outline of the solid as one SVG ``<path>`` with ``fill-rule="evenodd"``.

    Parameters
    ----------
    structure : bool array (ny, nx)
        Row 0 at the bottom.
    path : str or PathLike
        Target file, ending in ``.svg``.
    pixel_size : float
        Side of one pixel in the document's length unit (default 1: one pixel = one user unit). The
        path coordinates are integer pixel corners (``viewBox="0 0 nx ny"``); ``width``/``height``
        are ``nx * pixel_size`` and ``ny * pixel_size``.
    unit : str
        Unit suffix of ``width``/``height`` (e.g. ``"mm"``; default none = user units / px).
    fill : str
        Fill colour of the solid.

    Returns
    -------
    Path
        The written file.

    Notes
    -----
    Outer boundaries and holes are closed polygons (see `boundary_loops`), straight runs merged.
    SVG's y axis points down, so a vertex at pixel corner ``(x, y)`` is written as ``(x, ny - y)``:
    the bottom row of the structure is at the bottom of the drawing.
    """
    solid = _check_structure(structure)
    path = _check_path(path, ".svg")
    pixel_size = _check_positive(pixel_size, "pixel_size")
    if not isinstance(unit, str) or unit not in ("", "px", "mm", "cm", "in", "pt", "pc"):
        raise InvalidValueError(f"unit: expected one of '', 'px', 'mm', 'cm', 'in', 'pt', 'pc', got {unit!r}")
    if not isinstance(fill, str) or not fill or any(ch in fill for ch in "\"<>&"):
        raise InvalidValueError(f"fill: expected an SVG colour such as 'black' or '#202020', got {fill!r}")
    ny, nx = solid.shape
    loops = boundary_loops(solid)
    d = _svg_path_data(loops, ny)
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{nx * pixel_size:.10g}{unit}" '
        f'height="{ny * pixel_size:.10g}{unit}" viewBox="0 0 {nx} {ny}">\n'
        f"<desc>metasys structure {ny} x {nx} pixels, pixel size {pixel_size:.10g}{unit or ' user units'}</desc>\n"
        f'<path fill="{fill}" fill-rule="evenodd" stroke="none" d="{d}"/>\n'
        "</svg>\n"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def _svg_path_data(loops: Loops, ny: int) -> str:
    m = len(loops.x)
    if m == 0:
        return ""
    code = np.where(loops.horizontal, 1, 2)
    code[loops.offsets[:-1]] = 0
    last = np.zeros(m, dtype=bool)
    last[loops.offsets[1:] - 1] = True
    parts = []
    for c, xv, yv, z in zip(code.tolist(), loops.x.tolist(), (ny - loops.y).tolist(), last.tolist()):
        s = f"M{xv} {yv}" if c == 0 else (f"H{xv}" if c == 1 else f"V{yv}")
        parts.append(s + "Z" if z else s)
    return "".join(parts)


# --------------------------------------------------------------------------------------------------
# .vtu


def write_vtu(structure, path, *, displacement=None, pixel_size: float = 1.0 / CELL_PIXELS, missing: str = "error",
              compress: bool = True) -> Path:
    """Write the solid pixels as a VTK unstructured quad mesh (``.vtu``, via meshio) for ParaView.

    Parameters
    ----------
    structure : bool array (ny, nx)
        Row 0 at the bottom.
    path : str or PathLike
        Target file, ending in ``.vtu``.
    displacement : float array (ny + 1, nx + 1, 2), optional
        Fine-node displacement in macro units (NaN at nodes not in the model). Written as point data
        ``displacement`` with 3 components (z = 0), converted to the mesh's length unit (multiplied by
        ``pixel_size * 50``; unchanged with the default pixel size). Use ParaView's "Warp By Vector".
    pixel_size : float
        Side of one pixel in the mesh's length unit (default ``1/50``: coordinates in macro units).
    missing : {"error", "nan", "drop"}
        What to do with solid pixels having a node without displacement (parts the full-scale model
        removed): raise `InvalidValueError`, write NaN there, or leave those pixels out.
    compress : bool
        zlib-compress the binary data blocks (about 3x smaller files, most of the write time).

    Returns
    -------
    Path
        The written file.

    Notes
    -----
    One VTK_QUAD per solid pixel, nodes counter-clockwise (bottom-left, bottom-right, top-right,
    top-left); points are the fine nodes used by solid pixels, shared between neighbours, at
    ``(c, r, 0) * pixel_size``. Cell data ``cell_index`` = ``j * W + i`` (macro element of the pixel,
    ``W = ceil(nx / 50)``). Points are ordered by flat fine-node index ``r * (nx + 1) + c``.
    """
    import meshio

    solid = _check_structure(structure)
    path = _check_path(path, ".vtu")
    pixel_size = _check_positive(pixel_size, "pixel_size")
    if missing not in ("error", "nan", "drop"):
        raise InvalidValueError(f"missing: expected 'error', 'nan' or 'drop', got {missing!r}")
    ny, nx = solid.shape
    u = None if displacement is None else _check_displacement(displacement, solid.shape)
    pr, pc = np.nonzero(solid)
    if u is not None:
        finite = np.isfinite(u).all(axis=2)
        ok = finite[pr, pc] & finite[pr, pc + 1] & finite[pr + 1, pc + 1] & finite[pr + 1, pc]
        if not ok.all():
            if missing == "error":
                raise InvalidValueError(f"displacement: {int((~ok).sum())} of {len(ok)} solid pixels have a node without a "
                                        "displacement (NaN: parts removed from the full-scale model); pass missing='nan' to "
                                        "write NaN there or missing='drop' to leave those pixels out")
            if missing == "drop":
                pr, pc = pr[ok], pc[ok]
    if len(pr) == 0:
        raise InvalidValueError(f"structure: expected at least one solid pixel to export, got none (shape {solid.shape})")
    stride = nx + 1
    corners = np.stack([pr * stride + pc, pr * stride + pc + 1, (pr + 1) * stride + pc + 1, (pr + 1) * stride + pc], axis=1)
    used = np.zeros((ny + 1) * stride, dtype=bool)
    used[corners.ravel()] = True
    nodes = np.flatnonzero(used)
    index_type = np.int32 if len(nodes) < 2**31 else np.int64
    cells = (np.cumsum(used, dtype=np.int64) - 1)[corners].astype(index_type)
    points = np.zeros((len(nodes), 3))
    points[:, 0] = (nodes % stride) * pixel_size
    points[:, 1] = (nodes // stride) * pixel_size
    width_cells = -(-nx // CELL_PIXELS)
    cell_data = {"cell_index": [((pr // CELL_PIXELS) * width_cells + pc // CELL_PIXELS).astype(index_type)]}
    point_data = {}
    if u is not None:
        disp = np.zeros((len(nodes), 3))
        disp[:, :2] = u.reshape(-1, 2)[nodes] * (pixel_size * CELL_PIXELS)
        point_data["displacement"] = disp
    mesh = meshio.Mesh(points, [("quad", cells)], point_data=point_data, cell_data=cell_data)
    with atomic_path(path) as tmp:
        meshio.write(tmp, mesh, file_format="vtu", compression="zlib" if compress else None)
    return path


# --------------------------------------------------------------------------------------------------
# .stl


def stl_triangles(structure, *, thickness: float = DEFAULT_THICKNESS, pixel_size: float = 1.0 / CELL_PIXELS,
                  corner_offset: float = DEFAULT_CORNER_OFFSET) -> np.ndarray:
    """Closed, consistently oriented triangle mesh of the solid extruded along z.

    Parameters
    ----------
    structure : bool array (ny, nx)
        Row 0 at the bottom; must have at least one solid pixel.
    thickness : float
        Extrusion height (z from 0 to ``thickness``), in the output length unit.
    pixel_size : float
        Side of one pixel in the output length unit (default ``1/50``: macro units).
    corner_offset : float
        At a diagonal contact the shared corner is split into one vertex per pixel, each moved this
        many pixels (in x and in y) towards its own pixel's centre; must lie in (0, 0.25).

    Returns
    -------
    float array (T, 3, 3)
        Triangles (vertex, xyz), counter-clockwise seen from outside (outward normals).

    Notes
    -----
    Top and bottom faces: each row run of solid pixels is one convex polygon whose two long sides
    carry every vertex needed by the neighbouring rows and walls (points where the row above or
    below changes between solid and void); it is triangulated as a zipper between its bottom and top
    chains. Horizontal walls are one quad per straight stretch between such vertices, vertical walls
    one quad per pixel side. Every edge is therefore shared by exactly two triangles (no T-junctions),
    and each is traversed once in each direction.
    """
    solid = _check_structure(structure)
    thickness = _check_positive(thickness, "thickness")
    pixel_size = _check_positive(pixel_size, "pixel_size")
    corner_offset = _check_positive(corner_offset, "corner_offset")
    if corner_offset >= 0.25:
        raise InvalidValueError(f"corner_offset: expected a number of pixels in (0, 0.25), got {corner_offset!r}")
    if not solid.any():
        raise InvalidValueError(f"structure: expected at least one solid pixel to export, got none (shape {solid.shape})")
    ny, nx = solid.shape
    p = np.pad(solid, 1)  # p[y + 1, x + 1] = solid[y, x]
    stride = nx + 1
    # vertices needed on horizontal line y (0..ny) at x (0..nx): the row above or below changes there
    need = (p[1:, :-1] != p[1:, 1:]) | (p[:-1, :-1] != p[:-1, 1:])
    ky, kx = np.nonzero(need)
    keys = ky * stride + kx  # sorted
    ne, nw, sw, se = p[1:, 1:], p[1:, :-1], p[:-1, :-1], p[:-1, 1:]
    saddle = (ne == sw) & (nw == se) & (ne != nw)  # (ny + 1, nx + 1)

    def xy(x, y, row, col):
        """Coordinates (n, 2) of vertex (x, y) as used by the solid pixel (row, col) touching it."""
        s = saddle[y, x] * corner_offset
        fx = x + np.where(col >= x, s, -s)
        fy = y + np.where(row >= y, s, -s)
        return np.stack([fx * pixel_size, fy * pixel_size], axis=1)

    tris = []  # each entry: (a, b, c) arrays (n, 2) of xy, plus z flags
    # top faces of row r: steps along the bottom chain (line r) and the top chain (line r + 1)
    i = np.nonzero((kx >= 1) & (ky < ny))[0]
    i = i[solid[np.minimum(ky[i], ny - 1), kx[i] - 1]]
    x, r = kx[i], ky[i]
    j = np.searchsorted(keys, (r + 1) * stride + x, side="left") - 1
    xp, xt = kx[i - 1], kx[j]
    tris.append((xy(xp, r, r, xp), xy(x, r, r, x - 1), xy(xt, r + 1, r, xt)))
    i = np.nonzero((kx >= 1) & (ky >= 1))[0]
    i = i[solid[ky[i] - 1, kx[i] - 1]]
    x, y = kx[i], ky[i]
    r = y - 1
    j = np.searchsorted(keys, r * stride + x, side="right") - 1
    xp, xb = kx[i - 1], kx[j]
    tris.append((xy(xb, r, r, np.where(xb < x, xb, x - 1)), xy(x, y, r, x - 1), xy(xp, y, r, xp)))
    face = [np.stack(t, axis=1) for t in tris]  # (n, 3, 2)
    face = np.concatenate(face)
    top = np.concatenate([face, np.full(face.shape[:2] + (1,), thickness)], axis=2)
    bottom = np.concatenate([face[:, ::-1], np.zeros(face.shape[:2] + (1,))], axis=2)

    # horizontal walls: consecutive needed vertices on a line with solid on exactly one side
    i = np.nonzero(ky[1:] == ky[:-1])[0] + 1
    xa, xb, y = kx[i - 1], kx[i], ky[i]
    above, below = p[y + 1, xa + 1], p[y, xa + 1]
    wall = above != below
    xa, xb, y, above = xa[wall], xb[wall], y[wall], above[wall]
    owner_row = np.where(above, y, y - 1)
    pa, pb = xy(xa, y, owner_row, xa), xy(xb, y, owner_row, xb - 1)
    start = np.where(above[:, None], pa, pb)
    end = np.where(above[:, None], pb, pa)
    walls = [(start, end)]
    # vertical walls: one per pixel side between a solid and a void pixel
    vy, vx = np.nonzero(p[1:-1, :-1] != p[1:-1, 1:])
    right = p[vy + 1, vx + 1]
    col = np.where(right, vx, vx - 1)
    p0, p1 = xy(vx, vy, vy, col), xy(vx, vy + 1, vy, col)
    walls.append((np.where(right[:, None], p1, p0), np.where(right[:, None], p0, p1)))
    start = np.concatenate([w[0] for w in walls])
    end = np.concatenate([w[1] for w in walls])
    z0 = np.zeros((len(start), 1))
    z1 = np.full((len(start), 1), thickness)
    s0, e0, s1, e1 = (np.concatenate(v, axis=1) for v in ((start, z0), (end, z0), (start, z1), (end, z1)))
    side = np.concatenate([np.stack([s0, e0, e1], axis=1), np.stack([s0, e1, s1], axis=1)])
    return np.concatenate([top, bottom, side])


def write_stl(structure, path, *, thickness: float = DEFAULT_THICKNESS, pixel_size: float = 1.0 / CELL_PIXELS,
              corner_offset: float = DEFAULT_CORNER_OFFSET) -> Path:
    """Write the solid extruded by ``thickness`` as a binary STL (numpy-stl) for 3D printing.

    Parameters
    ----------
    structure : bool array (ny, nx)
        Row 0 at the bottom; at least one solid pixel.
    path : str or PathLike
        Target file, ending in ``.stl``.
    thickness : float
        Extrusion height, in the STL length unit (default 0.1: a tenth of a cell side with the default
        pixel size).
    pixel_size : float
        Side of one pixel in the STL length unit (default ``1/50``: macro units, cell side 1). For a
        print in millimetres give e.g. ``pixel_size=0.2`` and ``thickness`` in mm.
    corner_offset : float
        Split of diagonal-contact corners, in pixels (see `stl_triangles`).

    Returns
    -------
    Path
        The written file (84 + 50 bytes per triangle).

    Notes
    -----
    The mesh is closed and 2-manifold, with outward normals (see `stl_triangles`); its volume
    is ``(number of solid pixels) * pixel_size**2 * thickness`` up to the corner splits (each removes
    about ``corner_offset`` times a pixel row run's length in pixel area).
    """
    from stl import Mode, mesh

    path = _check_path(path, ".stl")
    tri = stl_triangles(structure, thickness=thickness, pixel_size=pixel_size, corner_offset=corner_offset)
    data = np.zeros(len(tri), dtype=mesh.Mesh.dtype)
    data["vectors"] = tri
    m = mesh.Mesh(data, remove_empty_areas=False)
    with atomic_path(path) as tmp:
        m.save(str(tmp), mode=Mode.BINARY, update_normals=True)
    return path


# --------------------------------------------------------------------------------------------------
# dispatch


def export_structure(structure, path, *, displacement=None, problem=None, thickness: float = DEFAULT_THICKNESS,
                     pixel_size: float | None = None, deformed: bool = False, scale: float = 1.0,
                     missing: str = "error") -> Path:
    """Export a structure by the extension of ``path``.

    Parameters
    ----------
    structure : bool array (50 H, 50 W)
        Row 0 at the bottom (y up), column = x; pixel side 1/50 macro units.
    path : str or PathLike
        Target file; the suffix picks the format: ``.npy`` (`write_npy`), ``.png``
        (`write_png`), ``.svg`` (`write_svg`), ``.vtu`` (`write_vtu`) or ``.stl``
        (`write_stl`).
    displacement : float array (50 H + 1, 50 W + 1, 2), optional
        Full-scale fine-node displacement in macro units, NaN at nodes not in the model. Used by
        ``.vtu`` (point data) and the deformed ``.png``; ignored by the other formats.
    problem : metasys.problems.Problem, optional
        Targets drawn in the deformed ``.png``; ignored otherwise.
    thickness : float
        ``.stl`` extrusion height in the STL length unit (default 0.1 macro units).
    pixel_size : float, optional
        Side of one pixel in the output length unit. Default per format: ``.svg`` 1 (one pixel = one
        user unit), ``.vtu`` and ``.stl`` 1/50 (macro units). Not used by ``.npy`` and ``.png``.
    deformed : bool
        ``.png`` only: plot the deformed shape over the undeformed outline and the targets.
    scale : float
        Displacement magnification of the deformed ``.png``.
    missing : {"error", "nan", "drop"}
        ``.vtu`` with ``displacement``: what to do with solid pixels that have a node without
        displacement (parts removed from the full-scale model), see `write_vtu`.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    InvalidValueError
        Unsupported extension, ``deformed=True`` for a format other than ``.png``, bad shapes or values.
    InvalidTypeError
        Arguments of the wrong type.
    """
    path = _check_path(path)
    suffix = path.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise InvalidValueError(f"path: expected a file name ending in one of {', '.join(EXPORT_SUFFIXES)}, "
                                f"got {str(path)!r} (suffix {suffix or 'none'!r})")
    if deformed and suffix != ".png":
        raise InvalidValueError(f"deformed: only supported for .png exports, got deformed=True for {str(path)!r}")
    if suffix == ".npy":
        return write_npy(structure, path)
    if suffix == ".png":
        return write_png(structure, path, displacement=displacement, problem=problem, deformed=deformed, scale=scale)
    if suffix == ".svg":
        return write_svg(structure, path, pixel_size=1.0 if pixel_size is None else pixel_size)
    ps = 1.0 / CELL_PIXELS if pixel_size is None else pixel_size
    if suffix == ".vtu":
        return write_vtu(structure, path, displacement=displacement, pixel_size=ps, missing=missing)
    return write_stl(structure, path, thickness=thickness, pixel_size=ps)
