"""Batched multifrontal Cholesky solve of many pixel-grid systems that share one sparsity pattern.

Homogenizing a database means solving thousands of small systems whose matrices differ only in
the element moduli. A general sparse solver called cell by cell spends most of its time in
symbolic analysis and call overhead. Here the symbolic work (a nested dissection of the element
grid into rectangular patches, the front of every patch and the index maps between fronts) is done
once per pattern in NumPy, and the numeric work runs in compiled kernels (numba), cells in
parallel across threads.

The systems are ``K x = b`` with ``K = sum_e w_e P_e^T k P_e`` and ``b = sum_e w_e P_e^T f``, where
``k`` (8, 8) and ``f`` (8, L) are shared by all elements and ``w`` (N, ny, nx) are per-cell element
weights (moduli). ``K`` must be symmetric positive definite.

Numerics: a front of ``ni`` pivots and ``nb`` boundary unknowns is held as its pivot rows F
(ni, ni + nb + L), written straight into the factor storage kept for the back substitution, and its
trailing block T (nb, nb + L), computed in place on one of two stacks (by depth parity, post-order:
the children's blocks lie on the other one). Upper triangles only. Children's blocks are added run
by run (consecutive positions).

Batches are factorized LANES (8) cells at a time, one cell per SIMD lane: every entry of every
front is a vector of the group's LANES values, so each operation of the elimination is one vector
instruction whatever the front size (most fronts are small: 385 of the 511 fronts of a 50 x 50
periodic cell have fewer than 60 unknowns, where row-wise vectorization does poorly). The
eliminations take four pivots at a time, then update the rest of F and T by all four, two rows per
pass. Single cells (and a remainder of at most LANES / 2 cells) are factorized one by one, with
the rows vectorized instead: eight pivots at a time, the panel's diagonal block factored, its rows
solved two at a time, and F's remaining rows and T updated from a contiguous copy of the panel,
two rows per pass (unit-stride slices that LLVM vectorizes). Work is split over
``numba.get_num_threads()`` threads.

A pivot is accepted only if it exceeds ``PIVOT_RTOL`` times the diagonal entry of its row in ``K``
(before elimination): a singular ``K`` (a zero modulus, a solid island or a pixel hinged at one
corner) is reported instead of being solved with round-off pivots. With ``u0`` the returned energy
is summed from element energies (see `MultifrontalPattern.solve`), which keeps small energies
(nearly disconnected cells) accurate.
"""

from __future__ import annotations

import os

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, models, register_model

from ..errors import SolverError

PIVOT_RTOL = 1e-13
"""A pivot below this fraction of its row's diagonal entry of ``K`` means ``K`` is (numerically) singular.

Round-off pivots of singular systems are about 1e-16 of the diagonal; a regular system's pivots are
at least about the smallest element weight relative to the largest (1e-9 for the default ersatz void).
"""


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
        Number of unknowns; every one must belong to some element (0 is allowed: nothing to solve).
    leaf : int, keyword-only
        Patches of at most ``leaf`` x ``leaf`` elements are not split further (a tuning knob).
    """

    def __init__(self, element_dofs: np.ndarray, n_unknowns: int, *, leaf: int = 4):
        element_dofs = np.asarray(element_dofs)
        self.grid_shape = element_dofs.shape[:2]
        self.n_unknowns = n = int(n_unknowns)
        if n >= 2**31 - 1:
            raise ValueError(f"MultifrontalPattern: too many unknowns ({n}); index maps are 32-bit")
        ny, nx = self.grid_shape
        ed = np.where(element_dofs < 0, n, element_dofs).reshape(ny * nx, 8)
        self.element_dofs = np.ascontiguousarray(ed, dtype=np.int32)  # prescribed -> n (a zero slot)
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

        n_fronts = len(fronts)
        parent = np.full(n_fronts, -1)
        for i, f in enumerate(fronts):
            parent[f[3]] = i
        # Front layout: eliminated unknowns (sorted), then the boundary unknowns in the order of their
        # positions in the parent front, so that a child's update maps to increasing parent positions
        # (set top-down: a parent is finished before its children in reverse post-order).
        front_dofs = [None] * n_fronts
        depth = np.zeros(n_fronts, dtype=np.int64)
        for i in range(n_fronts - 1, -1, -1):
            eliminated, boundary = fronts[i][1], fronts[i][2]
            if parent[i] >= 0:
                depth[i] = depth[parent[i]] + 1
                where = {int(d): k for k, d in enumerate(front_dofs[parent[i]])}
                boundary = boundary[np.argsort([where[int(d)] for d in boundary], kind="stable")]
            front_dofs[i] = np.concatenate([eliminated, boundary]).astype(np.int64)

        self.n_interior = np.array([len(f[1]) for f in fronts], dtype=np.int64)
        self.n_boundary = np.array([len(f[2]) for f in fronts], dtype=np.int64)
        self.parity = depth % 2
        self.dofs_ptr = _ptr([len(d) for d in front_dofs])
        self.dofs = np.concatenate(front_dofs).astype(np.int32)

        def positions(f, dofs):
            if len(front_dofs[f]) == 0:
                return np.full(np.shape(dofs), -1, dtype=np.int64)
            order = np.argsort(front_dofs[f])
            k = np.searchsorted(front_dofs[f], dofs, sorter=order)
            k = np.minimum(k, len(order) - 1)
            found = order[k]
            return np.where((dofs < n) & (front_dofs[f][found] == dofs), found, -1)

        elems = [f[0] for f in fronts]
        self.elem_ptr = _ptr([len(e) for e in elems])
        self.elem_ids = np.concatenate(elems).astype(np.int64)
        self.elem_pos = np.concatenate([positions(i, ed[e]) for i, e in enumerate(elems) if len(e)]).astype(np.int32)
        # Each element's local dofs in the order of their front positions (prescribed ones first):
        # then every pair i <= j in that order lands in the upper triangle, without a branch.
        self.elem_order = np.argsort(self.elem_pos, axis=1, kind="stable").astype(np.int8)
        self.elem_skip = (self.elem_pos < 0).sum(axis=1).astype(np.int8)

        self.child_ptr = _ptr([len(f[3]) for f in fronts])
        self.child_ids = np.array([k for f in fronts for k in f[3]], dtype=np.int64)
        up = [positions(parent[i], front_dofs[i][len(f[1]):]) if parent[i] >= 0 else np.zeros(0, np.int64)
              for i, f in enumerate(fronts)]
        self.up_ptr = _ptr([len(u) for u in up])
        self.up_pos = np.concatenate(up).astype(np.int32)
        # For each entry of a child's boundary, the end of its run of consecutive parent positions:
        # the extend-add moves whole runs (vectorized) instead of entry by entry.
        run_end = []
        for u in up:
            ends = np.r_[np.flatnonzero(np.diff(u) != 1) + 1, len(u)].astype(np.int64)
            run_end.append(ends[np.searchsorted(ends, np.arange(len(u)), side="right")])
        self.up_run_end = np.concatenate(run_end).astype(np.int32)
        self.n_fronts = n_fronts
        # Two stacks of Schur complements, one per depth parity (post-order): a front computes its
        # complement in place on its stack while its children's lie on the other. Peaks of the nb^2
        # and nb terms bound the size for any number of right-hand sides.
        live = np.zeros((2, 2), dtype=np.int64)
        peak = np.zeros((2, 2), dtype=np.int64)
        for i in range(n_fronts):
            for k in fronts[i][3]:
                b = len(fronts[k][2])
                live[self.parity[k]] -= (b * b, b)
            b = len(fronts[i][2])
            live[self.parity[i]] += (b * b, b)
            peak = np.maximum(peak, live)
        self._stack_peak = peak
        m = self.n_interior + self.n_boundary
        ni = self.n_interior
        self._front_width = int(m.max(initial=0))
        self._factor_size = (int((ni * m).sum()), int(ni.sum()))
        self._factor_peak = (int((ni * m).max(initial=0)), int(ni.max(initial=0)))

    def solve(self, weights: np.ndarray, ke: np.ndarray, fe: np.ndarray, *, u0: np.ndarray | None = None,
              return_solution: bool = False):
        """Solve ``K x = b`` for a batch of element weights.

        Parameters
        ----------
        weights : array (N, ny, nx)
            Element weights (moduli) of each system.
        ke : array (8, 8)
            Symmetric element matrix for unit weight.
        fe : array (8, L)
            Element right-hand sides for unit weight.
        u0 : array (8, L), optional, keyword-only
            Element displacements with ``fe = ke @ u0``. Then the returned energy is the minimum
            energy ``sum_e w_e (u0 - x_e)^T ke (u0 - x_e)`` (``x_e`` the element's entries of ``x``,
            zero where prescribed), which equals ``sum_e w_e u0^T ke u0 - b^T K^-1 b`` but is summed
            from non-negative element terms and so keeps its relative accuracy when it is small.
        return_solution : bool, keyword-only
            Also return the solutions.

        Returns
        -------
        energy : array (N, L, L)
            ``b^T K^-1 b``, or the minimum energy if ``u0`` is given.
        x : array (N, n_unknowns, L), only with ``return_solution``.

        Raises
        ------
        SolverError
            If a system is not (numerically) positive definite.
        """
        w = np.ascontiguousarray(np.asarray(weights, dtype=np.float64).reshape(len(weights), -1))
        ke = np.ascontiguousarray(ke, dtype=np.float64)
        fe = np.ascontiguousarray(fe, dtype=np.float64)
        n_load = fe.shape[1]
        energy_form = u0 is not None
        u0 = np.ascontiguousarray(fe if u0 is None else u0, dtype=np.float64)
        if u0.shape != fe.shape:
            raise ValueError(f"MultifrontalPattern.solve: u0 must have the shape of fe {fe.shape}, got {u0.shape}")
        lam, vec = np.linalg.eigh(ke)
        keep = lam > 1e-12 * np.abs(lam).max(initial=0.0)
        modes = np.ascontiguousarray(vec[:, keep] * np.sqrt(lam[keep]))  # ke = modes @ modes.T (ke is PSD)
        energy = np.zeros((len(w), n_load, n_load))
        x = np.zeros((len(w) if return_solution else 0, self.n_unknowns + 1, n_load))
        factor = self._factor_size if (return_solution or energy_form) else self._factor_peak
        sizes = np.array([self._stack_peak[0, 0] + n_load * self._stack_peak[0, 1],
                          self._stack_peak[1, 0] + n_load * self._stack_peak[1, 1],
                          factor[0] + n_load * factor[1], self._front_width + n_load], dtype=np.int64)
        failed = np.zeros(len(w), dtype=bool)
        # Full groups of LANES cells go to the lanes kernel. A remainder of at most LANES / 2 cells is
        # solved cell by cell: a group costs about as much as four or five single-cell solves, whatever the
        # number of cells in it (single cells, e.g. in gradient loops, keep their latency).
        rest = len(w) % LANES
        n_grouped = len(w) - rest if rest <= LANES // 2 else len(w)
        n_groups = -(-n_grouped // LANES)

        def args(lo, hi):
            return (w[lo:hi], ke, fe, u0, self.n_interior, self.n_boundary, self.parity, self.dofs_ptr, self.dofs,
                    self.elem_ptr, self.elem_ids, self.elem_pos, self.elem_order, self.elem_skip, self.child_ptr,
                    self.child_ids, self.up_ptr, self.up_pos, self.up_run_end, self.element_dofs, modes, self.n_unknowns,
                    sizes, PIVOT_RTOL, energy[lo:hi], x[lo:hi], return_solution, energy_form)

        n_threads = max(1, min(numba.get_num_threads(), n_groups + len(w) - n_grouped))

        def work(first):
            # Threads take groups, then single cells, in turn (round robin over both).
            _solve_groups(*args(0, n_grouped), first, n_threads, failed[:n_grouped])
            _solve_strided(*args(n_grouped, len(w)), (first - n_groups) % n_threads, n_threads, failed[n_grouped:])

        if n_threads == 1:
            work(0)
        else:  # work split over threads (numba's prange would triple the first compilation for nothing)
            list(_pool(n_threads).map(work, range(n_threads)))
        if failed.any():
            raise SolverError(f"system {int(np.flatnonzero(failed)[0])} of the batch is singular or not positive definite "
                              "(a zero or negative modulus, or a part held by nothing or by a single node?)")
        if not return_solution:
            return energy
        return energy, x[:, : self.n_unknowns]


_POOL = (None, 0, 0)  # (executor, workers, process id)


def _pool(n_threads: int):
    """A thread pool of n_threads workers (the kernels release the GIL), kept between calls.

    Made anew after a fork (a child process inherits the executor but not its threads).
    """
    global _POOL
    executor, workers, pid = _POOL
    if executor is None or workers != n_threads or pid != os.getpid():
        from concurrent.futures import ThreadPoolExecutor

        if executor is not None and pid == os.getpid():
            executor.shutdown(wait=False)
        executor = ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="metasys-multifrontal")
        _POOL = (executor, n_threads, os.getpid())
    return executor


_FASTMATH = {"reassoc", "contract", "arcp", "nsz"}
# Reassociation and fused multiply-add let LLVM vectorize the remaining scalar loops; NaN/inf semantics
# are kept so that the pivot test still catches a matrix that is not positive definite.

LANES = 8
"""Cells factorized together, one per SIMD lane (eight doubles: one AVX-512 register, two AVX2 ones)."""

_VEC = ir.VectorType(ir.DoubleType(), LANES)


class _LanesType(types.Type):
    """One double per cell of a group, held as one LLVM vector.

    All cells share the pattern, so every front operation is the same for the cells of a group: with
    the cells' entries side by side (the lane index innermost in every array), each scalar operation
    of the single-cell algorithm becomes one vector instruction, whatever the front size. numba
    leaves LLVM's SLP vectorizer off, so the vectors are spelled out (`_load`, `_store`, `_fma`).
    """

    def __init__(self):
        super().__init__(name="Lanes")


_LANES_T = _LanesType()


@register_model(_LanesType)
class _LanesModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VEC)


def _lanes_pointer(context, builder, array_type, array, index_type, index):
    data = context.make_array(array_type)(context, builder, array).data
    at = context.cast(builder, index, index_type, types.intp)
    return builder.bitcast(builder.gep(data, [at]), _VEC.as_pointer())


@intrinsic
def _load(typingctx, a, i):
    """Lanes ``a[i : i + LANES]`` of a contiguous float64 array."""
    def codegen(context, builder, sig, args):
        return builder.load(_lanes_pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1]), align=8)

    return _LANES_T(a, i), codegen


@intrinsic
def _store(typingctx, a, i, v):
    """``a[i : i + LANES] = v``."""
    def codegen(context, builder, sig, args):
        builder.store(args[2], _lanes_pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1]), align=8)
        return context.get_dummy_value()

    return types.none(a, i, v), codegen


@intrinsic
def _splat(typingctx, x):
    """All lanes equal to the float ``x``."""
    def codegen(context, builder, sig, args):
        value = context.cast(builder, args[0], sig.args[0], types.float64)
        one = builder.insert_element(ir.Constant(_VEC, None), value, ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))

    return _LANES_T(x), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` lane by lane, fused."""
    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_VEC] * 3), f"llvm.fma.v{LANES}f64")
        return builder.call(fn, args)

    return _LANES_T(_LANES_T, _LANES_T, _LANES_T), codegen


@intrinsic
def _neg(typingctx, a):
    def codegen(context, builder, sig, args):
        return builder.fsub(ir.Constant(_VEC, [-0.0] * LANES), args[0])

    return _LANES_T(_LANES_T), codegen


@intrinsic
def _add(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])

    return _LANES_T(_LANES_T, _LANES_T), codegen


@intrinsic
def _mul(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.fmul(args[0], args[1])

    return _LANES_T(_LANES_T, _LANES_T), codegen


@intrinsic
def _div(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.fdiv(args[0], args[1])

    return _LANES_T(_LANES_T, _LANES_T), codegen


@intrinsic
def _kernel_attributes(typingctx):
    """Mark the calling function as a kernel: not inlined, and built with 512-bit vectors if the CPU has them.

    Not inlining the kernels into the drivers (some are called from several places) keeps the first
    compilation short (28 s down to a few s); a call costs nothing next to the loops. LLVM defaults
    to 256-bit vectors on AVX-512 CPUs: the single-cell update loops gain 10-20 % with 512, and the
    eight-lane vectors stay whole (elsewhere the hint is void). The width is a plain function
    attribute, added if llvmlite lets us.
    """
    def codegen(context, builder, signature, args):
        builder.function.attributes.add("noinline")
        try:
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        except Exception:  # pragma: no cover - llvmlite internals changed: keep the default width
            pass
        return context.get_dummy_value()

    return types.none(), codegen


_EB = 64  # elements per block in the energy sum


@intrinsic
def _not_inlined(typingctx):
    """Keep LLVM from inlining the calling function (a large one, compiled once, not again into each caller)."""
    def codegen(context, builder, signature, args):
        builder.function.attributes.add("noinline")
        return context.get_dummy_value()

    return types.none(), codegen


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _update8(a, p, r0, m, cols):
    """``a[i, j] -= sum_k p[k, i] p[k, j]`` over the eight panel rows ``p`` for ``r0 <= i < m``, ``i <= j < cols``.

    Two rows at a time, so that each load of the panel feeds sixteen multiply-adds. The panel is a
    C-contiguous array apart from ``a`` whose rows are taken inside (a strided view of a panel, or
    rows passed as separate arguments, halve the speed) and the inner loops run over slices (unit
    stride, non-negative indices): LLVM vectorizes them.
    """
    _kernel_attributes()
    p0, p1, p2, p3, p4, p5, p6, p7 = p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]
    i = r0
    while i < m:
        s0, s1, s2, s3 = p0[i], p1[i], p2[i], p3[i]
        s4, s5, s6, s7 = p4[i], p5[i], p6[i], p7[i]
        a[i, i] -= (s0 * s0 + s1 * s1 + s2 * s2 + s3 * s3) + (s4 * s4 + s5 * s5 + s6 * s6 + s7 * s7)
        lo = i + 1
        q0, q1, q2, q3 = p0[lo:cols], p1[lo:cols], p2[lo:cols], p3[lo:cols]
        q4, q5, q6, q7 = p4[lo:cols], p5[lo:cols], p6[lo:cols], p7[lo:cols]
        ai = a[i, lo:cols]
        if lo == m:
            for j in range(cols - lo):
                ai[j] -= (s0 * q0[j] + s1 * q1[j] + s2 * q2[j] + s3 * q3[j]) + (s4 * q4[j] + s5 * q5[j] + s6 * q6[j] + s7 * q7[j])
            break
        t0, t1, t2, t3 = p0[lo], p1[lo], p2[lo], p3[lo]
        t4, t5, t6, t7 = p4[lo], p5[lo], p6[lo], p7[lo]
        bi = a[lo, lo:cols]
        for j in range(cols - lo):
            v0, v1, v2, v3, v4, v5, v6, v7 = q0[j], q1[j], q2[j], q3[j], q4[j], q5[j], q6[j], q7[j]
            ai[j] -= (s0 * v0 + s1 * v1 + s2 * v2 + s3 * v3) + (s4 * v4 + s5 * v5 + s6 * v6 + s7 * v7)
            bi[j] -= (t0 * v0 + t1 * v1 + t2 * v2 + t3 * v3) + (t4 * v4 + t5 * v5 + t6 * v6 + t7 * v7)
        i += 2


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _update4(a, p, r0, m, cols):
    """`_update8` for a panel of four rows."""
    _kernel_attributes()
    p0, p1, p2, p3 = p[0], p[1], p[2], p[3]
    i = r0
    while i < m:
        s0, s1, s2, s3 = p0[i], p1[i], p2[i], p3[i]
        a[i, i] -= s0 * s0 + s1 * s1 + s2 * s2 + s3 * s3
        lo = i + 1
        q0, q1, q2, q3 = p0[lo:cols], p1[lo:cols], p2[lo:cols], p3[lo:cols]
        ai = a[i, lo:cols]
        if lo == m:
            for j in range(cols - lo):
                ai[j] -= s0 * q0[j] + s1 * q1[j] + s2 * q2[j] + s3 * q3[j]
            break
        t0, t1, t2, t3 = p0[lo], p1[lo], p2[lo], p3[lo]
        bi = a[lo, lo:cols]
        for j in range(cols - lo):
            v0, v1, v2, v3 = q0[j], q1[j], q2[j], q3[j]
            ai[j] -= s0 * v0 + s1 * v1 + s2 * v2 + s3 * v3
            bi[j] -= t0 * v0 + t1 * v1 + t2 * v2 + t3 * v3
        i += 2


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _panel8(p, u, inv, lo, hi):
    """Columns ``lo <= j < hi`` of the eight rows ``p`` := ``U^-T p`` in place (U = ``u``, 8 x 8 upper, 1 / diagonal ``inv``).

    Forward substitution two rows per pass over the columns: each pass writes two rows and reads
    only rows before them, which LLVM vectorizes (a single pass over all eight rows it does not).
    """
    _kernel_attributes()
    _panel4(p, u, inv, lo, hi)  # rows 0-3 first: the same operations as for a four-row panel
    n = hi - lo
    p0, p1, p2, p3 = p[0, lo:hi], p[1, lo:hi], p[2, lo:hi], p[3, lo:hi]
    p4, p5, p6, p7 = p[4, lo:hi], p[5, lo:hi], p[6, lo:hi], p[7, lo:hi]
    i4, i5 = inv[4], inv[5]
    u04, u14, u24, u34 = u[0, 4], u[1, 4], u[2, 4], u[3, 4]
    u05, u15, u25, u35, u45 = u[0, 5], u[1, 5], u[2, 5], u[3, 5], u[4, 5]
    for j in range(n):
        a0, a1, a2, a3 = p0[j], p1[j], p2[j], p3[j]
        x4 = (p4[j] - u04 * a0 - u14 * a1 - u24 * a2 - u34 * a3) * i4
        p4[j] = x4
        p5[j] = (p5[j] - u05 * a0 - u15 * a1 - u25 * a2 - u35 * a3 - u45 * x4) * i5
    i6, i7 = inv[6], inv[7]
    u06, u16, u26, u36, u46, u56 = u[0, 6], u[1, 6], u[2, 6], u[3, 6], u[4, 6], u[5, 6]
    u07, u17, u27, u37, u47, u57, u67 = u[0, 7], u[1, 7], u[2, 7], u[3, 7], u[4, 7], u[5, 7], u[6, 7]
    for j in range(n):
        a0, a1, a2, a3, a4, a5 = p0[j], p1[j], p2[j], p3[j], p4[j], p5[j]
        x6 = (p6[j] - u06 * a0 - u16 * a1 - u26 * a2 - u36 * a3 - u46 * a4 - u56 * a5) * i6
        p6[j] = x6
        p7[j] = (p7[j] - u07 * a0 - u17 * a1 - u27 * a2 - u37 * a3 - u47 * a4 - u57 * a5 - u67 * x6) * i7


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _panel4(p, u, inv, lo, hi):
    """`_panel8` for four rows."""
    _kernel_attributes()
    n = hi - lo
    p0, p1, p2, p3 = p[0, lo:hi], p[1, lo:hi], p[2, lo:hi], p[3, lo:hi]
    i0, i1, u01 = inv[0], inv[1], u[0, 1]
    for j in range(n):
        x0 = p0[j] * i0
        p0[j] = x0
        p1[j] = (p1[j] - u01 * x0) * i1
    i2, i3 = inv[2], inv[3]
    u02, u12, u03, u13, u23 = u[0, 2], u[1, 2], u[0, 3], u[1, 3], u[2, 3]
    for j in range(n):
        a0, a1 = p0[j], p1[j]
        x2 = (p2[j] - u02 * a0 - u12 * a1) * i2
        p2[j] = x2
        p3[j] = (p3[j] - u03 * a0 - u13 * a1 - u23 * x2) * i3


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _solve_one(w, ke, fe, u0, n_int, n_bnd, parity, dofs_ptr, dofs, elem_ptr, elem_ids, elem_pos, elem_order, elem_skip,
               child_ptr, child_ids, up_ptr, up_pos, up_run_end, element_dofs, modes, rtol, diag, stack0, stack1, factor,
               panel, tpanel, ublk, inv, upd_off, fac_off, xl, x, energy, want_x, energy_form, ebuf):
    """Factorize one cell front by front (post-order), then solve; returns False if a pivot is too small.

    A front of ``ni`` eliminated and ``nb`` boundary unknowns is held as its factor rows ``F``
    (ni, ni + nb + L), written straight into ``factor``, and its trailing block ``T``
    (nb, nb + L), computed in place on the stack of its depth parity. Upper triangles only.
    """
    _not_inlined()
    n_load = fe.shape[1]
    n_fronts = len(n_int)
    n = len(diag) - 1
    # Diagonal of K, the scale of each row's pivot.
    diag[:] = 0.0
    for e in range(len(w)):
        we = w[e]
        for i in range(8):
            diag[element_dofs[e, i]] += we * ke[i, i]
    sp0 = 0
    sp1 = 0
    fp = 0
    for f in range(n_fronts):
        ni = n_int[f]
        nb = n_bnd[f]
        m = ni + nb
        cols = m + n_load
        wt = nb + n_load
        # Pop the children (on the other stack); the trailing block goes on top of this front's stack.
        if child_ptr[f] < child_ptr[f + 1]:
            first = upd_off[child_ids[child_ptr[f]]]
            if parity[f] == 0:
                sp1 = first
            else:
                sp0 = first
        if parity[f] == 0:
            stk, other, sp = stack0, stack1, sp0
        else:
            stk, other, sp = stack1, stack0, sp1
        fa = factor[fp : fp + ni * cols].reshape((ni, cols))
        t = stk[sp : sp + nb * wt].reshape((nb, wt))
        for i in range(ni):
            fa[i, i:] = 0.0
        for i in range(nb):
            t[i, i:] = 0.0
        # Element contributions (leaves): upper triangle only, the matrix is symmetric; local dofs
        # taken in the order of their positions, prescribed ones (position -1) skipped.
        for e in range(elem_ptr[f], elem_ptr[f + 1]):
            we = w[elem_ids[e]]
            order = elem_order[e]
            for a in range(elem_skip[e], 8):
                i = order[a]
                pi = elem_pos[e, i]
                if pi < ni:
                    row, off = fa[pi], 0
                else:
                    row, off = t[pi - ni], ni
                for b in range(a, 8):
                    j = order[b]
                    row[elem_pos[e, j] - off] += we * ke[i, j]
                for load in range(n_load):
                    row[m - off + load] += we * fe[i, load]
        # Extend-add of the children's Schur complements; their positions here increase.
        for c_at in range(child_ptr[f], child_ptr[f + 1]):
            c = child_ids[c_at]
            nbc = n_bnd[c]
            wc = nbc + n_load
            src = other[upd_off[c] : upd_off[c] + nbc * wc].reshape((nbc, wc))
            pos = up_pos[up_ptr[c] : up_ptr[c + 1]]
            run_end = up_run_end[up_ptr[c] : up_ptr[c + 1]]
            for i in range(nbc):
                pi = pos[i]
                if pi < ni:
                    row, off = fa[pi], 0
                else:
                    row, off = t[pi - ni], ni
                s = src[i]
                j = i
                while j < nbc:
                    e = run_end[j]
                    dst = row[pos[j] - off : pos[j] - off + e - j]
                    seg = s[j:e]
                    for q in range(e - j):
                        dst[q] += seg[q]
                    j = e
                dst = row[m - off : m - off + n_load]
                seg = s[nbc:wc]
                for load in range(n_load):
                    dst[load] += seg[load]
        # Partial right-looking Cholesky of the ni pivots, eight at a time: the panel's rows are
        # factored, then the remaining rows of F and the trailing block T are updated by the panel.
        fd = dofs[dofs_ptr[f] : dofs_ptr[f + 1]]
        for k0 in range(0, ni, 8):
            k1 = min(k0 + 8, ni)
            nr = k1 - k0
            nk = 4 if nr <= 4 else 8
            # The panel's diagonal block (scalar Cholesky), rows beyond nr padded with the identity.
            if nr < nk:
                for r in range(nk):
                    for c in range(nk):
                        ublk[r, c] = 0.0
                    inv[r] = 1.0
            for r in range(nr):
                for c in range(r, nr):
                    v = fa[k0 + r, k0 + c]
                    for q in range(r):
                        v -= ublk[q, r] * ublk[q, c]
                    if c == r:
                        if not v > rtol * diag[fd[k0 + r]]:
                            return False
                        d = np.sqrt(v)
                        ublk[r, r] = d
                        inv[r] = 1.0 / d
                    else:
                        ublk[r, c] = v * inv[r]
                for c in range(r, nr):
                    fa[k0 + r, k0 + c] = ublk[r, c]
            # The rest of the panel rows, U^-T times them: in place for a full panel, else in the
            # contiguous panel with zero rows as padding.
            if nr == nk:
                rows = fa[k0:k1]
                if nk == 8:
                    _panel8(rows, ublk, inv, k1, cols)
                else:
                    _panel4(rows, ublk, inv, k1, cols)
                if k1 < ni:  # the panel updates more pivot rows (else only T, from tpanel below)
                    for r in range(nk):
                        panel[r, k1:cols] = rows[r, k1:cols]
            else:
                for r in range(nk):
                    if r < nr:
                        panel[r, k1:cols] = fa[k0 + r, k1:cols]
                    else:
                        panel[r, k1:cols] = 0.0
                if nk == 8:
                    _panel8(panel, ublk, inv, k1, cols)
                else:
                    _panel4(panel, ublk, inv, k1, cols)
                for r in range(nr):
                    fa[k0 + r, k1:cols] = panel[r, k1:cols]
            if k1 == m:
                continue
            if nr == nk and k1 == ni:
                for r in range(nk):
                    tpanel[r, :wt] = fa[k0 + r, ni:cols]
            else:
                for r in range(nk):
                    tpanel[r, :wt] = panel[r, ni:cols]
            if nk == 8:
                _update8(fa, panel, k1, ni, cols)
                _update8(t, tpanel, 0, nb, wt)
            else:
                _update4(fa, panel, k1, ni, cols)
                _update4(t, tpanel, 0, nb, wt)
        if not energy_form:
            for k in range(ni):
                for l1 in range(n_load):
                    for l2 in range(n_load):
                        energy[l1, l2] += fa[k, m + l1] * fa[k, m + l2]
        upd_off[f] = sp
        if parity[f] == 0:
            sp0 = sp + nb * wt
        else:
            sp1 = sp + nb * wt
        fac_off[f] = fp
        if want_x:
            fp += ni * cols
    if want_x:
        # Back substitution, fronts in reverse order, on a contiguous copy of the front's unknowns;
        # x[n] is the zero slot of prescribed unknowns.
        x[n, :] = 0.0
        for f in range(n_fronts - 1, -1, -1):
            ni = n_int[f]
            m = ni + n_bnd[f]
            cols = m + n_load
            fd = dofs[dofs_ptr[f] : dofs_ptr[f + 1]]
            fa = factor[fac_off[f] : fac_off[f] + ni * cols].reshape((ni, cols))
            for load in range(n_load):
                xs = xl[load]
                for j in range(ni, m):
                    xs[j] = x[fd[j], load]
            if n_load == 3:
                # The three load cases in one pass over each factor row.
                x0, x1, x2 = xl[0], xl[1], xl[2]
                for k in range(ni - 1, -1, -1):
                    r = fa[k, k + 1 : m]
                    y0, y1, y2 = x0[k + 1 : m], x1[k + 1 : m], x2[k + 1 : m]
                    v0 = v1 = v2 = 0.0
                    for j in range(m - k - 1):
                        rj = r[j]
                        v0 += rj * y0[j]
                        v1 += rj * y1[j]
                        v2 += rj * y2[j]
                    d = fa[k, k]
                    x0[k] = (fa[k, m] - v0) / d
                    x1[k] = (fa[k, m + 1] - v1) / d
                    x2[k] = (fa[k, m + 2] - v2) / d
            else:
                for load in range(n_load):
                    xs = xl[load]
                    for k in range(ni - 1, -1, -1):
                        r = fa[k, k + 1 : m]
                        xr = xs[k + 1 : m]
                        v = 0.0
                        for j in range(m - k - 1):
                            v += r[j] * xr[j]
                        xs[k] = (fa[k, m + load] - v) / fa[k, k]
            for load in range(n_load):
                xs = xl[load]
                for k in range(ni):
                    x[fd[k], load] = xs[k]
    if energy_form:
        # Minimum energy sum_e w_e (u0 - x_e)^T ke (u0 - x_e): non-negative terms, no cancellation.
        # With ke = W W^T (W = ``modes``, its eigenvectors of non-zero eigenvalue scaled by their
        # square roots), an element's energy is |W^T u_e|^2: the rigid part of u_e (the null space
        # of ke) drops out exactly instead of leaving the round-off of ke times a large
        # displacement, e.g. of a nearly rigid solid layer sliding and turning on a soft one.
        # Displacements are taken relative to the element's first node (ke annihilates translations).
        # Elements in blocks of _EB, each quantity a contiguous vector over the block's elements.
        n_modes = modes.shape[1]
        n_elem = len(w)
        ub = ebuf[: 8 * n_load * _EB].reshape((8, n_load, _EB))
        zb = ebuf[8 * n_load * _EB : (8 + n_modes) * n_load * _EB].reshape((n_modes, n_load, _EB))
        for e0 in range(0, n_elem, _EB):
            ne = min(_EB, n_elem - e0)
            for e in range(ne):
                g0 = element_dofs[e0 + e, 0]
                g1 = element_dofs[e0 + e, 1]
                for i in range(8):
                    g = element_dofs[e0 + e, i]
                    ref = g0 if i % 2 == 0 else g1
                    for load in range(n_load):
                        ub[i, load, e] = (u0[i, load] - u0[i % 2, load]) - (x[g, load] - x[ref, load])
            for r in range(n_modes):
                for load in range(n_load):
                    zr = zb[r, load, :ne]
                    for e in range(ne):
                        zr[e] = 0.0
                    for i in range(8):
                        c = modes[i, r]
                        ui = ub[i, load, :ne]
                        for e in range(ne):
                            zr[e] += c * ui[e]
            we = w[e0 : e0 + ne]
            for l1 in range(n_load):
                for l2 in range(n_load):
                    acc = 0.0
                    for r in range(n_modes):
                        z1 = zb[r, l1, :ne]
                        z2 = zb[r, l2, :ne]
                        for e in range(ne):
                            acc += we[e] * z1[e] * z2[e]
                    energy[l1, l2] += acc
    return True


@numba.njit(cache=True, nogil=True)
def _solve_strided(w, ke, fe, u0, n_int, n_bnd, parity, dofs_ptr, dofs, elem_ptr, elem_ids, elem_pos, elem_order,
                   elem_skip, child_ptr, child_ids, up_ptr, up_pos, up_run_end, element_dofs, modes, n, sizes, rtol, energy,
                   x, want_solution, energy_form, first, step, failed):
    """Cells first, first + step, ... with one workspace (a worker thread's share; the GIL is released)."""
    n_cells = len(w)
    n_load = fe.shape[1]
    want_x = want_solution or energy_form
    diag = np.empty(n + 1)
    # Only the upper triangles of the fronts are ever read, and they are zeroed front by front.
    stack0 = np.empty(sizes[0])
    stack1 = np.empty(sizes[1])
    factor = np.empty(sizes[2])
    panel = np.zeros((8, sizes[3]))
    tpanel = np.zeros((8, sizes[3]))
    ebuf = np.zeros((8 + modes.shape[1]) * n_load * _EB)
    ublk = np.zeros((8, 8))
    inv = np.ones(8)
    upd_off = np.zeros(len(n_int), dtype=np.int64)
    fac_off = np.zeros(len(n_int), dtype=np.int64)
    xl = np.zeros((n_load, sizes[3]))
    xs = np.zeros((n + 1 if want_x else 0, n_load))
    for s in range(first, n_cells, step):
        ok = _solve_one(w[s], ke, fe, u0, n_int, n_bnd, parity, dofs_ptr, dofs, elem_ptr, elem_ids, elem_pos,
                        elem_order, elem_skip, child_ptr, child_ids, up_ptr, up_pos, up_run_end, element_dofs, modes, rtol,
                        diag, stack0, stack1, factor, panel, tpanel, ublk, inv, upd_off, fac_off, xl, xs, energy[s], want_x,
                        energy_form, ebuf)
        failed[s] = not ok
        if ok and want_solution:
            x[s] = xs


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _update(a, p0, p1, p2, p3, r0, r1, shift):
    """``a[r, c] -= sum_q p_q[r + shift] p_q[c + shift]`` for ``r0 <= r < r1``, ``r <= c`` (entries of LANES lanes).

    ``a`` (rows, width * LANES) is the upper triangle of a front block, ``p_q`` four pivot rows (a
    zero row where a group has fewer pivots). Two rows a pass, so that each load of the pivot rows
    feeds eight fused multiply-adds.
    """
    _kernel_attributes()
    width = a.shape[1] // LANES
    r = r0
    while r < r1:
        ar = a[r]
        o = (r + shift) * LANES
        s0, s1, s2, s3 = _neg(_load(p0, o)), _neg(_load(p1, o)), _neg(_load(p2, o)), _neg(_load(p3, o))
        first = r * LANES
        v = _fma(s0, _load(p0, o), _fma(s1, _load(p1, o), _fma(s2, _load(p2, o), _fma(s3, _load(p3, o), _load(ar, first)))))
        _store(ar, first, v)
        if r + 1 == r1:
            for c in range(r + 1, width):
                at, po = c * LANES, (c + shift) * LANES
                v = _fma(s3, _load(p3, po), _load(ar, at))
                v = _fma(s0, _load(p0, po), _fma(s1, _load(p1, po), _fma(s2, _load(p2, po), v)))
                _store(ar, at, v)
            break
        br = a[r + 1]
        o += LANES
        t0, t1, t2, t3 = _neg(_load(p0, o)), _neg(_load(p1, o)), _neg(_load(p2, o)), _neg(_load(p3, o))
        for c in range(r + 1, width):
            at, po = c * LANES, (c + shift) * LANES
            q0, q1, q2, q3 = _load(p0, po), _load(p1, po), _load(p2, po), _load(p3, po)
            _store(ar, at, _fma(s0, q0, _fma(s1, q1, _fma(s2, q2, _fma(s3, q3, _load(ar, at))))))
            _store(br, at, _fma(t0, q0, _fma(t1, q1, _fma(t2, q2, _fma(t3, q3, _load(br, at))))))
        r += 2


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _solve_group(wl, ke, fe, u0, n_int, n_bnd, parity, dofs_ptr, dofs, elem_ptr, elem_ids, elem_pos, elem_order, elem_skip,
                 child_ptr, child_ids, up_ptr, up_pos, up_run_end, element_dofs, modes, rtol, diag, stack0, stack1, factor,
                 zero, inv, upd_off, fac_off, xl, x, energy, bad, want_x, energy_form, ebuf):
    """Factorize the LANES cells of a group front by front (post-order), then solve.

    Every array holds LANES lanes per entry, lane innermost: ``wl`` (elements * LANES) the weights,
    ``x`` ((n + 1) * L * LANES) the solutions, ``energy`` (L * L * LANES). A front of ``ni``
    eliminated and ``nb`` boundary unknowns is held as its factor rows ``F`` (ni, ni + nb + L),
    written straight into ``factor``, and its trailing block ``T`` (nb, nb + L), computed in place on
    the stack of its depth parity. Upper triangles only. A lane whose pivot fails the test is marked
    in ``bad`` and goes on with pivot 1 (its results are discarded), so the other lanes are solved.
    """
    _kernel_attributes()
    n_load = fe.shape[1]
    n_fronts = len(n_int)
    # Diagonal of K, the scale of each row's pivot.
    diag[:] = 0.0
    for e in range(len(element_dofs)):
        we = _load(wl, e * LANES)
        for i in range(8):
            at = element_dofs[e, i] * LANES
            _store(diag, at, _fma(we, _splat(ke[i, i]), _load(diag, at)))
    sp0 = 0
    sp1 = 0
    fp = 0
    for f in range(n_fronts):
        ni = n_int[f]
        nb = n_bnd[f]
        m = ni + nb
        cols = m + n_load
        wt = nb + n_load
        # Pop the children (on the other stack); the trailing block goes on top of this front's stack.
        if child_ptr[f] < child_ptr[f + 1]:
            first = upd_off[child_ids[child_ptr[f]]]
            if parity[f] == 0:
                sp1 = first
            else:
                sp0 = first
        if parity[f] == 0:
            stk, other, sp = stack0, stack1, sp0
        else:
            stk, other, sp = stack1, stack0, sp1
        fa = factor[fp * LANES : (fp + ni * cols) * LANES].reshape((ni, cols * LANES))
        t = stk[sp * LANES : (sp + nb * wt) * LANES].reshape((nb, wt * LANES))
        for i in range(ni):
            fa[i, i * LANES :] = 0.0
        for i in range(nb):
            t[i, i * LANES :] = 0.0
        # Element contributions (leaves): upper triangle only, the matrix is symmetric; local dofs
        # taken in the order of their positions, prescribed ones (position -1) skipped.
        for e in range(elem_ptr[f], elem_ptr[f + 1]):
            we = _load(wl, elem_ids[e] * LANES)
            order = elem_order[e]
            for a in range(elem_skip[e], 8):
                i = order[a]
                pi = elem_pos[e, i]
                if pi < ni:
                    row, off = fa[pi], 0
                else:
                    row, off = t[pi - ni], ni
                for b in range(a, 8):
                    j = order[b]
                    at = (elem_pos[e, j] - off) * LANES
                    _store(row, at, _fma(we, _splat(ke[i, j]), _load(row, at)))
                for load in range(n_load):
                    at = (m - off + load) * LANES
                    _store(row, at, _fma(we, _splat(fe[i, load]), _load(row, at)))
        # Extend-add of the children's Schur complements, run by run of consecutive positions here.
        for c_at in range(child_ptr[f], child_ptr[f + 1]):
            c = child_ids[c_at]
            nbc = n_bnd[c]
            wc = nbc + n_load
            src = other[upd_off[c] * LANES : (upd_off[c] + nbc * wc) * LANES].reshape((nbc, wc * LANES))
            pos = up_pos[up_ptr[c] : up_ptr[c + 1]]
            run_end = up_run_end[up_ptr[c] : up_ptr[c + 1]]
            for i in range(nbc):
                pi = pos[i]
                if pi < ni:
                    row, off = fa[pi], 0
                else:
                    row, off = t[pi - ni], ni
                s = src[i]
                j = i
                while j < nbc:
                    e = run_end[j]
                    to = (pos[j] - off - j) * LANES
                    for q in range(j * LANES, e * LANES, LANES):
                        _store(row, to + q, _add(_load(row, to + q), _load(s, q)))
                    j = e
                to = (m - off - nbc) * LANES
                for q in range(nbc * LANES, wc * LANES, LANES):
                    _store(row, to + q, _add(_load(row, to + q), _load(s, q)))
        # Partial Cholesky of the ni pivots, four at a time: the group's rows are factored (each
        # updated by the group's earlier rows), then the rest of F and T by the four rows at once.
        fd = dofs[dofs_ptr[f] : dofs_ptr[f + 1]]
        for k0 in range(0, ni, 4):
            k1 = min(k0 + 4, ni)
            for k in range(k0, k1):
                rk = fa[k]
                for q in range(k0, k):
                    rq = fa[q]
                    s = _neg(_load(rq, k * LANES))
                    for at in range(k * LANES, cols * LANES, LANES):
                        _store(rk, at, _fma(s, _load(rq, at), _load(rk, at)))
                for lane in range(LANES):
                    v = rk[k * LANES + lane]
                    if not v > rtol * diag[fd[k] * LANES + lane]:
                        bad[lane] = True
                        v = 1.0
                    d = np.sqrt(v)
                    rk[k * LANES + lane] = d
                    inv[lane] = 1.0 / d
                scale = _load(inv, 0)
                for at in range((k + 1) * LANES, cols * LANES, LANES):
                    _store(rk, at, _mul(scale, _load(rk, at)))
            if k1 < m:
                p0 = fa[k0]
                p1 = fa[k0 + 1] if k0 + 1 < k1 else zero
                p2 = fa[k0 + 2] if k0 + 2 < k1 else zero
                p3 = fa[k0 + 3] if k0 + 3 < k1 else zero
                _update(fa, p0, p1, p2, p3, k1, ni, 0)
                _update(t, p0, p1, p2, p3, 0, nb, ni)
        if not energy_form:
            for k in range(ni):
                for l1 in range(n_load):
                    y1 = _load(fa[k], (m + l1) * LANES)
                    for l2 in range(n_load):
                        at = (l1 * n_load + l2) * LANES
                        _store(energy, at, _fma(y1, _load(fa[k], (m + l2) * LANES), _load(energy, at)))
        upd_off[f] = sp
        if parity[f] == 0:
            sp0 = sp + nb * wt
        else:
            sp1 = sp + nb * wt
        fac_off[f] = fp
        if want_x:
            fp += ni * cols
    if want_x:
        _back_substitution(n_int, n_bnd, dofs_ptr, dofs, factor, fac_off, xl, x, n_load)
    if energy_form:
        _element_energy(wl, u0, element_dofs, modes, x, energy, ebuf)


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _back_substitution(n_int, n_bnd, dofs_ptr, dofs, factor, fac_off, xl, x, n_load):
    """``x`` from the factor rows, fronts in reverse order, on a contiguous copy of each front's unknowns.

    ``xl`` holds a front's unknowns load case by load case; ``x[n]`` is the zero slot of prescribed
    unknowns. Each dot product runs on two accumulators (two chains of dependent fused multiply-adds).
    """
    _kernel_attributes()
    n = len(x) // (n_load * LANES) - 1
    width = len(xl) // n_load
    x[n * n_load * LANES :] = 0.0
    for f in range(len(n_int) - 1, -1, -1):
        ni = n_int[f]
        m = ni + n_bnd[f]
        cols = m + n_load
        fd = dofs[dofs_ptr[f] : dofs_ptr[f + 1]]
        fa = factor[fac_off[f] * LANES : (fac_off[f] + ni * cols) * LANES].reshape((ni, cols * LANES))
        for load in range(n_load):
            xs = xl[load * width : (load + 1) * width]
            for j in range(ni, m):
                _store(xs, j * LANES, _load(x, (fd[j] * n_load + load) * LANES))
            for k in range(ni - 1, -1, -1):
                r = fa[k]
                acc0 = _load(r, (m + load) * LANES)
                acc1 = _splat(0.0)
                j = k + 1
                while j + 1 < m:
                    acc0 = _fma(_neg(_load(r, j * LANES)), _load(xs, j * LANES), acc0)
                    acc1 = _fma(_neg(_load(r, (j + 1) * LANES)), _load(xs, (j + 1) * LANES), acc1)
                    j += 2
                if j < m:
                    acc0 = _fma(_neg(_load(r, j * LANES)), _load(xs, j * LANES), acc0)
                _store(xs, k * LANES, _div(_add(acc0, acc1), _load(r, k * LANES)))
            for k in range(ni):
                _store(x, (fd[k] * n_load + load) * LANES, _load(xs, k * LANES))


@numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _element_energy(wl, u0, element_dofs, modes, x, energy, ebuf):
    """Minimum energy ``sum_e w_e (u0 - x_e)^T ke (u0 - x_e)``: non-negative terms, no cancellation.

    With ke = W W^T (W = ``modes``, its eigenvectors of non-zero eigenvalue scaled by their square
    roots), an element's energy is |W^T u_e|^2: the rigid part of u_e (the null space of ke) drops
    out exactly instead of leaving the round-off of ke times a large displacement, e.g. of a nearly
    rigid solid layer sliding and turning on a soft one. Displacements are taken relative to the
    element's first node (ke annihilates translations).
    """
    _kernel_attributes()
    n_load = u0.shape[1]
    n_modes = modes.shape[1]
    ub = ebuf[: 8 * n_load * LANES]
    zb = ebuf[8 * n_load * LANES : (8 + n_modes) * n_load * LANES]
    for e in range(len(element_dofs)):
        g0 = element_dofs[e, 0]
        g1 = element_dofs[e, 1]
        for i in range(8):
            g = element_dofs[e, i]
            ref = g0 if i % 2 == 0 else g1
            for load in range(n_load):
                moved = _add(_load(x, (g * n_load + load) * LANES), _neg(_load(x, (ref * n_load + load) * LANES)))
                _store(ub, (i * n_load + load) * LANES, _add(_splat(u0[i, load] - u0[i % 2, load]), _neg(moved)))
        for r in range(n_modes):
            for load in range(n_load):
                z = _splat(0.0)
                for i in range(8):
                    z = _fma(_splat(modes[i, r]), _load(ub, (i * n_load + load) * LANES), z)
                _store(zb, (r * n_load + load) * LANES, z)
        we = _load(wl, e * LANES)
        for l1 in range(n_load):
            for l2 in range(n_load):
                acc = _splat(0.0)
                for r in range(n_modes):
                    acc = _fma(_load(zb, (r * n_load + l1) * LANES), _load(zb, (r * n_load + l2) * LANES), acc)
                at = (l1 * n_load + l2) * LANES
                _store(energy, at, _fma(we, acc, _load(energy, at)))


@numba.njit(cache=True, nogil=True)
def _solve_groups(w, ke, fe, u0, n_int, n_bnd, parity, dofs_ptr, dofs, elem_ptr, elem_ids, elem_pos, elem_order,
                  elem_skip, child_ptr, child_ids, up_ptr, up_pos, up_run_end, element_dofs, modes, n, sizes, rtol, energy,
                  x, want_solution, energy_form, first, step, failed):
    """Groups first, first + step, ... of LANES cells with one workspace (a worker thread's share; the GIL is released).

    A last group of fewer cells fills its spare lanes with its first cell (solved, then dropped).
    """
    n_cells = len(w)
    n_elem = w.shape[1]
    n_load = fe.shape[1]
    want_x = want_solution or energy_form
    wl = np.empty(n_elem * LANES)
    diag = np.empty((n + 1) * LANES)
    # Only the upper triangles of the fronts are ever read, and they are zeroed front by front.
    stack0 = np.empty(sizes[0] * LANES)
    stack1 = np.empty(sizes[1] * LANES)
    factor = np.empty(sizes[2] * LANES)
    zero = np.zeros(sizes[3] * LANES)
    inv = np.ones(LANES)
    xl = np.zeros(n_load * sizes[3] * LANES)
    ebuf = np.zeros((8 + modes.shape[1]) * n_load * LANES)
    upd_off = np.zeros(len(n_int), dtype=np.int64)
    fac_off = np.zeros(len(n_int), dtype=np.int64)
    xs = np.zeros((n + 1 if want_x else 0) * n_load * LANES)
    el = np.zeros(n_load * n_load * LANES)
    bad = np.zeros(LANES, dtype=np.bool_)
    for g in range(first, (n_cells + LANES - 1) // LANES, step):
        s0 = g * LANES
        used = min(LANES, n_cells - s0)
        for e in range(n_elem):
            for lane in range(LANES):
                wl[e * LANES + lane] = w[s0 + lane if lane < used else s0, e]
        el[:] = 0.0
        bad[:] = False
        _solve_group(wl, ke, fe, u0, n_int, n_bnd, parity, dofs_ptr, dofs, elem_ptr, elem_ids, elem_pos, elem_order,
                     elem_skip, child_ptr, child_ids, up_ptr, up_pos, up_run_end, element_dofs, modes, rtol, diag, stack0,
                     stack1, factor, zero, inv, upd_off, fac_off, xl, xs, el, bad, want_x, energy_form, ebuf)
        for lane in range(used):
            failed[s0 + lane] = bad[lane]
            for l1 in range(n_load):
                for l2 in range(n_load):
                    energy[s0 + lane, l1, l2] = el[(l1 * n_load + l2) * LANES + lane]
            if want_solution:
                for i in range(n + 1):
                    for load in range(n_load):
                        x[s0 + lane, i, load] = xs[(i * n_load + load) * LANES + lane]
