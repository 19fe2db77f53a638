"""Batched multifrontal Cholesky solve of many pixel-grid systems that share one sparsity pattern.

Homogenizing a database means solving thousands of small systems whose matrices differ only in
the element moduli. A general sparse solver called cell by cell spends most of its time in
symbolic analysis and call overhead. Here the symbolic work (a nested dissection of the element
grid into rectangular patches, the front of every patch and the index maps between fronts) is done
once per pattern in NumPy, and the numeric work runs in a compiled kernel (numba) that factorizes
one cell's fronts after another, cells in parallel across cores.

The systems are ``K x = b`` with ``K = sum_e w_e P_e^T k P_e`` and ``b = sum_e w_e P_e^T f``, where
``k`` (8, 8) and ``f`` (8, L) are shared by all elements and ``w`` (N, ny, nx) are per-cell element
weights (moduli). ``K`` must be symmetric positive definite.
"""

from __future__ import annotations

import numba
import numpy as np

from ..errors import SolverError


def _bisect(r0, r1, c0, c1, leaf):
    """Recursive bisection of an element rectangle into a tree ((r0, r1, c0, c1), children)."""
    if r1 - r0 <= leaf and c1 - c0 <= leaf:
        return ((r0, r1, c0, c1), [])
    if r1 - r0 >= c1 - c0:
        m = (r0 + r1) // 2
        kids = [_bisect(r0, m, c0, c1, leaf), _bisect(m, r1, c0, c1, leaf)]
    else:
        m = (c0 + c1) // 2
        kids = [_bisect(r0, r1, c0, m, leaf), _bisect(r0, r1, m, c1, leaf)]
    return ((r0, r1, c0, c1), kids)


def _ptr(sizes) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


class MultifrontalPattern:
    """Symbolic analysis of a pixel-grid system, reusable for any number of numeric solves.

    Parameters
    ----------
    element_dofs : int array (ny, nx, 8)
        Global unknown of each local degree of freedom of each element, or -1 where the degree of
        freedom is prescribed to zero (removed from the system).
    n_unknowns : int
        Number of unknowns; every one must belong to some element.
    leaf : int
        Patches of at most ``leaf`` x ``leaf`` elements are not split further.
    """

    def __init__(self, element_dofs: np.ndarray, n_unknowns: int, leaf: int = 4):
        element_dofs = np.asarray(element_dofs)
        self.grid_shape = element_dofs.shape[:2]
        self.n_unknowns = n = int(n_unknowns)
        ny, nx = self.grid_shape
        ed = np.where(element_dofs < 0, n, element_dofs).reshape(ny * nx, 8)
        total = np.bincount(ed.ravel(), minlength=n + 1)
        fronts = []  # post-order: (elements of a leaf, eliminated unknowns, boundary unknowns, children, all inside)

        def visit(node):
            (r0, r1, c0, c1), kids = node
            kid_ids = [visit(k) for k in kids]
            elems = (np.arange(r0, r1)[:, None] * nx + np.arange(c0, c1)[None, :]).ravel()
            dofs, counts = np.unique(ed[elems].ravel(), return_counts=True)
            keep = dofs < n
            dofs, counts = dofs[keep], counts[keep]
            inside = dofs[counts == total[dofs]]
            boundary = dofs[counts != total[dofs]]
            eliminated = np.setdiff1d(inside, np.concatenate([fronts[k][4] for k in kid_ids])) if kid_ids else inside
            fronts.append((elems if not kid_ids else elems[:0], eliminated, boundary, kid_ids, inside))
            return len(fronts) - 1

        visit(_bisect(0, ny, 0, nx, leaf))
        if len(fronts[-1][2]) or len(fronts[-1][4]) != n:
            raise ValueError("MultifrontalPattern: every unknown must lie inside the grid and belong to an element")

        self.n_interior = np.array([len(f[1]) for f in fronts], dtype=np.int64)
        self.n_boundary = np.array([len(f[2]) for f in fronts], dtype=np.int64)
        front_dofs = [np.concatenate([f[1], f[2]]) for f in fronts]
        self.dofs_ptr = _ptr([len(d) for d in front_dofs])
        self.dofs = np.concatenate(front_dofs).astype(np.int64)

        def positions(f, dofs):
            order = np.argsort(front_dofs[f])
            k = np.searchsorted(front_dofs[f], dofs, sorter=order)
            k = np.minimum(k, len(order) - 1)
            found = order[k]
            return np.where((dofs < n) & (front_dofs[f][found] == dofs), found, -1)

        elems = [f[0] for f in fronts]
        self.elem_ptr = _ptr([len(e) for e in elems])
        self.elem_ids = np.concatenate(elems).astype(np.int64)
        self.elem_pos = np.concatenate([positions(i, ed[e]) for i, e in enumerate(elems) if len(e)]).astype(np.int64)

        self.child_ptr = _ptr([len(f[3]) for f in fronts])
        self.child_ids = np.array([k for f in fronts for k in f[3]], dtype=np.int64)
        parent = np.full(len(fronts), -1)
        for i, f in enumerate(fronts):
            parent[f[3]] = i
        up = [positions(parent[i], f[2]) if parent[i] >= 0 else np.zeros(0, np.int64) for i, f in enumerate(fronts)]
        self.up_ptr = _ptr([len(u) for u in up])
        self.up_pos = np.concatenate(up).astype(np.int64)
        self.update_ptr = _ptr(self.n_boundary**2)
        self.boundary_ptr = _ptr(self.n_boundary)
        self.n_fronts = len(fronts)

    def solve(self, weights: np.ndarray, ke: np.ndarray, fe: np.ndarray, return_solution: bool = False):
        """Solve ``K x = b`` for a batch of element weights.

        Parameters
        ----------
        weights : array (N, ny, nx)
            Element weights (moduli) of each system.
        ke : array (8, 8)
            Symmetric element matrix for unit weight.
        fe : array (8, L)
            Element right-hand sides for unit weight.
        return_solution : bool
            Also return the solutions.

        Returns
        -------
        energy : array (N, L, L)
            ``b^T K^-1 b``.
        x : array (N, n_unknowns, L), only with ``return_solution``.
        """
        w = np.ascontiguousarray(np.asarray(weights, dtype=np.float64).reshape(len(weights), -1))
        ke = np.ascontiguousarray(ke, dtype=np.float64)
        fe = np.ascontiguousarray(fe, dtype=np.float64)
        energy = np.zeros((len(w), fe.shape[1], fe.shape[1]))
        x = np.zeros((len(w) if return_solution else 0, self.n_unknowns + 1, fe.shape[1]))
        failed = _solve_batch(w, ke, fe, self.n_interior, self.n_boundary, self.dofs_ptr, self.dofs, self.elem_ptr,
                              self.elem_ids, self.elem_pos, self.child_ptr, self.child_ids, self.up_ptr, self.up_pos,
                              self.update_ptr, self.boundary_ptr, energy, x, return_solution)
        if failed.any():
            raise SolverError(f"system {int(np.flatnonzero(failed)[0])} of the batch is not positive definite "
                              "(a zero or negative modulus?)")
        if not return_solution:
            return energy
        return energy, x[:, : self.n_unknowns]


# Reassociation and fused multiply-add let LLVM vectorize the update loops; NaN/inf semantics are kept
# so that the pivot test still catches a matrix that is not positive definite.
@numba.njit(cache=True, fastmath={"reassoc", "contract", "arcp", "nsz"}, error_model="numpy")
def _solve_one(w, ke, fe, n_int, n_bnd, dofs_ptr, dofs, elem_ptr, elem_ids, elem_pos, child_ptr, child_ids, up_ptr,
               up_pos, update_ptr, boundary_ptr, energy, x, want_solution):
    """Factorize one cell front by front (post-order); returns False if a pivot is not positive."""
    n_load = fe.shape[1]
    n_fronts = len(n_int)
    s_upd = np.empty(update_ptr[-1])
    g_upd = np.empty(boundary_ptr[-1] * n_load)
    stored = []
    for f in range(n_fronts):
        ni = n_int[f]
        nb = n_bnd[f]
        m = ni + nb
        cols = m + n_load
        a = np.zeros((m, cols))
        # Element contributions (leaves): upper triangle only, the matrix is symmetric.
        for e in range(elem_ptr[f], elem_ptr[f + 1]):
            we = w[elem_ids[e]]
            for i in range(8):
                pi = elem_pos[e, i]
                if pi < 0:
                    continue
                for j in range(8):
                    pj = elem_pos[e, j]
                    if pj >= pi:
                        a[pi, pj] += we * ke[i, j]
                for load in range(n_load):
                    a[pi, m + load] += we * fe[i, load]
        # Extend-add of the children's Schur complements.
        for c_at in range(child_ptr[f], child_ptr[f + 1]):
            c = child_ids[c_at]
            nbc = n_bnd[c]
            s_off = update_ptr[c]
            g_off = boundary_ptr[c] * n_load
            pos = up_pos[up_ptr[c] : up_ptr[c + 1]]
            for i in range(nbc):
                pi = pos[i]
                for j in range(i, nbc):
                    pj = pos[j]
                    if pi <= pj:
                        a[pi, pj] += s_upd[s_off + i * nbc + j]
                    else:
                        a[pj, pi] += s_upd[s_off + i * nbc + j]
                for load in range(n_load):
                    a[pi, m + load] += g_upd[g_off + i * n_load + load]
        # Partial right-looking Cholesky of the first ni pivots; the trailing block becomes the
        # Schur complement and the trailing columns the reduced right-hand side.
        for k in range(ni):
            piv = a[k, k]
            if not piv > 0.0:
                return False
            d = np.sqrt(piv)
            for j in range(k, cols):
                a[k, j] /= d
            for i in range(k + 1, m):
                aki = a[k, i]
                if aki != 0.0:
                    for j in range(i, cols):
                        a[i, j] -= aki * a[k, j]
        for k in range(ni):
            for l1 in range(n_load):
                for l2 in range(n_load):
                    energy[l1, l2] += a[k, m + l1] * a[k, m + l2]
        s_off = update_ptr[f]
        g_off = boundary_ptr[f] * n_load
        for i in range(nb):
            for j in range(i, nb):
                s_upd[s_off + i * nb + j] = a[ni + i, ni + j]
            for load in range(n_load):
                g_upd[g_off + i * n_load + load] = a[ni + i, m + load]
        if want_solution:
            stored.append(a[:ni].copy())
    if want_solution:
        for f in range(n_fronts - 1, -1, -1):
            ni = n_int[f]
            m = ni + n_bnd[f]
            r = stored[f]
            fd = dofs[dofs_ptr[f] : dofs_ptr[f + 1]]
            for k in range(ni - 1, -1, -1):
                for load in range(n_load):
                    v = r[k, m + load]
                    for j in range(k + 1, m):
                        v -= r[k, j] * x[fd[j], load]
                    x[fd[k], load] = v / r[k, k]
    return True


@numba.njit(parallel=True, cache=True)
def _solve_batch(w, ke, fe, n_int, n_bnd, dofs_ptr, dofs, elem_ptr, elem_ids, elem_pos, child_ptr, child_ids, up_ptr,
                 up_pos, update_ptr, boundary_ptr, energy, x, want_solution):
    failed = np.zeros(len(w), dtype=np.bool_)
    for s in numba.prange(len(w)):
        xs = x[s] if want_solution else np.empty((0, fe.shape[1]))
        ok = _solve_one(w[s], ke, fe, n_int, n_bnd, dofs_ptr, dofs, elem_ptr, elem_ids, elem_pos, child_ptr, child_ids,
                        up_ptr, up_pos, update_ptr, boundary_ptr, energy[s], xs, want_solution)
        failed[s] = not ok
    return failed
