"""Macroscale solve: a W x H grid of unit-square Q4 elements with per-element orthotropic stiffness.

Element (i, j) occupies [i, i+1] x [j, j+1] and has properties ``p[j, i] = (C11, C12, C22, C33)``.
Node (x, y) has degrees of freedom ``2 * (y * (W + 1) + x) + {0: x, 1: y}``. Only prescribed
displacements load the structure (the three standard problems have no forces). Every element's stiffness
must be positive definite (C11, C22, C33 > 0 and C12^2 < C11 C22); other properties raise `InvalidValueError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..errors import InvalidValueError, SolverError, describe
from .boundary import prescribed_dofs
from .element import NODE_OFFSETS, orthotropic_basis


@dataclass
class MacroSolution:
    """Displacements of a macro solve.

    Attributes
    ----------
    displacement : array (H + 1, W + 1, 2)
        Nodal displacement; ``displacement[y, x] = (u_x, u_y)`` of node (x, y).
    vector : array (2 (W + 1) (H + 1),)
        The same in degree-of-freedom order.
    """

    displacement: np.ndarray
    vector: np.ndarray


class MacroModel:
    """Linear elastic macro grid with prescribed displacements; solves and adjoint gradients.

    Parameters
    ----------
    width, height : int
        Number of cells W, H.
    conditions : sequence of `metasys.fem.boundary.Prescribed`
        Prescribed displacements; they must remove the rigid-body motions.
    """

    def __init__(self, width: int, height: int, conditions):
        if int(width) != width or int(height) != height or width < 1 or height < 1:
            raise InvalidValueError(f"MacroModel: width and height must be positive integers, got {width!r}, {height!r}")
        self.width, self.height = int(width), int(height)
        self.n_dofs = 2 * (self.width + 1) * (self.height + 1)
        self.fixed, self.fixed_values = prescribed_dofs(conditions, self.width, self.height)
        self.free = np.setdiff1d(np.arange(self.n_dofs), self.fixed)
        j, i = np.meshgrid(np.arange(self.height), np.arange(self.width), indexing="ij")
        nodes = (j[..., None] + NODE_OFFSETS[:, 1]) * (self.width + 1) + i[..., None] + NODE_OFFSETS[:, 0]
        self.element_dofs = (2 * nodes[..., None] + np.arange(2)).reshape(self.height, self.width, 8)
        ed = self.element_dofs.reshape(-1, 8)
        self._rows = np.repeat(ed, 8, axis=1).ravel()
        self._cols = np.tile(ed, (1, 8)).ravel()
        self.basis = orthotropic_basis(1.0, 1.0)
        # Where each element-matrix entry goes in the free-free block (CSC, built directly without slicing the
        # global matrix) and which entries couple free rows to prescribed columns (the load vector).
        n_free = len(self.free)
        free_of = np.full(self.n_dofs, -1)
        free_of[self.free] = np.arange(n_free)
        fixed_of = np.full(self.n_dofs, -1)
        fixed_of[self.fixed] = np.arange(len(self.fixed))
        r, c, fc = free_of[self._rows], free_of[self._cols], fixed_of[self._cols]
        self._ff = (r >= 0) & (c >= 0)
        keys, self._ff_slot = np.unique(c[self._ff] * n_free + r[self._ff], return_inverse=True)
        self._ff_indices = keys % n_free
        self._ff_indptr = np.searchsorted(keys // n_free, np.arange(n_free + 1))
        self._fc = (r >= 0) & (fc >= 0)
        self._fc_row, self._fc_value = r[self._fc], self.fixed_values[fc[self._fc]]

    def _check(self, properties) -> np.ndarray:
        p = np.asarray(properties, dtype=float)
        if p.shape != (self.height, self.width, 4):
            expected = f"(H, W, 4) = ({self.height}, {self.width}, 4)"
            raise InvalidValueError(f"properties: expected shape {expected}, got {describe(properties)}")
        if not np.all(np.isfinite(p)):
            raise InvalidValueError("properties: contains NaN or infinite values")
        c11, c12, c22, c33 = np.moveaxis(p, -1, 0)
        bad = (c11 <= 0) | (c22 <= 0) | (c33 <= 0) | (c12 * c12 >= c11 * c22)
        if np.any(bad):
            j, i = np.argwhere(bad)[0]
            a, b, c, d = p[j, i]
            broken = [rule for rule, holds in (("C11 > 0", a > 0), ("C22 > 0", c > 0), ("C33 > 0", d > 0),
                                               ("C12^2 < C11 C22", b * b < a * c)) if not holds]
            raise InvalidValueError(
                f"properties: expected a positive definite stiffness in every element (C11 > 0, C22 > 0, C33 > 0, "
                f"C12^2 < C11 C22), got {int(bad.sum())} element(s) without, e.g. element (i, j) = ({i}, {j}) = "
                f"properties[{j}, {i}]: (C11, C12, C22, C33) = ({a:.6g}, {b:.6g}, {c:.6g}, {d:.6g}) breaks "
                f"{' and '.join(broken)}")
        return p

    def stiffness(self, properties) -> sp.csr_matrix:
        """Global stiffness matrix (n_dofs, n_dofs) for properties (H, W, 4)."""
        p = self._check(properties)
        ke = np.einsum("jiq,qab->jiab", p, self.basis).ravel()
        return sp.csr_matrix((ke, (self._rows, self._cols)), shape=(self.n_dofs, self.n_dofs))

    def _factorize(self, properties):
        ke = np.einsum("jiq,qab->jiab", self._check(properties), self.basis).ravel()
        n_free = len(self.free)
        data = np.bincount(self._ff_slot, weights=ke[self._ff], minlength=len(self._ff_indices))
        kff = sp.csc_matrix((data, self._ff_indices, self._ff_indptr), shape=(n_free, n_free))
        load = -np.bincount(self._fc_row, weights=ke[self._fc] * self._fc_value, minlength=n_free)
        try:
            lu = spla.splu(kff)
        except RuntimeError as exc:
            raise SolverError(self._singular_message) from exc
        pivots = np.abs(lu.U.diagonal())
        # A free rigid-body motion leaves a round-off-sized pivot rather than an exact zero.
        if pivots.min() <= 1e-12 * pivots.max():
            raise SolverError(self._singular_message)
        u = np.zeros(self.n_dofs)
        u[self.fixed] = self.fixed_values
        u[self.free] = lu.solve(load)
        if not np.all(np.isfinite(u)):
            raise SolverError("macro solve produced non-finite displacements; the properties may not be positive definite")
        return lu, u

    _singular_message = ("macro stiffness is singular: check that the prescribed displacements fix all rigid-body motions "
                         "and that the properties are positive definite")

    def solve(self, properties) -> MacroSolution:
        """Nodal displacements for properties (H, W, 4)."""
        _, u = self._factorize(properties)
        return MacroSolution(u.reshape(self.height + 1, self.width + 1, 2), u)

    def least_squares(self, properties, dofs, target, weights=None):
        """Quadratic objective ``F = r^T W r``, ``r = u[dofs] - target``, and its adjoint gradient (paper Eq. 13-15).

        Parameters
        ----------
        properties : array (H, W, 4)
        dofs : int array (k,)
            Degrees of freedom of interest (``gamma`` in the paper).
        target : array (k,)
            Target displacements ``u_t``.
        weights : array (k,) or (k, k), optional
            Diagonal weights ``w`` (``W = diag(w)``, default 1: the paper's ``||gamma * u - u_t||^2``) or a
            symmetric matrix ``W``, which makes ``F`` any quadratic form in the selected displacements.

        Returns
        -------
        value : float
        gradient : array (H, W, 4)
            dF / dp, from one adjoint solve with the factorization of the forward solve.
        solution : MacroSolution
        """
        dofs = np.asarray(dofs, dtype=np.int64)
        target = np.asarray(target, dtype=float)
        k = len(dofs)
        w = np.ones(k) if weights is None else np.asarray(weights, dtype=float)
        if target.shape != dofs.shape or w.shape not in ((k,), (k, k)):
            raise InvalidValueError(f"least_squares: expected dofs (k,), target (k,) and weights (k,) or (k, k), got "
                                    f"{dofs.shape}, {target.shape}, {w.shape}")
        w = np.diag(w) if w.ndim == 1 else 0.5 * (w + w.T)
        lu, u = self._factorize(properties)
        residual = u[dofs] - target
        dfdu = np.zeros(self.n_dofs)
        np.add.at(dfdu, dofs, 2.0 * w @ residual)
        lam = np.zeros(self.n_dofs)
        lam[self.free] = lu.solve(dfdu[self.free], trans="T")
        ue, le = u[self.element_dofs], lam[self.element_dofs]
        gradient = -np.einsum("jia,qab,jib->jiq", le, self.basis, ue)
        solution = MacroSolution(u.reshape(self.height + 1, self.width + 1, 2), u)
        return float(residual @ w @ residual), gradient, solution


def solve_macro(properties, conditions) -> MacroSolution:
    """Displacements of a macro grid with properties (H, W, 4) under prescribed displacements."""
    p = np.asarray(properties)
    if p.ndim != 3:
        raise InvalidValueError(f"properties: expected an array of shape (H, W, 4), got {describe(properties)}")
    return MacroModel(p.shape[1], p.shape[0], conditions).solve(p)
