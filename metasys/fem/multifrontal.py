"""Batched multifrontal solve of many pixel-grid systems that share one sparsity pattern.

Homogenizing a database means solving thousands of small systems whose matrices differ only in
the element moduli. A sparse direct solver called cell by cell spends most of its time in
symbolic analysis and Python overhead; here the symbolic work (a nested dissection of the element
grid into rectangular patches, the front of every patch and the scatter indices between fronts) is
done once per pattern, and the numeric work for a whole batch of cells runs as a few dozen
stacked dense LAPACK/BLAS calls, one per level of the dissection tree.

The systems are ``K x = b`` with ``K = sum_e w_e P_e^T k P_e`` and ``b = sum_e w_e P_e^T f``, where
``k`` (8, 8) and ``f`` (8, L) are shared by all elements and ``w`` (N, ny, nx) are per-cell element
weights (moduli).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class _Level:
    n_patches: int
    n_interior: int  # padded number of eliminated unknowns per front
    n_boundary: int  # padded number of unknowns passed to the parent
    interior_dofs: np.ndarray  # (P, ni) global unknown or n (dummy)
    boundary_dofs: np.ndarray  # (P, nb) global unknown or n (dummy)
    element_slots: list  # [(element flat indices (P,), front positions (P, 8))] for leaf levels
    child_scatter: list  # [(child level, child patch indices (Q,), parent patch (Q,), positions (Q, nbc))]


def _bisect(r0, r1, c0, c1, leaf):
    """Recursive bisection of an element rectangle: yields (rect, children) trees."""
    if r1 - r0 <= leaf and c1 - c0 <= leaf:
        return ((r0, r1, c0, c1), [])
    if r1 - r0 >= c1 - c0:
        m = (r0 + r1) // 2
        kids = [_bisect(r0, m, c0, c1, leaf), _bisect(m, r1, c0, c1, leaf)]
    else:
        m = (c0 + c1) // 2
        kids = [_bisect(r0, r1, c0, m, leaf), _bisect(r0, r1, m, c1, leaf)]
    return ((r0, r1, c0, c1), kids)


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

        tree = _bisect(0, ny, 0, nx, leaf)
        records = []  # (height, elements, eliminated here, boundary, child record ids, all interior)

        def visit(node):
            (r0, r1, c0, c1), kids = node
            kid_ids = [visit(k) for k in kids]
            elems = (np.arange(r0, r1)[:, None] * nx + np.arange(c0, c1)[None, :]).ravel()
            dofs, counts = np.unique(ed[elems].ravel(), return_counts=True)
            keep = dofs < n
            dofs, counts = dofs[keep], counts[keep]
            inside = dofs[counts == total[dofs]]
            boundary = dofs[counts != total[dofs]]
            interior = inside
            if kid_ids:
                interior = np.setdiff1d(inside, np.concatenate([records[k][5] for k in kid_ids]))
            height = 1 + max(records[k][0] for k in kid_ids) if kid_ids else 0
            records.append((height, elems, interior, boundary, kid_ids, inside))
            return len(records) - 1

        visit(tree)
        if len(records[-1][3]):
            raise ValueError("MultifrontalPattern: the root patch has unknowns on its boundary")

        heights = sorted({r[0] for r in records})
        where = {}  # record id -> (level, index in level)
        by_level = [[i for i, r in enumerate(records) if r[0] == h] for h in heights]
        for lev, ids in enumerate(by_level):
            for j, i in enumerate(ids):
                where[i] = (lev, j)

        self.levels = []
        for ids in by_level:
            ni = max(1, max(len(records[i][2]) for i in ids))
            nb = max(len(records[i][3]) for i in ids)
            m = ni + nb
            interior = np.full((len(ids), ni), n)
            boundary = np.full((len(ids), nb), n)
            pos = []  # per patch: dict-free position lookup via sorted arrays
            for j, i in enumerate(ids):
                _, _, it, bd, _, _ = records[i]
                interior[j, : len(it)] = it
                boundary[j, : len(bd)] = bd
                front = np.concatenate([it, bd])
                slots = np.concatenate([np.arange(len(it)), ni + np.arange(len(bd))])
                order = np.argsort(front)
                pos.append((front[order], slots[order]))

            def lookup(j, dofs, pos=pos):
                front, slots = pos[j]
                k = np.searchsorted(front, dofs)
                k = np.minimum(k, len(front) - 1)
                ok = (dofs < n) & (front[k] == dofs)
                return np.where(ok, slots[k], -1)

            element_slots = []
            leaves = [j for j, i in enumerate(ids) if not records[i][4]]
            if leaves:
                max_e = max(len(records[ids[j]][1]) for j in leaves)
                for s in range(max_e):
                    rows = [j for j in leaves if s < len(records[ids[j]][1])]
                    elems = np.array([records[ids[j]][1][s] for j in rows])
                    p = np.stack([lookup(j, ed[e]) for j, e in zip(rows, elems)])
                    element_slots.append((np.array(rows), elems, p))

            child_scatter = []
            pairs = {}
            for j, i in enumerate(ids):
                for s, k in enumerate(records[i][4]):
                    clev, cj = where[k]
                    pairs.setdefault((clev, s), []).append((cj, j, lookup(j, records[k][3])))
            for (clev, _), items in sorted(pairs.items()):
                cidx = np.array([c for c, _, _ in items])
                pidx = np.array([p for _, p, _ in items])
                nbc = max(len(q) for _, _, q in items)
                positions = np.full((len(items), nbc), -1)
                for r, (_, _, q) in enumerate(items):
                    positions[r, : len(q)] = q
                child_scatter.append((clev, cidx, pidx, positions))
            self.levels.append(_Level(len(ids), ni, nb, interior, boundary, element_slots, child_scatter))

        # Flat scatter indices of the children's update matrices, valid entries only.
        for level in self.levels:
            m = level.n_interior + level.n_boundary
            flat = []
            for clev, cidx, pidx, positions in level.child_scatter:
                nbc = self.levels[clev].n_boundary
                pad = np.full((len(cidx), nbc), -1)
                pad[:, : positions.shape[1]] = positions
                ok = (pad[:, :, None] >= 0) & (pad[:, None, :] >= 0)
                src = (cidx[:, None, None] * nbc + np.arange(nbc)[:, None]) * nbc + np.arange(nbc)
                dst = (pidx[:, None, None] * m + pad[:, :, None]) * m + pad[:, None, :]
                flat.append((clev, cidx, pidx, pad, src[ok], dst[ok]))
            level.child_scatter = flat

    def solve(self, weights: np.ndarray, ke: np.ndarray, fe: np.ndarray, return_solution: bool = False):
        """Solve ``K x = b`` for a batch of element weights.

        Parameters
        ----------
        weights : array (N, ny, nx)
            Element weights (moduli) of each system.
        ke : array (8, 8)
            Element matrix for unit weight.
        fe : array (8, L)
            Element right-hand sides for unit weight.
        return_solution : bool
            Also return the solution (needs memory for the factors of the whole batch).

        Returns
        -------
        energy : array (N, L, L)
            ``b^T K^-1 b``.
        x : array (N, n_unknowns, L), only with ``return_solution``.
        """
        w = np.asarray(weights, dtype=float).reshape(len(weights), -1).T.copy()  # (elements, N)
        n_sys, n_load = w.shape[1], fe.shape[1]
        ke_flat = np.asarray(ke, dtype=float).ravel()[:, None]
        fe_flat = np.asarray(fe, dtype=float).reshape(8, n_load)[:, :, None]
        energy = np.zeros((n_sys, n_load, n_load))
        updates = []  # per level, batch-last: S (P * nb * nb, N), g (P * nb * L, N)
        saved = []
        for level in self.levels:
            ni, nb, npch = level.n_interior, level.n_boundary, level.n_patches
            m = ni + nb
            # Assembly in batch-last layout: every scattered entry is a contiguous row of N values.
            front = np.zeros((npch * m * m + 1, n_sys))
            rhs = np.zeros((npch * m * n_load + 1, n_sys))
            for rows, elems, pos in level.element_slots:
                wk = w[elems][:, None, :]
                valid = (pos[:, :, None] >= 0) & (pos[:, None, :] >= 0)
                kidx = np.where(valid, (rows[:, None, None] * m + pos[:, :, None]) * m + pos[:, None, :], npch * m * m)
                front[kidx.ravel()] += (wk * ke_flat).reshape(-1, n_sys)
                gidx = (rows[:, None, None] * m + pos[:, :, None]) * n_load + np.arange(n_load)
                gidx = np.where(pos[:, :, None] >= 0, gidx, npch * m * n_load)
                rhs[gidx.ravel()] += (wk[:, :, None, :] * fe_flat).reshape(-1, n_sys)
            for clev, cidx, pidx, pos, src, dst in level.child_scatter:
                s_child, g_child = updates[clev]
                front[dst] += s_child[src]
                nbc = pos.shape[1]
                ok = np.broadcast_to((pos >= 0)[:, :, None], pos.shape + (n_load,))
                g_src = (cidx[:, None, None] * nbc + np.arange(nbc)[:, None]) * n_load + np.arange(n_load)
                g_dst = (pidx[:, None, None] * m + pos[:, :, None]) * n_load + np.arange(n_load)
                rhs[g_dst[ok]] += g_child[g_src[ok]]
            front = np.ascontiguousarray(front[:-1].reshape(npch, m, m, n_sys).transpose(3, 0, 1, 2))
            rhs = np.ascontiguousarray(rhs[:-1].reshape(npch, m, n_load, n_sys).transpose(3, 0, 1, 2))
            # Padded interior unknowns get a unit diagonal so the stacked factorizations are regular.
            pad = np.flatnonzero(level.interior_dofs.ravel() == self.n_unknowns)
            if len(pad):
                p, i = np.divmod(pad, ni)
                front[:, p, i, i] = 1.0
            f_ib = front[:, :, :ni, ni:]
            g_i = rhs[:, :, :ni]
            x = np.linalg.solve(front[:, :, :ni, :ni], np.concatenate([f_ib, g_i], axis=-1))
            x_b, x_g = x[..., :nb], x[..., nb:]
            energy += np.einsum("npil,npik->nlk", g_i, x_g)
            s_new = front[:, :, ni:, ni:] - np.einsum("npji,npjk->npik", f_ib, x_b, optimize=True)
            g_new = rhs[:, :, ni:] - np.einsum("npji,npjk->npik", f_ib, x_g, optimize=True)
            updates.append((s_new.transpose(1, 2, 3, 0).reshape(-1, n_sys),
                            g_new.transpose(1, 2, 3, 0).reshape(-1, n_sys)))
            if return_solution:
                saved.append((x_b, x_g))
        if not return_solution:
            return energy
        sol = np.zeros((n_sys, self.n_unknowns + 1, n_load))
        for level, (x_b, x_g) in zip(reversed(self.levels), reversed(saved)):
            xb = sol[:, level.boundary_dofs]  # (N, P, nb, L)
            sol[:, level.interior_dofs] = x_g - x_b @ xb
            sol[:, self.n_unknowns] = 0.0
        return energy, sol[:, : self.n_unknowns]

