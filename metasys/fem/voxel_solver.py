"""Linear solves of the voxel systems: sparse LU for small grids, geometric-multigrid block CG for large ones.

All solve ``A X = B`` for all right-hand sides of a cell at once (6 load cases of the periodic problem,
2 of the affine-boundary problem: the forward and the adjoint solve share the matrix and are one block),
with ``A`` symmetric positive definite (pinned or Dirichlet). `voxel_solver` picks the method.

``"mg"`` (the default above `DIRECT_LIMIT` unknowns when the grid coarsens: periodic sides even, open sides
odd; `metasys.fem.voxel_mg`): geometric multigrid on the regular grid, every level a 27-point block stencil
applied by compiled (numba) kernels, Galerkin coarse levels built voxel by voxel, Chebyshev / block-Jacobi
smoothing in float32 inside a float64 block CG. Why it replaced ``"amg"`` (measured in one run of
``benchmarks/homogenize3d.py`` on the shared 2-core machine at load 9-10, E 1 / 100 cells): 32^3 5.0 s per
cell against 26 s (21 CG iterations instead of 49: the geometric hierarchy with Galerkin operators is a
better preconditioner than plain aggregation; the hierarchy costs 0.4-1.3 s instead of 2-9 s: no
aggregation, no sparse triple products; a stencil product needs no index arrays and half the bytes in
float32). With the 1e-9 void of binary cells the iteration count stays at 21. Not kept: numba
``parallel=True`` (each parallel region cost ~13 ms on the loaded machine, a 16^3 stencil product 16 ms
against 3.7 ms on one thread; the kernels are serial and release the GIL), Chebyshev degree 1 or 3 (29 or
19 iterations, same total time as degree 2), several cells on two threads (`metasys.fem.voxel.CELL_THREADS`:
no gain at that load; on an idle machine 1.3-1.7x, so the cells of a batch now run on one thread per core).
Since then the outer CG is a block CG over the load cases (one Krylov space: 21 -> 14
iterations at 32^3; see ``docs/api/fem3d.md``).

``"direct"``: SuperLU with a minimum-degree ordering of ``A + A^T``; exact to round-off, but the 3D fill
grows like ``n^2`` in the number of unknowns (the separators of a voxel grid are planes).

``"amg"`` (the fallback for grids that do not coarsen, e.g. odd periodic sides): one (plain) aggregation
hierarchy of pyamg (setup once per matrix) preconditions a block
conjugate-gradient iteration that advances all right-hand sides together. The V-cycle is applied to
the whole block (damped Jacobi smoothing, ``A_l @ X`` with ``X`` of L columns): one sparse
matrix-times-block product reads the matrix once for all load cases, which costs about twice a
single product instead of L times (pyamg's own cycle works one vector at a time). The columns are
independent CG iterations (each its own step lengths) stopped when every relative residual is below
``rtol``; the homogenized C is an energy, so its error is of the order of the squared error of the
solution in the energy norm (about ``rtol^2`` relative).

See ``docs/api/fem3d.md`` and ``benchmarks/homogenize3d.py`` for the measured comparison.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from ..errors import InvalidValueError, SolverError

DIRECT_LIMIT = 2_000
"""``method="auto"`` uses the direct solver up to this many unknowns (8^3 voxels), AMG-CG above.

Measured crossover (two-phase E 1 / 100 cells, loaded 2-core machine): 8^3 direct 0.10 s / AMG 0.11 s,
10^3 0.60 / 0.52 s, 12^3 1.13 / 0.60 s, 16^3 3.7 / 0.75 s (the LU fill of a 3D grid grows fast)."""

METHODS = ("auto", "direct", "amg", "mg")


def check_method(method) -> str:
    if method not in METHODS:
        raise InvalidValueError(f"solver: expected one of {METHODS}, got {method!r}")
    return method


def voxel_solver(grid, weights, basis, fixed=None, open_axes=(False, False, False), method: str = "auto",
                 rtol: float = 1e-8, maxiter: int = 2000):
    """Solver of the voxel stiffness of element ``weights`` (m, nz, ny, nx) and ``basis`` (m, 24, 24) on ``grid``.

    ``fixed``: bool (n_nodes,) prescribed nodes (default: node 0, the periodic pin). ``"auto"`` takes the
    direct solver up to `DIRECT_LIMIT` unknowns, the geometric multigrid (`metasys.fem.voxel_mg`) above when
    an axis of the grid can be coarsened (periodic sides even, open sides odd), pyamg otherwise. The
    returned object's ``solve(b, atol)`` takes and returns interleaved blocks (3 n_nodes, L).
    """
    method = check_method(method)
    if fixed is None:
        fixed = np.zeros(grid.n_nodes, bool)
        fixed[0] = True
    if method == "auto":
        from .voxel_mg import coarsenable

        n = 3 * grid.n_nodes
        method = "direct" if n <= DIRECT_LIMIT else "mg" if coarsenable(grid.shape, open_axes) else "amg"
    if method == "mg":
        return _MGSolver(weights, basis, fixed.reshape(grid.shape), open_axes, rtol, maxiter)
    from .voxel_assembly import stencil_blocks

    return SpdSolver(grid.assemble(weights, stencil_blocks(basis), fixed), method, rtol, maxiter)


class _MGSolver:
    """`metasys.fem.voxel_mg.VoxelMG` behind the interleaved (3 n_nodes, L) interface of `SpdSolver`."""

    method = "mg"

    def __init__(self, weights, basis, fixed, open_axes, rtol, maxiter):
        from .voxel_mg import VoxelMG

        self.shape, self.rtol, self.maxiter = fixed.shape, rtol, maxiter
        self.mg = VoxelMG(weights, basis, fixed, open_axes)

    def solve(self, b: np.ndarray, atol=0.0) -> np.ndarray:
        b = np.asarray(b, dtype=float).reshape(*self.shape, 3, -1)
        x = self.mg.solve(np.moveaxis(b, (3, 4), (1, 0)), self.rtol, self.maxiter, atol)
        self.iterations = self.mg.iterations
        return np.moveaxis(x, (1, 0), (3, 4)).reshape(-1, b.shape[-1])

    def matvec(self, x: np.ndarray) -> np.ndarray:
        """``A x`` (float64) for interleaved blocks x (3 n_nodes, L)."""
        x = np.asarray(x, dtype=float).reshape(*self.shape, 3, -1)
        y = self.mg.matvec(np.ascontiguousarray(np.moveaxis(x, (3, 4), (1, 0))))
        return np.moveaxis(y, (1, 0), (3, 4)).reshape(-1, x.shape[-1])


class SpdSolver:
    """Solver of ``a x = b`` for one SPD sparse matrix (n, n), reusable for several right-hand sides (direct or pyamg).

    Parameters
    ----------
    a : sparse matrix (n, n)
        Symmetric positive definite, 3 displacement components per node (interleaved).
    method : {"auto", "direct", "amg"}
        ``"auto"``: direct up to `DIRECT_LIMIT` unknowns, AMG-CG above.
    rtol : float
        AMG-CG: relative residual ``||b - a x|| / ||b||`` reached by every column.
    maxiter : int
        AMG-CG: iteration limit (a `SolverError` past it).
    """

    def __init__(self, a: sp.spmatrix, method: str = "auto", rtol: float = 1e-8, maxiter: int = 2000):
        method = check_method(method)
        if method == "auto":
            method = "direct" if a.shape[0] <= DIRECT_LIMIT else "amg"
        self.method, self.rtol, self.maxiter = method, rtol, maxiter
        self.matrix = a
        if method == "direct":
            try:
                self._lu = splu(sp.csc_matrix(a), permc_spec="MMD_AT_PLUS_A")
            except RuntimeError as exc:
                raise SolverError(f"voxel solve: the stiffness matrix is singular ({exc})") from None
        else:
            self._amg = BlockAMG(a)

    def solve(self, b: np.ndarray, atol=0.0) -> np.ndarray:
        """Solutions (n, L) for right-hand sides (n, L); ``atol`` (scalar or (L,)) floors the AMG-CG target."""
        if self.method == "direct":
            return self._lu.solve(np.asarray(b, dtype=float))
        return self._amg.solve(b, self.rtol, self.maxiter, atol)

    def matvec(self, x: np.ndarray) -> np.ndarray:
        """``a x`` for a block x (n, L)."""
        return self.matrix @ x


class BlockAMG:
    """Smoothed-aggregation hierarchy (pyamg) applied as a V-cycle to blocks of vectors.

    Parameters
    ----------
    a : sparse matrix (3 n_nodes, 3 n_nodes)
        SPD stiffness with 3 displacement components per node (interleaved); the three rigid
        translations are the near-null space given to the aggregation.
    """

    def __init__(self, a: sp.spmatrix):
        import pyamg

        n = a.shape[0]
        near_null = np.tile(np.eye(3), (n // 3, 1))
        # Plain aggregation (no prolongator smoothing): on 32^3 cells it needs ~20% more iterations than
        # smoothed aggregation (53 vs 43 at contrast 100, 56 vs 45 with a 1e-9 void) but its setup is 2-3x
        # cheaper (1.6-1.7 s vs 2.9-4.4 s on the loaded 2-core machine), which wins in total (7-9 s vs 9-11 s).
        # The aggregates (~33 nodes) leave a coarse level of ~3000 unknowns, solved by a sparse LU.
        self.ml = pyamg.smoothed_aggregation_solver(sp.csr_matrix(a), B=near_null, smooth=None, max_coarse=4000,
                                                    coarse_solver="splu")
        self.levels = [(sp.csr_matrix(lvl.A), 1.0 / lvl.A.diagonal()) for lvl in self.ml.levels]
        self.transfer = [(sp.csr_matrix(lvl.P), sp.csr_matrix(lvl.R)) for lvl in self.ml.levels[:-1]]
        self.coarse = splu(sp.csc_matrix(self.levels[-1][0]), permc_spec="MMD_AT_PLUS_A")
        # damped Jacobi weight 4/(3 rho(D^-1 A)) (the standard choice for smoothing SPD stencils)
        from pyamg.util.linalg import approximate_spectral_radius

        self.omega = [4.0 / (3.0 * approximate_spectral_radius(sp.diags(d) @ m)) for m, d in self.levels[:-1]]

    def vcycle(self, r: np.ndarray, level: int = 0) -> np.ndarray:
        """Approximate ``A^-1 r`` for a block r (n_level, L): one V(1, 1) cycle, symmetric (a valid CG preconditioner)."""
        if level == len(self.levels) - 1:
            return self.coarse.solve(r)
        a, dinv = self.levels[level]
        w = self.omega[level] * dinv[:, None]
        x = w * r
        p, rr = self.transfer[level]
        x += p @ self.vcycle(rr @ (r - a @ x), level + 1)
        x += w * (r - a @ x)
        return x

    def solve(self, b: np.ndarray, rtol: float = 1e-8, maxiter: int = 2000, atol=0.0) -> np.ndarray:
        """Block PCG: L independent CG iterations sharing every matrix and preconditioner product.

        A column stops at ``||r|| <= max(rtol ||b||, atol)`` (``atol`` keeps round-off right-hand sides,
        e.g. of a homogeneous cell, from iterating on noise).
        """
        a = self.levels[0][0]
        b = np.asarray(b, dtype=float).reshape(a.shape[0], -1)
        x = np.zeros_like(b)
        r = b.copy()
        norm_b = np.linalg.norm(b, axis=0)
        target = np.maximum(rtol * norm_b, atol)
        z = self.vcycle(r)
        p = z.copy()
        rz = np.einsum("ij,ij->j", r, z)
        self.iterations = 0
        for self.iterations in range(1, maxiter + 1):
            if np.all(np.linalg.norm(r, axis=0) <= target):
                return x
            q = a @ p
            pq = np.einsum("ij,ij->j", p, q)
            done = np.linalg.norm(r, axis=0) <= target
            alpha = np.divide(rz, pq, out=np.zeros_like(rz), where=(pq > 0) & ~done)  # converged columns stay put
            x += alpha * p
            r -= alpha * q
            z = self.vcycle(r)
            rz_new = np.einsum("ij,ij->j", r, z)
            beta = np.divide(rz_new, rz, out=np.zeros_like(rz), where=rz > 0)
            p = z + beta * p
            rz = rz_new
        if np.all(np.linalg.norm(r, axis=0) <= target):
            return x
        raise SolverError(f"voxel solve: AMG-CG did not reach rtol={rtol} in {maxiter} iterations "
                          f"(residual norms {np.linalg.norm(r, axis=0)}, right-hand sides {norm_b})")
