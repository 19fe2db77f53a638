"""Bulk modulus of a voxel (E, nu) field under affine boundary displacements, with its adjoint gradient.

The sample is ``nz x ny x nx`` unit voxels, one HEX8 element each, isotropic. Every node on the outer
boundary is displaced affinely, ``u(x) = x`` (``e11 = e22 = e33 = 1``, no shear: Hill's linear
displacement boundary condition); the interior nodes are solved for. With voxel averages ``<.>`` (a
voxel's average strain and stress are its centre values, exactly, for the trilinear element),

    K = (<s11> + <s22> + <s33>) / 3 / (<e11> + <e22> + <e33>) = <tr sigma> / 9,

since ``<e11> = <e22> = <e33> = 1`` by the average-strain theorem. Per voxel ``tr sigma = 3 K_e tr eps``
with ``K_e = lam + 2 mu / 3``, so a homogeneous sample gives ``K = E / (3 (1 - 2 nu))`` exactly. Units: K in
the units of E.

Assembly: the nodes of the sample are those of a periodic ``(nz + 1) x (ny + 1) x (nx + 1)`` voxel torus
whose last voxel layer on every axis has zero stiffness (so nothing couples across the wrap), with all
boundary nodes prescribed; this reuses the periodic stencil assembly of `metasys.fem.voxel_assembly`.

Gradient (implicit differentiation): with ``A w = b`` for the interior unknowns and
``lam_adj = A^-1 dK/dw``, ``dK/dp_e = dK/dp_e|explicit - lam_adj_e^T (dk_e/dp_e) u_e`` for ``p`` = the Lame
parameters (``u_e`` the voxel's total nodal displacements), then the chain rule to E and nu. The adjoint
right-hand side ``dK/dw`` does not depend on the solution, so the forward and the adjoint systems (same
matrix) are solved together as one block of two (one factorization or multigrid hierarchy, shared
stencil products). The open box is coarsened as a torus of odd side whose last voxel layer is empty.
"""

from __future__ import annotations

import numpy as np

from .voxel import as_moduli, map_cells
from .voxel_assembly import element_values, stencil_blocks, voxel_grid, weights_at_nodes
from .voxel_element import CENTRE_B, LAME_BASIS, lame, lame_derivatives
from .voxel_solver import check_method, voxel_solver

_TRACE_ROW = CENTRE_B[:3].sum(axis=0)  # (24,): e11 + e22 + e33 of a voxel from its nodal displacements


def _padded(field: np.ndarray) -> np.ndarray:
    """A (nz, ny, nx) voxel field padded with one zero layer at the end of every axis."""
    return np.pad(field, [(0, 1)] * 3)


def _solve_one(lam: np.ndarray, mu: np.ndarray, gradient: bool, solver: str, rtol: float):
    """K and, with ``gradient``, dK/dlam and dK/dmu (nz, ny, nx) of one field of Lame parameters."""
    shape = lam.shape
    n_vox = lam.size
    padded = (shape[0] + 1, shape[1] + 1, shape[2] + 1)
    grid = voxel_grid(*padded)
    weights = np.stack([_padded(lam), _padded(mu)])
    idx = np.indices(padded).reshape(3, -1)  # (z, y, x) of every node
    fixed = np.any((idx == 0) | (idx == np.array(shape)[:, None]), axis=0)
    u_fixed = np.where(fixed[:, None], idx[::-1].T, 0.0)  # u = x (components x, y, z) on the boundary
    # right-hand side -A_full u_fixed on the interior: assemble without constraints for the product
    full = grid.assemble(weights, stencil_blocks(LAME_BASIS), np.zeros(grid.n_nodes, bool))
    load = full @ u_fixed.ravel()
    rhs = -load
    rhs.reshape(-1, 3)[fixed] = 0.0
    sol = voxel_solver(grid, weights, LAME_BASIS, fixed, (True, True, True), solver, rtol)
    k_nodes = weights_at_nodes(_padded(lam + 2.0 * mu / 3.0)).reshape(8, -1).T
    if gradient:
        # dK/du at the nodes (independent of u): sum over the voxels holding a node of K_e * trace row / (3 n);
        # the adjoint system has the same matrix, so it is solved together with the forward one
        g = (k_nodes @ _TRACE_ROW.reshape(8, 3)).ravel() / (3.0 * n_vox)
        g.reshape(-1, 3)[fixed] = 0.0
        both = sol.solve(np.stack([rhs, g], axis=1), np.array([1e-14 * np.linalg.norm(load), 1e-14 * np.linalg.norm(g)]))
        w, adj = both[:, 0], both[:, 1].reshape(*padded, 3)
    else:
        w = sol.solve(rhs[:, None], 1e-14 * np.linalg.norm(load))[:, 0]
    u = (w.reshape(-1, 3) + u_fixed).reshape(*padded, 3)
    u_e = element_values(u)[:, : shape[0], : shape[1], : shape[2]]  # (8, nz, ny, nx, 3)
    u_e = np.moveaxis(u_e, 0, -2).reshape(n_vox, 24)
    trace = u_e @ _TRACE_ROW  # (n_vox,)
    k_e = (lam + 2.0 * mu / 3.0).ravel()
    k = np.dot(k_e, trace) / (3.0 * n_vox)
    if not gradient:
        return k, None, None
    adj_e = np.moveaxis(element_values(adj)[:, : shape[0], : shape[1], : shape[2]], 0, -2).reshape(n_vox, 24)
    implicit = np.einsum("ea,qab,eb->qe", adj_e, LAME_BASIS, u_e, optimize=True)
    dk_dlam = trace / (3.0 * n_vox) - implicit[0]
    dk_dmu = 2.0 * trace / (9.0 * n_vox) - implicit[1]
    return k, dk_dlam.reshape(shape), dk_dmu.reshape(shape)


def affine_bulk_modulus_3d(E, nu, *, gradient: bool = False, solver: str = "auto", rtol: float = 1e-10):
    """Bulk modulus of voxel (E, nu) fields under the affine boundary displacement ``u = x`` (module docstring).

    Parameters
    ----------
    E : array (nz, ny, nx) or (n, nz, ny, nx)
        Young's modulus of every voxel (> 0), x = last axis.
    nu : array, same shape
        Poisson's ratio of every voxel, in (-1, 0.5).
    gradient : bool, keyword-only
        Also return ``dK/dE`` and ``dK/dnu``.
    solver : {"auto", "direct", "amg", "mg"}, keyword-only
        Linear solver (`metasys.fem.voxel_solver`).
    rtol : float, keyword-only
        Relative residual of the AMG-CG solves.

    Returns
    -------
    K : float (single field) or array (n,)
        In the units of E.
    dK_dE, dK_dnu : arrays shaped like E (None without ``gradient``).
    """
    check_method(solver)
    e, v = as_moduli(E, nu)
    lam, mu = lame(e, v)
    out = list(map_cells(lambda i: _solve_one(lam[i], mu[i], gradient, solver, rtol), range(len(e)), e[0].size))
    k = np.array([o[0] for o in out])
    single = np.ndim(E) == 3
    if not gradient:
        return (k[0] if single else k), None, None
    (dl_de, dl_dnu), (dm_de, dm_dnu) = lame_derivatives(e, v)
    dk_dlam = np.stack([o[1] for o in out])
    dk_dmu = np.stack([o[2] for o in out])
    ge = dk_dlam * dl_de + dk_dmu * dm_de
    gn = dk_dlam * dl_dnu + dk_dmu * dm_dnu
    return (k[0], ge[0], gn[0]) if single else (k, ge, gn)
