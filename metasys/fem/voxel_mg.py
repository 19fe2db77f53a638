"""Geometric multigrid on the regular voxel grid: compiled stencil kernels, Galerkin coarse levels, block PCG.

The voxel systems of `metasys.fem.voxel` and `metasys.fem.voxel_affine` live on a regular torus of nodes
(one node per voxel; an open box is a torus whose last voxel layer has zero stiffness). Instead of a sparse
matrix and an algebraic hierarchy, this module keeps every level as a **27-point block stencil**
``S[z, d, r, c, y, x]`` (3 x 3 blocks; z-plane major, rows of x padded by two zero columns, so that the
compiled kernels run one long contiguous loop per plane, neighbour and block row) and applies it with
serial numba kernels that release the GIL (no index arrays). ``parallel=True`` was measured and dropped:
on the shared, loaded 2-core machine every parallel region cost ~13 ms of synchronisation (a 16^3 product
16.5 ms on two threads, 3.7 ms on one); see ``docs/api/fem3d.md``.

Hierarchy: 2x coarsening per axis (a periodic axis of even side ``N -> N / 2``, an open axis of odd side
``N -> (N + 1) / 2``, other axes are not coarsened), trilinear prolongation ``P``, restriction ``P^T``.
The coarse operators are the **Galerkin** products ``P^T A P``, built element by element: trilinear
interpolation inside a coarse voxel only uses that voxel's 8 nodes, so ``P^T A P`` is the assembly of the
coarse element matrices ``sum_children P_c^T k_child P_c`` (the first level from the fine moduli and the
element basis with a fixed table, the others by batched 24 x 24 products). Galerkin coarse operators see
the material (the 1e-9 void of a binary cell included), which a rediscretization would not.

Cycle: V(k, k) with a Chebyshev polynomial in the point-block (3 x 3) Jacobi preconditioned operator as the
smoother (only stencil products: no sequential sweeps, so it runs on all cores), an exact dense Cholesky on
the coarsest level (a few hundred unknowns). The preconditioner runs in float32 (half the memory traffic of
the stencils, which dominates); the outer **block** flexible CG runs in float64 with a float64 fine stencil,
so the tolerance refers to the float64 system. All right-hand sides (the six load cases) share one Krylov
space: each step A-orthonormalizes the block of preconditioned residuals against the previous block (a
flexible CG truncated to one block, which tolerates the float32 rounding of the cycle) and updates every
column in it. The slow modes of the cycle (material interfaces that trilinear interpolation misses) are then
resolved once for all load cases: 14 instead of 21 iterations at 32^3 (one CG per column, as before).

Prescribed (fixed) nodes have their rows and columns replaced by ``scale * I`` on every level (coarse node
fixed where its fine node is), so the corrections vanish there.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from numba import njit

from ..errors import SolverError
from .voxel_element import NODE_OFFSETS

COARSEST = 800
"""Coarsen while a level has more unknowns than this (and an axis can be coarsened)."""

_OFFS = NODE_OFFSETS[:, ::-1].copy()  # (8, 3) local node offsets in (z, y, x) order


# ------------------------------------------------------------------------------------------------ kernels
@njit(fastmath=True, cache=True, nogil=True)
def _stencil_apply(s, x, b, y, subtract):
    """``y = s x`` (``subtract``: ``y = b - s x``); s (nz, 27, 3, 3, ny * (nx + 2)) (`plane_view`), x, b, y (L, 3, nz, ny, nx).

    The z-planes of x are copied with a periodic margin of one node in y and x, rows of ``nx + 2``; a
    neighbour ``(dy, dx)`` is then a fixed offset in the flattened plane, so each pass is one long loop over
    ``ny * (nx + 2)`` entries (the two margin columns of an output row are computed and dropped). Passes run
    over strips of 4 rows so that the strip of the accumulator, the stencil and x stays in L1 across the
    27 x 6 passes. Offsets are unsigned: numba's wraparound test of a signed index stops the vectorization.
    """
    n_rhs = x.shape[0]
    nz, ny, nx = x.shape[2], x.shape[3], x.shape[4]
    w = nx + 2
    plane = ny * w
    xp = np.empty((n_rhs, 3, nz, (ny + 2) * w + 2), dtype=x.dtype)
    for m in range(n_rhs):
        for c in range(3):
            for k in range(nz):
                row = xp[m, c, k]
                for jp in range(ny + 2):
                    src = x[m, c, k, (jp + ny - 1) % ny]
                    base = jp * w
                    for i in range(nx):
                        row[base + i + 1] = src[i]
                    row[base] = src[nx - 1]
                    row[base + nx + 1] = src[0]
                row[(ny + 2) * w] = 0.0
                row[(ny + 2) * w + 1] = 0.0
    acc = np.empty((n_rhs, 3, plane), dtype=x.dtype)
    strip = 4 * w
    for k in range(nz):
        acc[:] = 0.0
        for t0 in range(0, plane, strip):
            n_t = min(strip, plane - t0)
            q = 0
            for dk in range(-1, 2):
                kk = (k + dk + nz) % nz
                for dj in range(3):
                    for di in range(3):
                        off = np.uint64(t0 + dj * w + di)
                        for m in range(n_rhs):
                            x0 = xp[m, 0, kk]
                            x1 = xp[m, 1, kk]
                            x2 = xp[m, 2, kk]
                            for r in range(3):
                                a = acc[m, r]
                                s0 = s[k, q, r, 0]
                                s1 = s[k, q, r, 1]
                                s2 = s[k, q, r, 2]
                                for tt in range(n_t):
                                    t = np.uint64(t0) + np.uint64(tt)
                                    u = np.uint64(tt) + off
                                    a[t] += s0[t] * x0[u] + s1[t] * x1[u] + s2[t] * x2[u]
                        q += 1
        for m in range(n_rhs):
            for r in range(3):
                a = acc[m, r]
                for j in range(ny):
                    out = y[m, r, k, j]
                    rhs = b[m, r, k, j]
                    for i in range(nx):
                        v = a[j * w + i]
                        out[i] = rhs[i] - v if subtract else v


@njit(fastmath=True, cache=True, nogil=True)
def _block_jacobi(dinv, r, out, alpha, beta, x, update_x):
    """``out = beta * out + alpha * Dinv r``, then ``x += out`` if ``update_x`` (one pass: a Chebyshev step).

    dinv (3, 3, n_nodes); r, out, x (L, 3, n_nodes) (flat node index: one long loop per row of Dinv). With
    ``beta == 0`` the old ``out`` is not read (it may hold garbage: 0 * nan).
    """
    keep = beta != 0.0
    for m in range(r.shape[0]):
        r0, r1, r2 = r[m, 0], r[m, 1], r[m, 2]
        for a in range(3):
            d0, d1, d2 = dinv[a, 0], dinv[a, 1], dinv[a, 2]
            o = out[m, a]
            xa = x[m, a]
            for t in range(r.shape[2]):
                v = alpha * (d0[t] * r0[t] + d1[t] * r1[t] + d2[t] * r2[t])
                if keep:
                    v += beta * o[t]
                o[t] = v
                if update_x:
                    xa[t] += v


@njit(cache=True, nogil=True)
def _prolong_add(xc, xf, iz, wz, iy, wy, ix, wx):
    """``xf += P xc``: per axis, fine index f takes coarse ``i[f, 0:2]`` with weights ``w[f, 0:2]``."""
    n_rhs = xf.shape[0]
    nz, ny, nx = xf.shape[2], xf.shape[3], xf.shape[4]
    for k in range(nz):
        for j in range(ny):
            for pz in range(2):
                az = wz[k, pz]
                if az == 0.0:
                    continue
                for py in range(2):
                    ay = az * wy[j, py]
                    if ay == 0.0:
                        continue
                    for m in range(n_rhs):
                        for c in range(3):
                            row = xc[m, c, iz[k, pz], iy[j, py]]
                            out = xf[m, c, k, j]
                            for i in range(nx):
                                out[i] += ay * (wx[i, 0] * row[ix[i, 0]] + wx[i, 1] * row[ix[i, 1]])


@njit(cache=True, nogil=True)
def _restrict(rf, rc, fz, gz, fy, gy, fx, gx):
    """``rc = P^T rf``: per axis, coarse index c gathers fine ``f[c, 0:3]`` with weights ``g[c, 0:3]``."""
    n_rhs = rf.shape[0]
    nz, ny, nx = rc.shape[2], rc.shape[3], rc.shape[4]
    for k in range(nz):
        for j in range(ny):
            for m in range(n_rhs):
                for c in range(3):
                    for i in range(nx):
                        rc[m, c, k, j, i] = 0.0
            for pz in range(3):
                az = gz[k, pz]
                if az == 0.0:
                    continue
                for py in range(3):
                    ay = az * gy[j, py]
                    if ay == 0.0:
                        continue
                    for m in range(n_rhs):
                        for c in range(3):
                            row = rf[m, c, fz[k, pz], fy[j, py]]
                            out = rc[m, c, k, j]
                            for i in range(nx):
                                out[i] += ay * (gx[i, 0] * row[fx[i, 0]] + gx[i, 1] * row[fx[i, 1]] + gx[i, 2] * row[fx[i, 2]])


@njit(cache=True, nogil=True)
def _stencil_from_elements(ke, s):
    """Add the stencil of element matrices ke (nz, ny, nx, 24, 24) on the torus to s (nz, 27, 3, 3, ny, nx + 2) (zeros)."""
    nz, ny, nx = ke.shape[0], ke.shape[1], ke.shape[2]
    for k in range(nz):
        for j in range(ny):
            for a in range(8):
                ez = k - _OFFS[a, 0]
                ey = j - _OFFS[a, 1]
                if ez < 0:
                    ez += nz
                if ey < 0:
                    ey += ny
                for b in range(8):
                    q = (_OFFS[b, 0] - _OFFS[a, 0] + 1) * 9 + (_OFFS[b, 1] - _OFFS[a, 1] + 1) * 3
                    q += _OFFS[b, 2] - _OFFS[a, 2] + 1
                    for i in range(nx):
                        ex = i - _OFFS[a, 2]
                        if ex < 0:
                            ex += nx
                        for r in range(3):
                            for c in range(3):
                                s[k, q, r, c, j, i] += ke[ez, ey, ex, 3 * a + r, 3 * b + c]


# ------------------------------------------------------------------------------------------------ helpers
def stencil_from_entries(entries: np.ndarray, shape) -> np.ndarray:
    """Stencil array (nz, 27, 3, 3, ny, nx + 2) of per-node entries (n_nodes * 27, 3, 3) (node-major, as the assembly).

    Layout of every level: z-plane major, each row of x padded with two zero columns (see `_stencil_apply`).
    """
    nz, ny, nx = shape
    out = np.zeros((nz, 27, 3, 3, ny, nx + 2))
    out[..., :nx] = entries.reshape(nz, ny, nx, 27, 3, 3).transpose(0, 3, 4, 5, 1, 2)
    return out


def plane_view(s: np.ndarray) -> np.ndarray:
    """The stencil (nz, 27, 3, 3, ny, nx + 2) as the kernels take it, (nz, 27, 3, 3, ny * (nx + 2)) (no copy)."""
    return s.reshape(s.shape[:4] + (-1,))


_NEIGHBOURS = np.stack(np.meshgrid(*([np.arange(-1, 2)] * 3), indexing="ij"), axis=-1).reshape(27, 3)


def pin(s: np.ndarray, fixed: np.ndarray) -> None:
    """Replace the rows and columns of the fixed nodes (bool (nz, ny, nx)) of stencil s by ``scale * I``, in place."""
    if not fixed.any():
        return
    scale = np.einsum("zrryx->", s[:, 13]) / (3.0 * fixed.size)
    nodes = np.argwhere(fixed)  # (f, 3): only these rows and their columns change (no pass over all of s)
    for q, d in enumerate(_NEIGHBOURS):
        z, y, x = nodes.T
        s[z, q, :, :, y, x] = 0.0  # row of a fixed node
        z, y, x = ((nodes - d) % fixed.shape).T
        s[z, q, :, :, y, x] = 0.0  # its column: the entry of node n - d towards n
    z, y, x = nodes.T
    for r in range(3):
        s[z, 13, r, r, y, x] = scale


def _axis_tables(n_fine: int, n_coarse: int, mode: str):
    """Prolongation (i (nf, 2), w (nf, 2)) and restriction (f (nc, 3), g (nc, 3)) tables of one axis."""
    pi = np.zeros((n_fine, 2), np.int64)
    pw = np.zeros((n_fine, 2))
    if mode == "none":
        pi[:, 0] = np.arange(n_fine)
        pw[:, 0] = 1.0
    else:
        f = np.arange(n_fine)
        even = f % 2 == 0
        pi[even, 0] = f[even] // 2
        pw[even, 0] = 1.0
        pi[~even, 0] = (f[~even] - 1) // 2
        pi[~even, 1] = ((f[~even] + 1) // 2) % n_coarse
        pw[~even] = 0.5
    lists = [[] for _ in range(n_coarse)]
    for f in range(n_fine):
        for p in range(2):
            if pw[f, p] != 0.0:
                lists[pi[f, p]].append((f, pw[f, p]))
    ri = np.zeros((n_coarse, 3), np.int64)
    rw = np.zeros((n_coarse, 3))
    for c, entries in enumerate(lists):
        for p, (f, w) in enumerate(entries):
            ri[c, p], rw[c, p] = f, w
    return (pi, pw), (ri, rw)


def _axis_mode(n: int, is_open: bool) -> str:
    if is_open:
        return "open" if n % 2 == 1 and n >= 3 else "none"
    return "periodic" if n % 2 == 0 and n >= 4 else "none"


def coarsenable(shape, open_axes=(False, False, False)) -> bool:
    """Whether the geometric multigrid can coarsen a node torus of this shape (some axis of a suitable side)."""
    return any(_axis_mode(n, o) != "none" for n, o in zip(shape, open_axes))


def _local_prolongations(modes) -> tuple[np.ndarray, np.ndarray]:
    """Children offsets (n_children, 3) and the local prolongations (n_children, 24, 24) fine <- coarse element."""
    m1 = [np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([[0.5, 0.5], [0.0, 1.0]])]
    ident = np.eye(2)
    ranges = [range(2) if mode != "none" else range(1) for mode in modes]
    children, mats = [], []
    for p in np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3):
        axis_m = [m1[p[a]] if modes[a] != "none" else ident for a in range(3)]
        p8 = np.ones((8, 8))
        for a in range(3):  # node offsets in (z, y, x) order
            p8 *= axis_m[a][_OFFS[:, a][:, None], _OFFS[:, a][None, :]]
        children.append(p)
        mats.append(np.kron(p8, np.eye(3)))
    return np.array(children), np.array(mats)


def _coarse_elements(ke_fine, modes, coarse_shape, weights=None, basis=None):
    """Coarse element matrices (nzc, nyc, nxc, 24, 24): ``sum_children P_c^T k_child P_c``.

    Fine elements come either as matrices ``ke_fine`` (nz, ny, nx, 24, 24) or as ``weights`` (m, nz, ny, nx)
    of an element ``basis`` (m, 24, 24).
    """
    children, pmats = _local_prolongations(modes)
    step = np.array([2 if mode != "none" else 1 for mode in modes])
    out = None
    if weights is not None:
        # table: per child and basis matrix, P_c^T basis_q P_c; coarse = children weights @ table
        table = np.einsum("cai,qab,cbj->cqij", pmats, basis, pmats).reshape(len(children) * len(basis), 576)
        cw = []
        for p in children:
            w = weights
            for a in range(3):
                w = _take_children(w, a + 1, p[a], step[a], coarse_shape[a])
            cw.append(w.reshape(len(basis), -1))
        cw = np.stack(cw).reshape(len(children) * len(basis), -1).T  # (n_coarse, children * m)
        return (cw @ table).reshape(*coarse_shape, 24, 24)
    for p, pm in zip(children, pmats):
        k = ke_fine
        for a in range(3):
            k = _take_children(k, a, p[a], step[a], coarse_shape[a])
        term = pm.T @ k @ pm
        out = term if out is None else out + term
    return out


def _take_children(arr, axis, offset, step, n_coarse):
    """Fine elements ``step * E + offset`` along ``axis`` for coarse elements E < n_coarse (missing ones zero)."""
    idx = step * np.arange(n_coarse) + offset
    n = arr.shape[axis]
    if idx[-1] < n:  # all present: a strided view, no copy
        return arr[(slice(None),) * axis + (slice(offset, idx[-1] + 1, step),)]
    taken = np.take(arr, np.minimum(idx, n - 1), axis=axis)
    if np.any(idx >= n):
        shape = [1] * arr.ndim
        shape[axis] = n_coarse
        taken = taken * (idx < n).reshape(shape)
    return taken


def _flat(v: np.ndarray) -> np.ndarray:
    """A block (L, 3, nz, ny, nx) as (L, 3, n_nodes) (a view)."""
    return v.reshape(v.shape[0], 3, -1)


def _inverse3(m: np.ndarray) -> np.ndarray:
    """Inverses of 3 x 3 matrices (..., 3, 3) by the adjugate (np.linalg.inv's batched LAPACK calls cost 4x more)."""
    r0, r1, r2 = m[..., 0, :], m[..., 1, :], m[..., 2, :]
    adj = np.stack([np.cross(r1, r2), np.cross(r2, r0), np.cross(r0, r1)], axis=-1)  # columns: inverse * det
    det = np.einsum("...i,...i->...", r0, adj[..., 0])
    return adj / det[..., None, None]


class _Level:
    def __init__(self, s64: np.ndarray, fixed: np.ndarray):
        self.shape = fixed.shape
        self.fixed = fixed
        self.s = plane_view(s64.astype(np.float32))
        diag = s64[:, 13, :, :, :, : self.shape[2]].transpose(0, 3, 4, 1, 2)  # (nz, ny, nx, 3, 3)
        self.dinv = np.ascontiguousarray(_inverse3(diag).reshape(-1, 3, 3).transpose(1, 2, 0), dtype=np.float32)


class VoxelMG:
    """Geometric-multigrid preconditioned block CG for one voxel stiffness (module docstring).

    Parameters
    ----------
    weights, basis : arrays (m, nz, ny, nx), (m, 24, 24)
        Element ``e`` has the stiffness ``sum_q weights[q, e] basis[q]`` (voxel e = its lowest corner node);
        ``(nz, ny, nx)`` is the node torus (an open box: one more node than voxels per side, ``open_axes`` True,
        last voxel layer zero).
    fixed : bool (nz, ny, nx)
        Prescribed nodes (rows and columns become ``scale * I``; right-hand sides must be zero there).
    open_axes : 3 bools
        Axes that are an open box (coarsened ``N -> (N + 1) / 2``) rather than periodic (``N -> N / 2``).
    degree : int
        Chebyshev smoothing steps before and after the coarse correction.
    fine_entries : array, optional
        The fine level's stencil entries when the caller has them already (else built from ``weights``).
    """

    def __init__(self, weights, basis, fixed, open_axes=(False, False, False), degree: int = 2, fine_entries=None):
        with _one_blas_thread():
            self._setup(weights, basis, fixed, open_axes, degree, fine_entries)

    def _setup(self, weights, basis, fixed, open_axes, degree, fine_entries):
        weights = np.asarray(weights, float)
        shape = weights.shape[1:]
        self.degree = degree
        if fine_entries is None:
            from .voxel_assembly import stencil_blocks, weights_at_nodes

            w = weights_at_nodes(weights).reshape(-1, int(np.prod(shape))).T
            fine_entries = w @ stencil_blocks(basis)
        s = stencil_from_entries(fine_entries, shape)
        pin(s, fixed)
        self.s64 = plane_view(s)
        self.levels = [_Level(s, fixed)]
        self.transfer = []
        ke = None
        while 3 * int(np.prod(shape)) > COARSEST:
            modes = [_axis_mode(n, o) for n, o in zip(shape, open_axes)]
            if all(mode == "none" for mode in modes):
                break
            cshape = tuple((n // 2 if mode == "periodic" else (n + 1) // 2) if mode != "none" else n
                           for n, mode in zip(shape, modes))
            tables = [_axis_tables(n, nc, mode) for n, nc, mode in zip(shape, cshape, modes)]
            ke = _coarse_elements(ke, modes, cshape, weights, basis) if ke is None else _coarse_elements(ke, modes, cshape)
            cfixed = fixed
            for a, mode in enumerate(modes):
                if mode != "none":
                    cfixed = np.take(cfixed, 2 * np.arange(cshape[a]), axis=a)
            sc = np.zeros((cshape[0], 27, 3, 3, cshape[1], cshape[2] + 2))
            _stencil_from_elements(np.ascontiguousarray(ke), sc)
            pin(sc, cfixed)
            prolong = tuple(t for (pi, pw), _ in tables for t in (pi, pw.astype(np.float32)))
            restrict = tuple(t for _, (ri, rw) in tables for t in (ri, rw.astype(np.float32)))
            self.transfer.append((prolong, restrict))
            self.levels.append(_Level(sc, cfixed))
            shape, fixed = cshape, cfixed
            s = sc
        dense = _dense(self.levels[-1], s)
        self.coarse = scipy.linalg.cho_solve(scipy.linalg.cho_factor(dense), np.eye(len(dense)))
        for lvl in self.levels[:-1]:
            lvl.lmax = self._lambda_max(lvl)

    def _lambda_max(self, lvl: _Level, steps: int = 10) -> float:
        """Largest eigenvalue of ``Dinv A`` (power iteration, float32)."""
        rng = np.random.default_rng(0)
        x = rng.standard_normal((1, 3) + lvl.shape).astype(np.float32)
        y = np.empty_like(x)
        z = np.empty_like(x)
        lam = 1.0
        for _ in range(steps):
            _stencil_apply(lvl.s, x, x, y, False)
            _block_jacobi(lvl.dinv, _flat(y), _flat(z), np.float32(1.0), np.float32(0.0), _flat(z), False)
            lam = float(np.linalg.norm(z) / np.linalg.norm(x))
            x = z / np.linalg.norm(z)
            x = x.astype(np.float32)
        return lam

    def _smooth(self, lvl, b, x, zero_start):
        """``degree`` Chebyshev steps for ``A x = b`` on [lmax / 8, 1.1 lmax] (x updated in place)."""
        hi = 1.1 * lvl.lmax
        lo = lvl.lmax / 8.0
        theta, delta = (hi + lo) / 2.0, (hi - lo) / 2.0
        sigma = theta / delta
        rho = 1.0 / sigma
        r = np.empty_like(b)
        d = np.empty_like(b)
        if not zero_start:
            _stencil_apply(lvl.s, x, b, r, True)
        _block_jacobi(lvl.dinv, _flat(b if zero_start else r), _flat(d), np.float32(1.0 / theta), np.float32(0.0), _flat(x), True)
        for _ in range(self.degree - 1):
            _stencil_apply(lvl.s, x, b, r, True)
            rho_new = 1.0 / (2.0 * sigma - rho)
            _block_jacobi(lvl.dinv, _flat(r), _flat(d), np.float32(2.0 * rho_new / delta), np.float32(rho_new * rho), _flat(x),
                          True)
            rho = rho_new

    def vcycle(self, b: np.ndarray, level: int = 0) -> np.ndarray:
        """Approximate ``A^-1 b`` for a float32 block b (L, 3, nz, ny, nx): one symmetric V-cycle."""
        lvl = self.levels[level]
        if level == len(self.levels) - 1:
            flat = np.moveaxis(b, 1, -1).reshape(len(b), -1).T.astype(float)  # (3 n, L), (node, component)
            x = (self.coarse @ flat).T.reshape((len(b),) + lvl.shape + (3,))
            return np.ascontiguousarray(np.moveaxis(x, -1, 1), dtype=np.float32)
        x = np.zeros_like(b)
        self._smooth(lvl, b, x, True)
        r = np.empty_like(b)
        _stencil_apply(lvl.s, x, b, r, True)
        prolong, restrict = self.transfer[level]
        coarse_shape = self.levels[level + 1].shape
        rc = np.empty((len(b), 3) + coarse_shape, np.float32)
        _restrict(r, rc, *restrict)
        rc *= ~self.levels[level + 1].fixed
        xc = self.vcycle(rc, level + 1)
        _prolong_add(xc, x, *prolong)
        self._smooth(lvl, b, x, False)
        return x

    def matvec(self, x: np.ndarray) -> np.ndarray:
        y = np.empty_like(x)
        _stencil_apply(self.s64, x, x, y, False)
        return y

    def solve(self, b: np.ndarray, rtol: float = 1e-8, maxiter: int = 500, atol=0.0) -> np.ndarray:
        """Block PCG in float64 on b (L, 3, nz, ny, nx); a column stops at ``||r|| <= max(rtol ||b||, atol)``."""
        with _one_blas_thread():
            return self._solve(b, rtol, maxiter, atol)

    def _solve(self, b, rtol, maxiter, atol):
        # Block flexible CG: every step's search block is the A-orthonormalized preconditioned residuals of
        # all columns, A-orthogonal to the previous block (truncated flexible CG: robust to the float32
        # cycle). The columns share one Krylov space, so the slow modes of the cycle (material interfaces)
        # are found once for all load cases: 32^3 two-phase and binary cells 21 -> 14 iterations.
        b = np.ascontiguousarray(b, dtype=float)
        x = np.zeros_like(b)
        r = b.copy()
        norms = lambda v: np.sqrt(np.diag(_gram(v, v)))  # noqa: E731
        target = np.maximum(rtol * norms(b), atol)
        z = az = t = None  # previous block: search directions P = z t, their products A P = az t
        for self.iterations in range(maxiter + 1):
            if np.all(norms(r) <= target) or self.iterations == maxiter:
                break
            z_new = self.vcycle(r.astype(np.float32)).astype(float)
            if z is not None:
                z_new -= _combine(t @ (t.T @ _gram(az, z_new)), z)
            z, az = z_new, self.matvec(z_new)
            t = _a_orthonormal(_gram(z, az))
            step = t @ (t.T @ _gram(z, r))  # (L, L): x += P P^T r in the coordinates of z
            x += _combine(step, z)
            r -= _combine(step, az)
        if np.all(norms(r) <= target):
            return x
        raise SolverError(f"voxel solve: multigrid CG did not reach rtol={rtol} in {maxiter} iterations "
                          f"(residual norms {norms(r)}, right-hand sides {norms(b)})")


def _one_blas_thread():
    """BLAS on one thread: the small dense products and the coarse Cholesky here took 0.1-0.4 s each with
    OpenBLAS's threads on the loaded machine (waking its pool), milliseconds on one."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _gram(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``G[i, j] = u_i . v_j`` of blocks u (k, ...), v (l, ...) -> (k, l)."""
    return u.reshape(len(u), -1) @ v.reshape(len(v), -1).T


def _combine(c: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``out_j = sum_i c[i, j] u_i`` of a block u (k, ...) and coefficients c (k, l) -> (l, ...)."""
    return (c.T @ u.reshape(len(u), -1)).reshape((c.shape[1],) + u.shape[1:])


def _a_orthonormal(g: np.ndarray, drop: float = 1e-10) -> np.ndarray:
    """T (L, k) with ``T^T g T = I`` for the Gram matrix g = Z^T A Z (L, L) of a block Z.

    Directions whose eigenvalue of the unit-diagonal g is below ``drop`` (dependent or converged columns)
    are left out, so k <= L and the block stays well conditioned.
    """
    d = np.sqrt(np.maximum(np.diag(g), 0.0))
    d = np.divide(1.0, d, out=np.zeros_like(d), where=d > 0)
    lam, v = np.linalg.eigh(d[:, None] * g * d[None])
    keep = lam > drop * max(lam.max(), 0.0)
    return d[:, None] * v[:, keep] / np.sqrt(lam[keep])


def _dense(lvl: _Level, s64: np.ndarray) -> np.ndarray:
    """Dense float64 matrix (3 n, 3 n) of a (small) stencil level, interleaved (node, component)."""
    nz, ny, nx = lvl.shape
    n = nz * ny * nx
    out = np.zeros((n, 3, n, 3))
    idx = np.indices(lvl.shape).reshape(3, -1).T  # (n, 3) z, y, x
    rows = np.arange(n)
    for q, d in enumerate(_NEIGHBOURS):
        cols = np.ravel_multi_index(tuple(((idx + d) % lvl.shape).T), lvl.shape)
        blocks = s64[:, q, :, :, :, :nx].transpose(0, 3, 4, 1, 2).reshape(n, 3, 3)
        np.add.at(out, (rows, slice(None), cols), blocks)
    return out.reshape(3 * n, 3 * n)
