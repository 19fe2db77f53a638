"""Periodic homogenization of voxel microstructures (one trilinear HEX8 element per cubic voxel).

Conventions: voxel cells are arrays ``(N, nz, ny, nx)`` (x = last axis, y = middle, z = first); voxels are
cubes, so a cell with ``nx = ny = nz`` is a cube (taken of side 1: C does not depend on the size) and any
other grid is a box of ``nx x ny x nz`` cubic voxels (unlike the 2D pixels, which stretch to the unit
square). The homogenized stiffness (energy per unit volume) is the (6, 6) matrix of
``[s11, s22, s33, s23, s13, s12] = C @ [e11, e22, e33, g23, g13, g12]`` (Voigt order with engineering shear).

Method: for each of the six unit macro strains ``eps_k`` the periodic fluctuation ``chi_k`` solves
``K chi_k = -K u0_k`` on the torus of nodes (node 0 pinned: the rigid translations are the null space
of the periodic problem), and ``C_kl = sum_e (u0_k + chi_k)_e^T k_e (u0_l + chi_l)_e / n_voxels``. The
energy form makes the error of C second order in the error of an iterative solution. Because ``chi``
minimizes the energy, the derivative of C w.r.t. any element parameter needs no extra solve (the
problem is self-adjoint): ``dC_kl / dp_e = (u0_k + chi_k)_e^T (dk_e / dp_e) (u0_l + chi_l)_e / n_voxels``.

Solver (``solver="auto"``): sparse LU up to 2,000 unknowns (8^3 voxels), above it geometric multigrid
(`metasys.fem.voxel_mg`) preconditioning a block CG over the six load cases (pyamg's aggregation AMG for
grids that do not coarsen); see `metasys.fem.voxel_solver` and the measured comparison in ``docs/api/fem3d.md``.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import InvalidCellError, InvalidTypeError, InvalidValueError, describe
from ..material import Material
from .voxel_assembly import element_values, voxel_grid, weights_at_nodes
from .voxel_element import LAME_BASIS, affine_displacements_3d, lame, lame_derivatives
from .voxel_solver import check_method, voxel_solver

_CHUNK = 32768
"""Voxels per block of the element-energy sums (bounds their temporary memory to ~40 MB)."""


def as_voxels(cells, name: str = "cells", *, unit_interval: bool = True) -> np.ndarray:
    """Validate voxel fields and return floats of shape (N, nz, ny, nx) (a single (nz, ny, nx) field gets N = 1).

    ``unit_interval`` requires values in [0, 1] (densities); otherwise any finite values pass.
    """
    if isinstance(cells, (str, bytes)) or cells is None:
        raise InvalidTypeError(f"{name}: expected an array of shape (nz, ny, nx) or (N, nz, ny, nx), got {describe(cells)}")
    try:
        arr = np.asarray(cells)
    except Exception as exc:  # ragged lists and similar
        raise InvalidTypeError(f"{name}: expected an array of shape (N, nz, ny, nx), got {describe(cells)}") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InvalidTypeError(f"{name}: expected a numeric or bool array, got {describe(arr)}")
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or min(arr.shape[1:]) < 2 or arr.shape[0] == 0:
        raise InvalidCellError(f"{name}: expected shape (nz, ny, nx) or (N, nz, ny, nx) with sides >= 2 and N >= 1, "
                               f"got shape {arr.shape}")
    out = arr.astype(float)
    if not np.all(np.isfinite(out)):
        raise InvalidCellError(f"{name}: values must be finite")
    if unit_interval and (out.min() < 0.0 or out.max() > 1.0):
        raise InvalidCellError(f"{name}: densities must lie in [0, 1], got values in [{out.min()}, {out.max()}]")
    return out


def _periodic_solve(weights: np.ndarray, basis: np.ndarray, solver: str, rtol: float, energies: bool = True):
    """Solve one cell: weights (m, nz, ny, nx) of the element basis (m, 24, 24).

    Returns C (6, 6) and, with ``energies``, the element energies ``(u_k^T basis_q u_l)_e / n_voxels``
    (m, nz, ny, nx, 6, 6), i.e. ``dC / dweights`` (else None).
    """
    shape = weights.shape[1:]
    grid = voxel_grid(*shape)
    n = grid.n_nodes
    u0 = affine_displacements_3d()
    loads = np.einsum("qab,bk->qak", basis, u0).reshape(len(basis) * 8, 3 * 6)  # rows (q, a): node a's 3 x 6 block
    w_nodes = weights_at_nodes(weights).reshape(-1, n).T  # (n, m * 8)
    rhs = -(w_nodes @ loads).reshape(n, 3, 6)
    rhs[0] = 0.0  # pinned node
    # floor of the CG target: round-off of the (cancelling) element loads, e.g. of a homogeneous cell
    atol = 1e-14 * np.sqrt((w_nodes**2).sum() * (loads**2).sum() / 6.0)
    system = voxel_solver(grid, weights, basis, method=solver, rtol=rtol)
    chi = system.solve(rhs.reshape(3 * n, 6), atol)
    if not energies:
        # The same energy sum expanded over u0 + chi (so the same second-order error in chi), without the
        # 36 numbers per voxel: sum_e w_e u0^T k u0 + f^T chi + chi^T f + chi^T A chi with the element loads
        # f = -rhs (chi vanishes at the pinned node, where rhs and A differ from the unpinned ones).
        affine = np.einsum("q,ak,qab,bl->kl", weights.reshape(len(basis), n).sum(axis=1), u0, basis, u0)
        cross = rhs.reshape(3 * n, 6).T @ chi
        c = (affine - cross - cross.T + chi.T @ system.matvec(chi)) / n
        return 0.5 * (c + c.T), None
    chi = chi.reshape(*shape, 3, 6)
    out = np.empty((len(basis), n, 6, 6))
    for start in range(0, n, _CHUNK):
        block = slice(start, min(start + _CHUNK, n))
        v = element_values(chi).reshape(8, n, 3, 6)[:, block].transpose(1, 0, 2, 3).reshape(-1, 24, 6) + u0
        out[:, block] = np.einsum("eak,qab,ebl->qekl", v, basis, v, optimize=True) / n
    c = np.einsum("qe,qekl->kl", weights.reshape(len(basis), n), out)
    return 0.5 * (c + c.T), out.reshape(len(basis), *shape, 6, 6)


def _density_basis(material: Material) -> np.ndarray:
    """(1, 24, 24): the voxel stiffness for unit Young's modulus and the material's Poisson's ratio."""
    lam, mu = lame(1.0, material.nu)
    return (lam * LAME_BASIS[0] + mu * LAME_BASIS[1])[None]


def homogenize_voxels(cells, material: Material = Material(), *, solver: str = "auto", rtol: float = 1e-8) -> np.ndarray:
    """Homogenized 6 x 6 stiffness of voxel cells under periodic boundary conditions.

    Parameters
    ----------
    cells : array (nz, ny, nx) or (N, nz, ny, nx)
        Densities in [0, 1] (bool, 0/1 or float), x = last axis; cubic voxels.
    material : Material
        Base material: voxel modulus ``material.modulus(rho)`` (ersatz void ``E_void``, SIMP ``penal``),
        Poisson's ratio ``material.nu`` (3D isotropic; ``material.plane`` does not apply).
    solver : {"auto", "direct", "amg", "mg"}, keyword-only
        Linear solver (module docstring).
    rtol : float, keyword-only
        Relative residual of the AMG-CG solves (unused by the direct solver).

    Returns
    -------
    C : array (6, 6) for one cell or (N, 6, 6)
        Voigt order (11, 22, 33, 23, 13, 12) with engineering shear, in the units of ``material.E``.
    """
    c = homogenize_voxels_gradient(cells, material, solver=solver, rtol=rtol, gradient=False)[0]
    return c[0] if np.ndim(cells) == 3 else c


def homogenize_voxels_gradient(cells, material: Material = Material(), weights=None, *, solver: str = "auto",
                               rtol: float = 1e-8, gradient: bool = True):
    """Homogenized stiffness of voxel cells and its exact gradient w.r.t. every voxel's density.

    Parameters
    ----------
    cells : array (nz, ny, nx) or (N, nz, ny, nx)
        Densities in [0, 1].
    material : Material
    weights : array (6, 6), optional
        Return the gradient of the linear functional ``J = sum_kl weights_kl C_kl`` instead of the full
        ``dC`` (the full one is 36 numbers per voxel).
    solver, rtol : keyword-only
        See `homogenize_voxels`.
    gradient : bool, keyword-only
        False skips the gradient (returns None for it).

    Returns
    -------
    C : array (N, 6, 6)
    dC : array (N, nz, ny, nx, 6, 6), or (N, nz, ny, nx) with ``weights``
        ``dC[n, k, j, i] = d C[n] / d cells[n, k, j, i]`` (units of ``material.E`` per unit density).
    """
    check_method(solver)
    rho = as_voxels(cells)
    basis = _density_basis(material)
    moduli = material.modulus(rho)
    out_c = np.empty((len(rho), 6, 6))
    grads = np.empty(rho.shape + (() if weights is not None else (6, 6))) if gradient else None
    w = None if weights is None else _check_weights(weights)
    # cells on parallel threads (each has its own matrix and hierarchy; the kernels release the GIL)
    solved = map_cells(lambda m: _periodic_solve(m[None], basis, solver, rtol, gradient), moduli, rho[0].size)
    for i, (out_c[i], energies) in enumerate(solved):
        if gradient:
            d = energies[0] * material.modulus_derivative(rho[i])[..., None, None]
            grads[i] = d if w is None else np.einsum("...kl,kl->...", d, w)
    return out_c, grads


def homogenize_voxel_fields(E, nu, *, gradient: bool = False, weights=None, solver: str = "auto", rtol: float = 1e-8):
    """Homogenized stiffness of per-voxel isotropic (E, nu) fields, optionally with the gradient.

    Parameters
    ----------
    E : array (nz, ny, nx) or (N, nz, ny, nx)
        Young's modulus of every voxel (> 0), any units.
    nu : array, same shape
        Poisson's ratio of every voxel, in (-1, 0.5).
    gradient : bool, keyword-only
        Also return ``dC/dE`` and ``dC/dnu``.
    weights : array (6, 6), optional, keyword-only
        Gradients of ``J = sum_kl weights_kl C_kl`` instead of the full ``dC``.
    solver, rtol : keyword-only
        See `homogenize_voxels`.

    Returns
    -------
    C : array (N, 6, 6)
        In the units of E.
    dC_dE, dC_dnu : arrays (N, nz, ny, nx, 6, 6) (or (N, nz, ny, nx) with ``weights``); only with ``gradient``.
    """
    check_method(solver)
    e, v = as_moduli(E, nu)
    w = None if weights is None else _check_weights(weights)
    lam, mu = lame(e, v)
    (dl_de, dl_dnu), (dm_de, dm_dnu) = lame_derivatives(e, v)
    out_c = np.empty((len(e), 6, 6))
    shape = e.shape + (() if w is not None else (6, 6))
    grad_e, grad_nu = (np.empty(shape), np.empty(shape)) if gradient else (None, None)
    solved = map_cells(lambda i: _periodic_solve(np.stack([lam[i], mu[i]]), LAME_BASIS, solver, rtol, gradient),
                       range(len(e)), e[0].size)
    for i, (out_c[i], energies) in enumerate(solved):
        if gradient:
            if w is not None:
                energies = np.einsum("...kl,kl->...", energies, w)
            ex = (Ellipsis,) + (None,) * (energies.ndim - 4)
            grad_e[i] = energies[0] * dl_de[i][ex] + energies[1] * dm_de[i][ex]
            grad_nu[i] = energies[0] * dl_dnu[i][ex] + energies[1] * dm_dnu[i][ex]
    return (out_c, grad_e, grad_nu) if gradient else out_c


CELL_THREADS = None
"""Cells of a batch solved at once on this many threads (None: one per core this process may use; 1: one after the
other); results do not depend on it (the kernels are serial and release the GIL, each thread solves whole cells).

Measured on the 2-core machine (AMD EPYC, 2026-12-08, four two-phase 32^3 cells, four runs each): idle, 1 thread
1.16-1.31 s per cell, 2 threads 0.72-0.83 s; beside a busy-loop process, 1.24-1.49 s against 0.99-1.18 s. On a
machine at load 9.5-11.5 (no second core to be had) the two were equal (5.0-5.4 s per cell)."""

_THREAD_VOXELS = 50**3
"""Cells above this many voxels are solved one at a time (memory of the hierarchies)."""


def as_moduli(E, nu) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel Young's moduli and Poisson's ratios as (N, nz, ny, nx) float arrays, checked (E > 0, nu in (-1, 0.5))."""
    e = as_voxels(E, "E", unit_interval=False)
    v = as_voxels(nu, "nu", unit_interval=False)
    if v.shape != e.shape:
        raise InvalidValueError(f"nu: expected the shape of E {np.shape(E)}, got {describe(nu)}")
    if np.any(e <= 0):
        raise InvalidValueError("E: every voxel's Young's modulus must be finite and > 0")
    if np.any(v <= -1.0) or np.any(v >= 0.5):
        raise InvalidValueError("nu: every voxel's Poisson's ratio must lie in (-1, 0.5)")
    return e, v


def cell_threads() -> int:
    """Threads `map_cells` uses: `CELL_THREADS`, or the number of cores this process may run on when it is None."""
    if CELL_THREADS is not None:
        return int(CELL_THREADS)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def map_cells(fn, items, voxels: int):
    """``fn`` over ``items`` in order, on up to `cell_threads` threads for cells of ``voxels`` voxels (a generator)."""
    items = list(items)
    threads = cell_threads()
    if threads <= 1 or len(items) <= 1 or voxels > _THREAD_VOXELS:
        yield from map(fn, items)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        yield from pool.map(fn, items)


def _check_weights(weights) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    if w.shape != (6, 6) or not np.all(np.isfinite(w)):
        raise InvalidValueError(f"weights: expected a finite array of shape (6, 6), got {describe(weights)}")
    return w
