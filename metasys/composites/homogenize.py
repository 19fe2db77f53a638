"""Bulk modulus of a per-pixel (E, nu) field under affine boundary displacements, with its adjoint gradient.

The sample is a grid of ``ny x nx`` square pixels, one bilinear Q4 element each, isotropic and in
plane stress. Every node on the outer boundary is displaced affinely, ``u(x) = x`` (``e11 = e22 = 1``,
``e12 = 0``: Hill/Huet linear displacement boundary conditions); the interior nodes are solved for.
With element averages ``<.>`` over the sample (each element's average strain and stress are its
centre values, exactly, for a square Q4 element),

    K = (<s11> + <s22>) / 3 / (<e11> + <e22> + <e33>),    e33 = -nu / (1 - nu) (e11 + e22) per pixel,

so that a homogeneous sample gives ``K = E / (3 (1 - 2 nu))`` exactly (the paper's convention: its
2D values reach about 332 for E <= 500). Per pixel ``s11 + s22 = E / (1 - nu) (e11 + e22)``; by the
average-strain theorem ``<e11> = <e22> = 1``. Units: K in the units of E (GPa for the material table).

The element stiffness is ``kappa k_vol + mu k_dev`` with the plane-stress area modulus
``kappa = E / (2 (1 - nu))`` and the shear modulus ``mu = E / (2 (1 + nu))``. The linear system of the
interior unknowns (pattern fixed per grid shape, nested-dissection order computed once) is factored
by SuperLU (``scipy.sparse.linalg.splu``, no pivoting: the matrix is symmetric positive definite);
the forward and both adjoint right-hand sides are solved with the same factor. The gradient is exact
(implicit differentiation): with ``A w = b`` and ``lam = A^{-1} dK/dw``,
``dK/dkappa_e = -lam_e . k_vol u_e``, ``dK/dmu_e = -lam_e . k_dev u_e`` plus the explicit terms.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from ..errors import InvalidValueError, SolverError, describe
from ..fem.element import element_stiffness, strain_displacement

_C_VOL = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
_C_DEV = np.array([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def _nested_dissection(rows: range, cols: range, out: list) -> None:
    """Append the (row, col) nodes of a rectangle in nested-dissection order (separators last)."""
    if len(rows) * len(cols) <= 16:
        out.extend((r, c) for r in rows for c in cols)
    elif len(rows) >= len(cols):
        m = len(rows) // 2
        _nested_dissection(rows[:m], cols, out)
        _nested_dissection(rows[m + 1:], cols, out)
        out.extend((rows[m], c) for c in cols)
    else:
        m = len(cols) // 2
        _nested_dissection(rows, cols[:m], out)
        _nested_dissection(rows, cols[m + 1:], out)
        out.extend((r, cols[m]) for r in rows)


class _Grid:
    """Everything about an ny x nx pixel grid that does not depend on the moduli (built once per shape)."""

    def __init__(self, ny: int, nx: int):
        self.shape = (ny, nx)
        n_el = ny * nx
        k_vol, k_dev = element_stiffness(_C_VOL), element_stiffness(_C_DEV)
        b_c = strain_displacement(1.0, 1.0, 0.0, 0.0)
        self.k_vol, self.k_dev = k_vol, k_dev
        self.trace_row = b_c[0] + b_c[1]  # (8,): e11 + e22 at the element centre
        r, c = np.divmod(np.arange(n_el), nx)
        node = lambda y, x: y * (nx + 1) + x  # noqa: E731
        nodes = np.stack([node(r, c), node(r, c + 1), node(r + 1, c + 1), node(r + 1, c)], axis=1)
        edof = np.stack([2 * nodes, 2 * nodes + 1], axis=2).reshape(n_el, 8)
        # affine displacement u = x of each element's nodes (pixel units: strain 1)
        xy = np.stack([c, r], axis=1)[:, None, :] + np.array([[0, 0], [1, 0], [1, 1], [0, 1]])[None]
        self.u_affine = xy.reshape(n_el, 8).astype(float)
        # unknowns: interior nodes, nested-dissection order
        order = []
        _nested_dissection(range(1, ny), range(1, nx), order)
        n_free = 2 * len(order)
        where = np.full(2 * (ny + 1) * (nx + 1), n_free)  # boundary dofs -> a zero slot
        for k, (y, x) in enumerate(order):
            where[2 * node(y, x)] = 2 * k
            where[2 * node(y, x) + 1] = 2 * k + 1
        self.n_free = n_free
        self.edof_free = where[edof]  # (n_el, 8) into the unknown vector extended by a zero slot
        # sparse pattern of A (upper and lower) and the maps moduli -> CSC data
        ii = np.repeat(self.edof_free, 8, axis=1).ravel()
        jj = np.tile(self.edof_free, (1, 8)).ravel()
        ee = np.repeat(np.arange(n_el), 64)
        keep = (ii < n_free) & (jj < n_free)
        ii, jj, ee = ii[keep], jj[keep], ee[keep]
        vol = np.tile(k_vol.ravel(), n_el)[keep]
        dev = np.tile(k_dev.ravel(), n_el)[keep]
        pattern = sp.csc_matrix((np.ones(len(ii)), (ii, jj)), shape=(n_free, n_free))
        pattern.sum_duplicates()
        pattern.sort_indices()
        self.indices, self.indptr = pattern.indices.astype(np.int32), pattern.indptr.astype(np.int32)
        # slot of each (i, j) entry in the CSC data array (keys sorted column-major, as CSC stores them)
        key = jj.astype(np.int64) * n_free + ii
        pkey = np.repeat(np.arange(n_free, dtype=np.int64), np.diff(self.indptr)) * n_free + self.indices
        slot = np.searchsorted(pkey, key)
        nnz = len(self.indices)
        self.m_vol = sp.csr_matrix((vol, (slot, ee)), shape=(nnz, n_el))
        self.m_dev = sp.csr_matrix((dev, (slot, ee)), shape=(nnz, n_el))
        # right-hand side: -(A u_affine) on the unknowns; only k_vol acts on the affine field
        q = (k_vol @ self.u_affine.T).T  # (n_el, 8)
        rows, keep_q = self.edof_free.ravel(), self.edof_free.ravel() < n_free
        self.m_rhs = sp.csr_matrix((-q.ravel()[keep_q], (rows[keep_q], np.repeat(np.arange(n_el), 8)[keep_q])),
                                   shape=(n_free, n_el))
        # trace of the fluctuation's centre strain: tr_e = 2 + T w
        t = np.tile(self.trace_row, n_el)
        self.m_trace = sp.csr_matrix((t[keep_q], (np.repeat(np.arange(n_el), 8)[keep_q], rows[keep_q])),
                                     shape=(n_el, n_free))
        self.m_trace_t = self.m_trace.T.tocsr()


@lru_cache(maxsize=4)
def _grid(ny: int, nx: int) -> _Grid:
    return _Grid(ny, nx)


def _check(E, nu):
    E = np.asarray(E, dtype=float)
    nu = np.asarray(nu, dtype=float)
    if E.ndim not in (2, 3) or min(E.shape[-2:]) < 2 or E.size == 0:
        raise InvalidValueError(f"E: expected a field (ny, nx) or a batch (n, ny, nx), got {describe(E)}")
    if nu.shape != E.shape:
        raise InvalidValueError(f"nu: expected the shape of E {E.shape}, got {describe(nu)}")
    if not (np.all(np.isfinite(E)) and np.all(E > 0)):
        raise InvalidValueError("E: every pixel's Young's modulus must be finite and > 0")
    if not (np.all(np.isfinite(nu)) and np.all(nu > 0) and np.all(nu < 0.5)):
        raise InvalidValueError("nu: every pixel's Poisson's ratio must lie in (0, 0.5)")
    return E, nu


def _solve_one(grid: _Grid, E: np.ndarray, nu: np.ndarray, gradient: bool):
    """K (scalar) and, with ``gradient``, dK/dE and dK/dnu (ny*nx,) for one flat field."""
    n_el = E.size
    kappa = E / (2.0 * (1.0 - nu))
    mu = E / (2.0 * (1.0 + nu))
    data = grid.m_vol @ kappa + grid.m_dev @ mu
    a = sp.csc_matrix((data, grid.indices, grid.indptr), shape=(grid.n_free, grid.n_free))
    try:
        lu = splu(a, permc_spec="NATURAL", relax=16, panel_size=8,
                  options={"SymmetricMode": True, "DiagPivotThresh": 0.0})
    except RuntimeError as exc:
        raise SolverError(f"bulk_modulus: the stiffness matrix is singular ({exc})") from None
    a_e = 2.0 * kappa  # E / (1 - nu)
    c_e = (1.0 - 2.0 * nu) / (1.0 - nu)
    rhs = grid.m_rhs @ kappa
    if gradient:
        rhs = np.column_stack([rhs, grid.m_trace_t @ (a_e / n_el), grid.m_trace_t @ (c_e / n_el)])
    sol = lu.solve(rhs)
    w = sol[:, 0] if gradient else sol
    trace = 2.0 + grid.m_trace @ w
    num = np.dot(a_e, trace) / n_el
    den = np.dot(c_e, trace) / n_el
    k = num / (3.0 * den)
    if not gradient:
        return k, None, None
    dk_dnum, dk_dden = 1.0 / (3.0 * den), -num / (3.0 * den**2)
    lam = dk_dnum * sol[:, 1] + dk_dden * sol[:, 2]
    lam_e = np.append(lam, 0.0)[grid.edof_free]
    u_e = grid.u_affine + np.append(w, 0.0)[grid.edof_free]
    dk_dkappa = -np.einsum("ea,ab,eb->e", lam_e, grid.k_vol, u_e, optimize=True)
    dk_dmu = -np.einsum("ea,ab,eb->e", lam_e, grid.k_dev, u_e, optimize=True)
    dk_da = dk_dnum * trace / n_el
    dk_dc = dk_dden * trace / n_el
    one_m, one_p = 1.0 - nu, 1.0 + nu
    dk_dE = dk_dkappa / (2 * one_m) + dk_dmu / (2 * one_p) + dk_da / one_m
    dk_dnu = dk_dkappa * E / (2 * one_m**2) - dk_dmu * E / (2 * one_p**2) + dk_da * E / one_m**2 - dk_dc / one_m**2
    return k, dk_dE, dk_dnu


def bulk_modulus(E, nu, *, dim: int = 2) -> np.ndarray:
    """Bulk modulus K of per-pixel (E, nu) fields (module docstring for the definition).

    Parameters
    ----------
    E : array (ny, nx) or (n, ny, nx); with ``dim=3`` (nz, ny, nx) or (n, nz, ny, nx)
        Young's modulus of each pixel/voxel (> 0; GPa for the material table). Row 0 is the bottom row;
        x = last axis.
    nu : array, same shape
        Poisson's ratio of each pixel, in (0, 0.5).
    dim : {2, 3}, keyword-only
        2: plane-stress pixels (a 3D array is a batch). 3: HEX8 voxels under ``u = x`` on all faces,
        ``K = <tr sigma> / 9`` (`metasys.fem.affine_bulk_modulus_3d`); a homogeneous sample gives
        ``E / (3 (1 - 2 nu))`` in both.

    Returns
    -------
    K : float, or array (n,) for a batch; in the units of E.
    """
    return bulk_modulus_and_gradient(E, nu, gradient=False, dim=dim)[0]


def bulk_modulus_and_gradient(E, nu, gradient: bool = True, *, dim: int = 2):
    """K and its exact gradient: ``(K, dK/dE, dK/dnu)`` with the gradients shaped like E.

    K is a float for a single field ((ny, nx), or (nz, ny, nx) with ``dim=3``) and an array (n,) for a
    batch. With ``gradient=False`` the two gradients are None (only the forward solve is done).
    """
    if isinstance(dim, (bool, np.bool_)) or dim not in (2, 3):
        raise InvalidValueError(f"dim: expected 2 or 3, got {dim!r}")
    if dim == 3:
        return _bulk_modulus_3d(E, nu, gradient)
    E, nu = _check(E, nu)
    single = E.ndim == 2
    E3, nu3 = (E[None], nu[None]) if single else (E, nu)
    grid = _grid(*E3.shape[1:])
    out = [_solve_one(grid, e.ravel(), v.ravel(), gradient) for e, v in zip(E3, nu3)]
    k = np.array([o[0] for o in out])
    if not gradient:
        return (k[0] if single else k), None, None
    ge = np.stack([o[1] for o in out]).reshape(E3.shape)
    gn = np.stack([o[2] for o in out]).reshape(E3.shape)
    return (k[0], ge[0], gn[0]) if single else (k, ge, gn)


def _bulk_modulus_3d(E, nu, gradient: bool):
    """The voxel case: the composite ranges of ``_check`` (nu in (0, 0.5)), then the HEX8 solve."""
    from ..fem.voxel_affine import affine_bulk_modulus_3d

    e = np.asarray(E, dtype=float)
    if e.ndim not in (3, 4) or min(e.shape[-3:]) < 2 or e.size == 0:
        raise InvalidValueError(f"E: expected a voxel field (nz, ny, nx) or a batch (n, nz, ny, nx), got {describe(E)}")
    v = np.asarray(nu, dtype=float)
    if v.shape == e.shape and not (np.all(np.isfinite(v)) and np.all(v > 0) and np.all(v < 0.5)):
        raise InvalidValueError("nu: every voxel's Poisson's ratio must lie in (0, 0.5)")
    return affine_bulk_modulus_3d(e, v, gradient=gradient)
