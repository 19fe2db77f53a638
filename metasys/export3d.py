"""Exports of voxel structures (3D cells, 3D composite samples): ``.vtu`` for ParaView and ``.stl`` of the solid.

Conventions: a voxel array ``v[k, r, c]`` of shape (nz, ny, nx) has layer ``k`` along z, row ``r`` along y and
column ``c`` along x (x is the last axis, row 0 at the bottom, as `metasys.fem.homogenize` and
`metasys.composites` use for voxels). Voxel (k, r, c) covers ``[c, c+1] x [r, r+1] x [k, k+1] * voxel_size``;
the default ``voxel_size = 1 / max(nz, ny, nx)`` puts the structure in the unit cube. The 2D pixel exports are
in `metasys.pipeline.export`.

Every file is written to a temporary name and renamed (`metasys.io.atomic_path`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InvalidValueError, describe
from .io import atomic_path

__all__ = ["voxel_surface", "write_voxel_stl", "write_voxel_vtu"]

# VTK_HEXAHEDRON node order: the bottom face (z = k) counter-clockwise seen from +z, then the top face (z = k + 1)
_HEX = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]])  # (x, y, z)


def _check_path(path, suffix: str) -> Path:
    path = Path(path)
    if path.suffix.lower() != suffix:
        raise InvalidValueError(f"path: expected a file ending in {suffix}, got {str(path)!r}")
    return path


def _voxel_size(voxel_size, shape) -> float:
    h = 1.0 / max(shape) if voxel_size is None else voxel_size
    if isinstance(h, bool) or not isinstance(h, (int, float, np.floating, np.integer)) or not (np.isfinite(h) and h > 0):
        raise InvalidValueError(f"voxel_size: expected a positive length, got {describe(voxel_size)}")
    return float(h)


def _channels(fields, names) -> dict[str, np.ndarray]:
    """``{name: (nz, ny, nx) float}`` from a (nz, ny, nx) array, a (k, nz, ny, nx) stack or a dict of arrays."""
    if isinstance(fields, dict):
        out = {str(k): np.asarray(v) for k, v in fields.items()}
    else:
        arr = np.asarray(fields)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4:
            raise InvalidValueError(f"fields: expected voxel data (nz, ny, nx), a stack (k, nz, ny, nx) or a dict of "
                                    f"(nz, ny, nx) arrays, got {describe(fields)}")
        names = [f"field{i}" for i in range(len(arr))] if names is None else list(names)
        if len(names) != len(arr):
            raise InvalidValueError(f"names: expected {len(arr)} channel names, got {len(names)}")
        out = dict(zip(names, arr))
    if not out:
        raise InvalidValueError("fields: expected at least one channel, got none")
    shapes = {v.shape for v in out.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3 or min(next(iter(shapes))) < 1:
        raise InvalidValueError(f"fields: expected channels of one voxel shape (nz, ny, nx), got shapes {sorted(shapes)}")
    for name, v in out.items():
        if not (np.issubdtype(v.dtype, np.number) or v.dtype == bool):
            raise InvalidValueError(f"fields: channel {name!r} expected numbers, got dtype {v.dtype}")
    return {k: v.astype(np.int8 if v.dtype == bool else float) for k, v in out.items()}


def write_voxel_vtu(fields, path, *, names=None, voxel_size: float | None = None, keep=None,
                    compress: bool = True) -> Path:
    """Write voxels as a VTK unstructured hexahedron mesh (``.vtu``, via meshio) with one cell-data array per channel.

    Parameters
    ----------
    fields : array (nz, ny, nx), array (k, nz, ny, nx) or dict of name -> (nz, ny, nx)
        Per-voxel values (e.g. a composite sample's (E [GPa], nu, rho [g/cm^3]) or a cell's densities).
    path : str or PathLike
        Target file, ending in ``.vtu``.
    names : list of str, optional
        Channel names of an array ``fields`` (default ``field0``, ``field1``, ...; ``E``, ``nu``, ``rho`` suit a
        composite sample).
    voxel_size : float, optional
        Edge of one voxel in the mesh's length unit (default ``1 / max(nz, ny, nx)``: the unit cube).
    keep : bool array (nz, ny, nx), optional
        Voxels to write (default all), e.g. the solid of a binary cell.
    compress : bool
        zlib-compress the binary data blocks.

    Returns
    -------
    Path
        The written file.

    Notes
    -----
    One VTK_HEXAHEDRON per kept voxel, in flat voxel order (x fastest); points are the grid nodes the kept voxels
    use, shared between neighbours, at ``(c, r, k) * voxel_size``. Cell data ``voxel_index`` holds each cell's flat
    index ``(k * ny + r) * nx + c``, so a reader can put the values back on the grid.
    """
    import meshio

    data = _channels(fields, names)
    path = _check_path(path, ".vtu")
    shape = next(iter(data.values())).shape
    h = _voxel_size(voxel_size, shape)
    keep = np.ones(shape, dtype=bool) if keep is None else np.asarray(keep)
    if keep.shape != shape or keep.dtype != bool:
        raise InvalidValueError(f"keep: expected a bool array of the voxel shape {shape}, got {describe(keep)}")
    flat = np.flatnonzero(keep)
    if len(flat) == 0:
        raise InvalidValueError("keep: expected at least one voxel to write, got none")
    nz, ny, nx = shape
    k, r, c = np.unravel_index(flat, shape)
    # node (x, y, z) of the (nz + 1, ny + 1, nx + 1) grid has flat index (z * (ny + 1) + y) * (nx + 1) + x
    corner = np.stack([((k + dz) * (ny + 1) + r + dy) * (nx + 1) + c + dx for dx, dy, dz in _HEX], axis=1)
    used = np.zeros((nz + 1) * (ny + 1) * (nx + 1), dtype=bool)
    used[corner.ravel()] = True
    nodes = np.flatnonzero(used)
    cells = (np.cumsum(used, dtype=np.int64) - 1)[corner]
    z, y, x = np.unravel_index(nodes, (nz + 1, ny + 1, nx + 1))
    points = np.stack([x, y, z], axis=1) * h
    cell_data = {name: [v.ravel()[flat]] for name, v in data.items()}
    cell_data["voxel_index"] = [flat.astype(np.int64)]
    mesh = meshio.Mesh(points, [("hexahedron", cells)], cell_data=cell_data)
    with atomic_path(path) as tmp:
        meshio.write(tmp, mesh, file_format="vtu", compression="zlib" if compress else None)
    return path


def voxel_surface(solid, *, voxel_size: float | None = None, level: float = 0.5) -> np.ndarray:
    """Closed triangle surface (T, 3, 3) of the solid phase by marching cubes (scikit-image), outward normals.

    Parameters
    ----------
    solid : array (nz, ny, nx)
        Bool mask or densities in [0, 1] (1 = solid); at least one voxel must exceed ``level``.
    voxel_size : float, optional
        Edge of one voxel (default ``1 / max(nz, ny, nx)``: the unit cube).
    level : float
        Iso-value between void (0) and solid (1).

    Returns
    -------
    float array (T, 3, 3)
        Triangles (vertex, xyz), counter-clockwise seen from outside.

    Notes
    -----
    The voxels are padded by one void layer so that the surface closes where the solid touches the box; with a
    bool mask and ``level = 0.5`` the surface crosses every solid-void voxel pair half way, i.e. on the shared voxel
    face, so the bounding box is exact and only edges and corners are cut (a solid n^3 cube loses a prism of
    cross-section h^2 / 8 along each of its 12 edges and gets 1/12 h^3 back at each corner: volume
    ``(n^3 - 3 n / 2 + 2 / 3) h^3``).
    """
    from skimage.measure import marching_cubes

    arr = np.asarray(solid)
    if arr.ndim != 3 or min(arr.shape, default=0) < 1 or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InvalidValueError(f"solid: expected a voxel mask or densities (nz, ny, nx), got {describe(solid)}")
    arr = arr.astype(float)
    if not np.all(np.isfinite(arr)):
        raise InvalidValueError("solid: expected finite densities, got NaN or inf")
    if not (0.0 < level < 1.0):
        raise InvalidValueError(f"level: expected an iso-value in (0, 1), got {describe(level)}")
    if not (arr > level).any():
        raise InvalidValueError(f"solid: expected at least one voxel above level {level}, got none (shape {arr.shape})")
    h = _voxel_size(voxel_size, arr.shape)
    verts, faces, _, _ = marching_cubes(np.pad(arr, 1), level=level, allow_degenerate=False)
    # padded index i is voxel i - 1, whose centre lies at (i - 0.5) h; verts come in (z, y, x) order. Swapping x
    # and z mirrors the mesh, which reverses scikit-image's winding (inward in (z, y, x)) to outward in (x, y, z)
    return ((verts[:, ::-1] - 0.5) * h)[faces]


def write_voxel_stl(solid, path, *, voxel_size: float | None = None, level: float = 0.5) -> Path:
    """Write the surface of the solid phase (`voxel_surface`) as a binary STL (numpy-stl).

    Parameters
    ----------
    solid : array (nz, ny, nx)
        Bool mask or densities in [0, 1]; for a composite sample, its particle mask.
    path : str or PathLike
        Target file, ending in ``.stl``.
    voxel_size, level : float
        See `voxel_surface`; the STL length unit is that of ``voxel_size`` (default: the unit cube).

    Returns
    -------
    Path
        The written file (84 + 50 bytes per triangle).
    """
    from stl import Mode, mesh

    path = _check_path(path, ".stl")
    tri = voxel_surface(solid, voxel_size=voxel_size, level=level)
    data = np.zeros(len(tri), dtype=mesh.Mesh.dtype)
    data["vectors"] = tri
    with atomic_path(path) as tmp:
        mesh.Mesh(data, remove_empty_areas=False).save(str(tmp), mode=Mode.BINARY, update_normals=True)
    return path
