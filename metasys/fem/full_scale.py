"""Full-scale linear elastic solve of an assembled pixel structure (one Q4 element per solid pixel).

The structure is the ``(cell_pixels * H, cell_pixels * W)`` pixel array of a W x H macro grid of
unit cells (row 0 at the bottom, column = x). Every solid pixel is a square Q4 element of side
``1 / cell_pixels`` in the macro length unit (cell side 1) made of the base material; void pixels
are removed, not replaced by an ersatz material. Pixels are connected when they share a node
(8-connectivity): elements that share a corner node are coupled in the stiffness matrix. Solid
parts not connected to a prescribed boundary are removed and reported, and so are parts hanging
from the rest by a single corner node (they would rotate freely about it: a singular matrix).

Assembly never forms per-element triplets: all elements share one stiffness matrix, so the 2 x 2
block coupling a node to each of its 3 x 3 node neighbours depends only on which of the node's four
surrounding pixels are kept (16 patterns). The block sparse (BSR, 2 x 2 blocks) matrix is filled
straight from a (16, 9, 2, 2) table with int32 indices: 18 nonzeros per row at 9 bytes each.
Prescribed degrees of freedom stay in the matrix as decoupled rows (their columns moved to the
right-hand side, the diagonal kept), which keeps the nodal 2 x 2 block structure that smoothed
aggregation coarsens by; they are not counted as unknowns.

Systems of up to `DIRECT_LIMIT` unknowns are solved by a sparse LDL^T factorization (qdldl, AMD
ordering); larger ones by conjugate gradients preconditioned with pyamg smoothed aggregation using
the three rigid-body modes as near-nullspace. Measured on the bridge (470,476 unknowns, 2-core
machine at load 4): LDL^T 1.8 s and about 0.5 GB, SuperLU (COLAMD) 6 to 9 s and 0.8 GB of factors,
multigrid CG to 1e-8 10 to 11 s; at 2.35 million unknowns LDL^T takes 17 s but 3.1 GB, hence the limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy import ndimage

from ..errors import InvalidCellError, InvalidTypeError, InvalidValueError, SolverError, describe
from ..material import Material
from ..progress import progress_bar
from .boundary import COMPONENTS, Prescribed
from .element import NODE_OFFSETS, element_stiffness

DIRECT_LIMIT = 1_000_000
"""Largest number of unknowns that ``method="auto"`` solves with a sparse direct factorization (its factor
takes about 1.2 GB at this size)."""

MAX_ITERATIONS = 2000
"""CG iterations before the iterative solve gives up (well-posed structures need 10 to 30)."""

# Neighbour slots of a node's 3 x 3 stencil in (dy, dx) row-major order: with nodes numbered row by
# row, this is also increasing column order inside a matrix row, so BSR indices come out sorted.
_SLOTS = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
_DIAGONAL_SLOT = 4

# Smoothed aggregation options, tuned on tiled 50 x 50 cells (0.6M to 12.5M unknowns):
# - a small strength threshold drops the weak couplings across thin ligaments from the aggregation
#   graph: about 25% fewer CG iterations on perforated structures;
# - the prolongators' Jacobi weights come from row sums ("local") instead of a spectral radius
#   estimate: on the finest level that estimate costs as much as the rest of the level's setup, and
#   pyamg draws its start vector from NumPy's global generator (row sums are deterministic). The
#   row-sum bound overestimates the spectral radius more on the coarse levels, so they get a larger
#   weight: 25 x 25 tiled cells need 17 CG iterations (spectral estimates on the coarse levels: 16;
#   omega 4/3 everywhere: 23).
# - one forward block Gauss-Seidel sweep before the coarse correction and one backward after it (the
#   cycle stays symmetric, as CG needs) instead of a symmetric sweep on each side, and no smoothing of
#   the candidate vectors B during setup: on the central 24 x 24 cells of a smiley design (1.8M
#   unknowns) 46 CG iterations instead of 36 but 40 s instead of 49 s (setup 4 s instead of 9 s).
_AMG_OPTIONS = {
    "strength": ("symmetric", {"theta": 0.02}),
    "presmoother": ("block_gauss_seidel", {"sweep": "forward"}),
    "postsmoother": ("block_gauss_seidel", {"sweep": "backward"}),
    "improve_candidates": None,
    "smooth": [("jacobi", {"omega": 4.0 / 3.0, "weighting": "local"})] + [("jacobi", {"omega": 2.0, "weighting": "local"})] * 9,
    "max_levels": 10,
    "max_coarse": 500,
}


@dataclass
class FullScaleResult:
    """Solution of a full-scale structure.

    Attributes
    ----------
    displacement : array (ny + 1, nx + 1, 2)
        Displacement (u_x, u_y) of every fine node ``[r, c]`` at (x, y) = (c, r) / cell_pixels, in
        macro length units; NaN at nodes that belong to no kept solid pixel.
    macro_displacement : array (H + 1, W + 1, 2)
        At macro node ``[y, x]``, the displacement of the nearest fine node of a kept solid pixel.
    kept : bool array (ny, nx)
        Solid pixels that were modelled (connected to a prescribed boundary).
    n_components_removed : int
        Solid components (8-connected) not connected to any prescribed boundary node, plus
        edge-connected pixel groups that hung from a kept part by a single corner node.
    n_pixels_removed : int
        Solid pixels removed (not in ``kept``).
    n_dofs : int
        Unknown (not prescribed) degrees of freedom.
    iterations : int
        Preconditioned CG iterations (0 for a direct solve).
    residual : float
        Final relative residual ``||b - K u|| / ||b||``.
    timings : dict
        Wall-clock seconds of ``"assembly"``, ``"setup"`` (factorization or multigrid hierarchy)
        and ``"solve"``.
    solver : FullScaleSolver or None
        With ``keep_solver=True``: the factorization or multigrid hierarchy of the solve, for adjoint
        solves (`sensitivity`).
    """

    displacement: np.ndarray
    macro_displacement: np.ndarray
    kept: np.ndarray
    n_components_removed: int
    n_pixels_removed: int
    n_dofs: int
    iterations: int
    residual: float
    timings: dict = field(default_factory=dict)
    solver: FullScaleSolver | None = field(default=None, repr=False)

    def sensitivity(self, macro_gradient) -> np.ndarray:
        """Derivative of an objective J(macro displacements) with respect to every pixel's stiffness scale.

        The pixel (r, c) has Young's modulus ``s E``; the derivative at ``s = 1`` of every pixel is
        ``dJ/ds = -lambda_e^T K_e u_e`` with the adjoint field ``K lambda = dJ/du`` (zero on prescribed
        degrees of freedom), solved with the forward solve's factorization or multigrid hierarchy.
        For a void pixel the same expression is the first-order effect of adding it, using the
        displacements of its nodes that belong to kept pixels (zero elsewhere).

        Parameters
        ----------
        macro_gradient : array (H + 1, W + 1, 2)
            ``dJ/d macro_displacement`` (the macro-node values are the nearest kept fine nodes').

        Returns
        -------
        array (ny, nx)
            dJ/ds per pixel, in units of J.
        """
        if self.solver is None:
            raise InvalidValueError("sensitivity: this result has no solver; solve with keep_solver=True")
        g = np.asarray(macro_gradient, dtype=float)
        if g.shape != self.macro_displacement.shape:
            raise InvalidValueError(f"macro_gradient: expected shape {self.macro_displacement.shape} (H + 1, W + 1, 2), "
                                    f"got {describe(g)}")
        adjoint = self.solver.adjoint(g)
        return -pixel_energy(adjoint, np.nan_to_num(self.displacement), self.solver.ke)


class FullScaleSolver:
    """The factorization or multigrid hierarchy of a full-scale solve, kept for adjoint solves.

    Attributes: ``ke`` (8, 8) the pixel element stiffness; ``node_flat`` (n,) the flat fine-grid
    positions of the active nodes; ``fixed`` (n, 2) their prescribed components; ``nearest``
    ((H + 1) (W + 1),) the active node of every macro node.
    """

    def __init__(self, solve, ke, node_flat, fixed, nearest, node_shape):
        self._solve, self.ke, self.node_flat, self.fixed, self.nearest = solve, ke, node_flat, fixed, nearest
        self.node_shape = node_shape

    def adjoint(self, macro_gradient) -> np.ndarray:
        """Adjoint displacement field (ny + 1, nx + 1, 2) of a gradient (H + 1, W + 1, 2) at the macro nodes
        (zero at inactive nodes and on prescribed degrees of freedom)."""
        rhs = np.zeros((len(self.node_flat), 2))
        np.add.at(rhs, self.nearest, np.asarray(macro_gradient, dtype=float).reshape(-1, 2))
        rhs[self.fixed] = 0.0
        field = np.zeros((self.node_shape[0] * self.node_shape[1], 2))
        if np.any(rhs):
            solution = self._solve(rhs.ravel()).reshape(-1, 2)
            solution[self.fixed] = 0.0
            field[self.node_flat] = solution
        return field.reshape(*self.node_shape, 2)


def pixel_energy(a, b, ke, rows_per_chunk: int = 256) -> np.ndarray:
    """``a_e^T K_e b_e`` (ny, nx) of every pixel for nodal fields a, b (ny + 1, nx + 1, 2) (chunked over rows)."""
    ny, nx = a.shape[0] - 1, a.shape[1] - 1
    out = np.empty((ny, nx))
    for r0 in range(0, ny, rows_per_chunk):
        r1 = min(r0 + rows_per_chunk, ny)
        ae = np.concatenate([a[r0 + oy : r1 + oy, ox : nx + ox] for ox, oy in NODE_OFFSETS], axis=-1)
        be = np.concatenate([b[r0 + oy : r1 + oy, ox : nx + ox] for ox, oy in NODE_OFFSETS], axis=-1)
        out[r0:r1] = np.einsum("rci,ij,rcj->rc", ae, ke, be, optimize=True)
    return out


def _check_structure(structure, cell_pixels) -> tuple[np.ndarray, int, int]:
    """Validate the pixel array; return it as bool (ny, nx) and the macro grid size (W, H)."""
    if isinstance(cell_pixels, bool) or not isinstance(cell_pixels, (int, np.integer)) or cell_pixels < 1:
        raise InvalidValueError(f"cell_pixels: expected a positive integer (pixels per cell side), got {cell_pixels!r}")
    if isinstance(structure, (str, bytes)) or structure is None:
        raise InvalidTypeError(f"structure: expected a bool array (cell_pixels*H, cell_pixels*W), got {describe(structure)}")
    arr = np.asarray(structure)
    if arr.dtype != bool:
        if not np.issubdtype(arr.dtype, np.number):
            raise InvalidCellError(f"structure: expected a bool (or 0/1) pixel array, got {describe(arr)}")
        if not np.all((arr == 0) | (arr == 1)):
            bad = arr[(arr != 0) & (arr != 1)].ravel()[0]
            raise InvalidCellError(f"structure: expected binary pixels (bool or 0/1), got a {arr.dtype} array containing {bad!r}")
        arr = arr.astype(bool)
    if arr.ndim != 2:
        raise InvalidCellError(f"structure: expected a 2-D array (cell_pixels*H, cell_pixels*W), got shape {arr.shape}")
    ny, nx = arr.shape
    if ny == 0 or nx == 0 or ny % cell_pixels or nx % cell_pixels:
        raise InvalidCellError(
            f"structure: expected a shape that is a positive multiple of cell_pixels={cell_pixels} in both directions "
            f"(cell_pixels*H, cell_pixels*W), got shape {arr.shape}"
        )
    return arr, nx // cell_pixels, ny // cell_pixels


def _check_conditions(conditions) -> list[Prescribed]:
    if isinstance(conditions, Prescribed):
        conditions = [conditions]
    try:
        conditions = list(conditions)
    except TypeError:
        raise InvalidTypeError(f"conditions: expected a sequence of Prescribed, got {describe(conditions)}") from None
    if not conditions:
        raise InvalidValueError("conditions: expected at least one Prescribed displacement (the structure would float), got none")
    for cond in conditions:
        if not isinstance(cond, Prescribed):
            raise InvalidTypeError(f"conditions: expected Prescribed items, got {describe(cond)}")
    return conditions


def _edge_index(edge: str, ny: int, nx: int):
    """Index expressions of an edge's fine nodes in the (ny + 1, nx + 1) node grid and of its
    adjacent pixels in the (ny, nx) pixel grid."""
    return {
        "left": (np.s_[:, 0], np.s_[:, 0]),
        "right": (np.s_[:, nx], np.s_[:, nx - 1]),
        "bottom": (np.s_[0, :], np.s_[0, :]),
        "top": (np.s_[ny, :], np.s_[ny - 1, :]),
    }[edge]


def _node_patterns(pixels: np.ndarray) -> np.ndarray:
    """4-bit code (ny + 1, nx + 1) uint8 of a node's surrounding pixels: bit a set when the pixel
    having this node as its local node a is set."""
    ny, nx = pixels.shape
    padded = np.pad(pixels, 1)
    code = np.zeros((ny + 1, nx + 1), dtype=np.uint8)
    for a, (ox, oy) in enumerate(NODE_OFFSETS):
        code |= padded[1 - oy : 2 - oy + ny, 1 - ox : 2 - ox + nx].astype(np.uint8) << a
    return code


def _nearest(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Flat indices (k,) of the True entries of ``mask`` (2-D) nearest to grid points (k, 2) (row, col)."""
    rows, cols = ndimage.distance_transform_edt(~mask, return_distances=False, return_indices=True)
    r, c = points[:, 0], points[:, 1]
    return np.ravel_multi_index((rows[r, c], cols[r, c]), mask.shape)


def _select_pixels(solid: np.ndarray, conditions, cell_pixels: int):
    """Kept pixels of the structure and where the node conditions apply.

    Returns (kept (ny, nx) bool, labels (ny, nx) int of the kept 8-connected components (0 elsewhere),
    components (the kept labels), snapped {node condition: fine node (row, col)}, number of
    components removed).
    """
    ny, nx = solid.shape
    if not solid.any():
        raise InvalidCellError(f"structure: expected at least one solid pixel, got an all-void array of shape {solid.shape}")
    labels, n_labels = ndimage.label(solid, structure=np.ones((3, 3), dtype=bool))
    anchor = np.zeros_like(solid)  # pixels carrying a prescribed fine node
    for cond in conditions:
        if isinstance(cond.where, str):
            anchor[_edge_index(cond.where, ny, nx)[1]] = True
    anchor &= solid
    node_conditions = [c for c in conditions if isinstance(c.where, tuple)]
    snapped = {}
    if node_conditions:
        reached = np.isin(labels, np.unique(labels[anchor])) & solid if anchor.any() else solid
        macro = np.array([c.where[::-1] for c in node_conditions]) * cell_pixels  # (row, col)
        for cond, node in zip(node_conditions, _nearest(_node_patterns(reached) > 0, macro), strict=True):
            r, c = divmod(int(node), nx + 1)
            snapped[cond] = (r, c)
            anchor[max(r - 1, 0) : r + 1, max(c - 1, 0) : c + 1] = True
        anchor &= solid
    if not anchor.any():
        raise InvalidCellError(
            "structure: expected solid pixels touching the prescribed boundaries (edges or nodes of conditions), got none"
        )
    keep = np.zeros(n_labels + 1, dtype=bool)
    keep[labels[anchor]] = True
    kept = keep[labels]
    hanging, n_hanging = _hinged_appendages(kept, anchor)
    kept &= ~hanging
    return kept, np.where(kept, labels, 0), np.flatnonzero(keep), snapped, int(n_labels - keep.sum()) + n_hanging


def _hinged_appendages(kept: np.ndarray, anchor: np.ndarray) -> tuple[np.ndarray, int]:
    """Parts that hang from the rest by a single corner node and would rotate freely about it.

    Edge-connected (4-connected) pixel groups are rigid; two groups touching only at a corner node
    are joined by a hinge there. A group with no prescribed node (``anchor`` (ny, nx)) and hinges at
    fewer than two distinct nodes is a mechanism that makes the stiffness matrix singular; it is
    removed, and the groups hanging from it in turn. Returns (removed pixels (ny, nx) bool, number
    of groups removed).
    """
    ny, nx = kept.shape
    groups, n_groups = ndimage.label(kept)
    padded = np.pad(groups, 1)
    around = [padded[1 - oy : 2 - oy + ny, 1 - ox : 2 - ox + nx] for ox, oy in NODE_OFFSETS]  # group of local node a's pixel
    code = _node_patterns(kept)
    # Hinge nodes have exactly one diagonal pixel pair around them: upper-right + lower-left
    # (local nodes 0 and 2) or upper-left + lower-right (local nodes 1 and 3).
    rising, falling = code == 0b0101, code == 0b1010
    a = np.concatenate([around[0][rising], around[1][falling]])
    b = np.concatenate([around[2][rising], around[3][falling]])
    a, b = a[a != b], b[a != b]
    anchored = np.zeros(n_groups + 1, dtype=bool)
    anchored[groups[anchor & kept]] = True
    alive = np.ones(n_groups + 1, dtype=bool)
    while True:  # one pass per level of nested appendages
        live = alive[a] & alive[b]
        degree = np.bincount(a[live], minlength=n_groups + 1) + np.bincount(b[live], minlength=n_groups + 1)
        drop = alive & ~anchored & (degree < 2)
        drop[0] = False
        if not drop.any():
            break
        alive &= ~drop
    return ~alive[groups], int(n_groups + 1 - alive.sum())


def _stencil_table(ke: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per node pattern code (16), the 2 x 2 blocks coupling the node to its 9 stencil neighbours.

    Returns (values (16, 9, 2, 2), present (16, 9) bool): ``present`` marks couplings through at
    least one element (the structural nonzeros).
    """
    per_a = np.zeros((4, 9, 2, 2))
    reach = np.zeros((4, 9), dtype=bool)
    for a in range(4):
        for b in range(4):
            dx, dy = NODE_OFFSETS[b] - NODE_OFFSETS[a]
            k = (dy + 1) * 3 + dx + 1
            per_a[a, k] += ke[2 * a : 2 * a + 2, 2 * b : 2 * b + 2]
            reach[a, k] = True
    bits = (np.arange(16)[:, None] >> np.arange(4)) & 1  # (16, 4)
    return np.einsum("ca,akij->ckij", bits, per_a), (bits @ reach) > 0


def _assemble(code, node_flat, nid_full, nodes_x, fixed, ubar, ke):
    """Block sparse stiffness (2n, 2n) with prescribed rows/columns decoupled, and its right-hand side.

    ``code`` (n,) pattern codes, ``node_flat`` (n,) flat grid positions and ``nid_full`` the active
    index of every grid node (-1 if inactive), ``nodes_x`` the grid's nodes per row; ``fixed`` (n, 2)
    bool and ``ubar`` (n, 2) the prescribed degrees of freedom and values.
    """
    values, present = _stencil_table(ke)
    n = len(code)
    indptr = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(present.sum(axis=1)[code], out=indptr[1:])
    indices = np.empty(indptr[-1], dtype=np.int32)
    data = np.empty((indptr[-1], 2, 2))
    free = ~fixed
    touched = fixed.any(axis=1)
    rhs = np.zeros((n, 2))
    diagonal = np.zeros((n, 2))
    filled = indptr[:-1].copy()  # next block position of each row
    for k, (dy, dx) in enumerate(_SLOTS):
        rows = np.flatnonzero(present[code, k])
        cols = nid_full[node_flat[rows] + dy * nodes_x + dx]
        pos = filled[rows]
        filled[rows] += 1
        indices[pos] = cols
        data[pos] = values[code[rows], k]
        if k == _DIAGONAL_SLOT:
            diagonal[rows] = data[pos][:, [0, 1], [0, 1]]
        # Only blocks on a prescribed row or column change: the (few) boundary nodes.
        hit = np.flatnonzero(touched[rows] | touched[cols])
        rows, cols, pos = rows[hit], cols[hit], pos[hit]
        rhs[rows] -= np.einsum("mij,mj->mi", data[pos], ubar[cols])
        data[pos] *= free[rows][:, :, None] & free[cols][:, None, :]
        if k == _DIAGONAL_SLOT:
            data[pos, 0, 0] = diagonal[rows, 0]
            data[pos, 1, 1] = diagonal[rows, 1]
    # A prescribed row reads diag * u = diag * ubar: decoupled, and scaled like its neighbours so
    # the multigrid smoother sees no outlier.
    rhs[fixed] = diagonal[fixed] * ubar[fixed]
    return sp.bsr_array((data, indices, indptr), shape=(2 * n, 2 * n)), rhs.ravel()


def _check_restrained(labels: np.ndarray, components: np.ndarray, node_flat: np.ndarray, fixed: np.ndarray) -> None:
    """Raise SolverError if a kept component can move rigidly.

    ``labels`` (ny, nx) are the component labels of the kept pixels (0 elsewhere), ``components``
    the kept labels, ``node_flat`` (n,) the flat grid positions of the active nodes and ``fixed``
    (n, 2) their prescribed components. A component is held when the rigid modes restricted to its
    prescribed degrees of freedom have rank 3.
    """
    nx = labels.shape[1]
    node, comp = np.nonzero(fixed)
    r, c = np.divmod(node_flat[node], nx + 1)
    padded = np.pad(labels, 1)
    owner = np.max([padded[r + 1 - oy, c + 1 - ox] for ox, oy in NODE_OFFSETS], axis=0)
    modes = _rigid_modes(c.astype(float), r.astype(float)).reshape(-1, 2, 3)[np.arange(len(node)), comp]  # (m, 3)
    for label in components:  # kept components: a handful, not per pixel
        held = modes[owner == label]
        if np.linalg.matrix_rank(held, tol=1e-9 * max(1.0, np.abs(held).max(initial=0.0))) == 3:
            continue
        own = comp[owner == label]
        free = [name for name, k in (("x translation", 0), ("y translation", 1)) if not np.any(own == k)]
        where = np.argwhere(labels == label)[0]
        raise SolverError(
            f"solve_full_scale: a kept solid part (containing pixel row {where[0]}, column {where[1]}) is not held against "
            f"rigid {' and '.join(free) or 'rotation'} by the conditions; prescribe more displacement components or remove it"
        )


def _factorize(matrix, n_dofs: int, strict: bool):
    """Solve function of an LDL^T factorization of the symmetric ``matrix``, or None if it is singular.

    ``strict``: raise `SolverError` instead of returning None. Pixels joined at corner nodes only can form a
    mechanism whose matrix is singular but consistent: multigrid CG still solves it, a factorization does not
    (a zero or a rounding-size pivot).
    """
    import qdldl

    message = None
    try:
        factor = qdldl.Solver(sp.triu(matrix, format="csc"))
    except RuntimeError as exc:
        message = str(exc)
    else:
        # pivots of a stiffness matrix are at least its smallest eigenvalue; a mechanism's is rounding noise
        pivots = factor.factors()[1]
        if not pivots.min() > 1e-10 * pivots.max():
            message = f"a pivot of {pivots.min():.2g} against a largest one of {pivots.max():.2g}"
    if message is None:
        return factor.solve
    if strict:
        raise SolverError(
            f"solve_full_scale: the stiffness matrix of the kept structure ({n_dofs} unknowns) is singular ({message}): "
            "pixels joined at corner nodes only form a mechanism; method='amg' solves such consistent systems"
        )
    return None


def _rigid_modes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Near-nullspace (2n, 3): x and y translations and the in-plane rotation about the centroid."""
    b = np.zeros((len(x), 2, 3))
    b[:, 0, 0] = 1.0
    b[:, 1, 1] = 1.0
    b[:, 0, 2] = -(y - y.mean())
    b[:, 1, 2] = x - x.mean()
    return b.reshape(-1, 3)


def solve_full_scale(
    structure,
    conditions,
    material: Material = Material(),
    cell_pixels: int = 50,
    *,
    tol: float = 1e-8,
    progress: bool = False,
    method: str = "auto",
    keep_solver: bool = False,
) -> FullScaleResult:
    """Solve the linear elastic response of a full pixel structure under prescribed displacements.

    Parameters
    ----------
    structure : bool array (cell_pixels * H, cell_pixels * W)
        Solid pixels (bool, or 0/1 values); row 0 is the bottom (y up), column = x. Macro cell
        (i, j) fills rows ``cell_pixels*j ...`` and columns ``cell_pixels*i ...``.
    conditions : sequence of Prescribed
        Macro-grid displacements in macro length units (cell side 1). An edge condition applies to
        every fine node on that edge that belongs to a kept solid pixel; a node condition (x, y) to
        the kept solid fine node nearest to the macro node. Later conditions win where they overlap.
    material : Material
        Base material of every solid pixel (``E_void`` is unused: void pixels are removed).
    cell_pixels : int
        Pixels per cell side; a pixel is a square element of side ``1 / cell_pixels``.
    tol : float
        Relative residual ``||b - K u|| / ||b||`` at which the iterative solve stops.
    progress : bool
        Show a progress bar over the stages (assembly, setup, solve).
    method : {"auto", "direct", "amg"}
        Sparse direct solve, or CG preconditioned by smoothed aggregation multigrid; ``"auto"``
        takes the direct solve up to ``DIRECT_LIMIT`` unknowns.
    keep_solver : bool
        Keep the factorization or multigrid hierarchy in ``result.solver`` for adjoint solves
        (`FullScaleResult.sensitivity`); it holds memory of the order of the matrix's.

    Returns
    -------
    FullScaleResult

    Notes
    -----
    Solid components (pixels sharing a node are connected) are kept when they contain a fine node
    of an edge condition. Node conditions are snapped to the nearest fine node of those
    components (of any solid pixel when no edge condition reaches solid), whose component is then
    kept too. Edge-connected pixel groups hanging from the rest by one corner node only (a free
    hinge) are removed as well; both kinds count in ``n_components_removed``. A kept component
    that is still free to move rigidly raises `SolverError` before the solve. Rarer
    mechanisms, such as a straight diagonal chain of corner-connected pixels, are kept: no load acts
    on them, so the system stays consistent, the rest of the solution is unaffected and only their
    own displacement is not unique.
    """
    solid, width, height = _check_structure(structure, cell_pixels)
    conditions = _check_conditions(conditions)
    if not (isinstance(tol, (int, float, np.floating)) and 0.0 < tol < 1.0):
        raise InvalidValueError(f"tol: expected a relative residual in (0, 1), got {tol!r}")
    if method not in ("auto", "direct", "amg"):
        raise InvalidValueError(f"method: expected 'auto', 'direct' or 'amg', got {method!r}")
    for cond in conditions:
        cond.nodes(width, height)  # raises for a node outside the macro grid
    ny, nx = solid.shape
    timings = {}

    with progress_bar("full-scale solve", total=3, enabled=progress) as advance:
        start = time.perf_counter()
        kept, labels, components, snapped, n_components_removed = _select_pixels(solid, conditions, cell_pixels)
        n_pixels_removed = int(solid.sum() - kept.sum())
        code_full = _node_patterns(kept)
        active = code_full > 0
        fixed_full = np.zeros((ny + 1, nx + 1, 2), dtype=bool)
        ubar_full = np.zeros((ny + 1, nx + 1, 2))
        for cond in conditions:
            comp = COMPONENTS[cond.component]
            if isinstance(cond.where, str):
                nodes = _edge_index(cond.where, ny, nx)[0]
                fixed_full[nodes + (comp,)] |= active[nodes]
                ubar_full[nodes + (comp,)] = np.where(active[nodes], cond.value, ubar_full[nodes + (comp,)])
            else:
                r, c = snapped[cond]
                fixed_full[r, c, comp] = True
                ubar_full[r, c, comp] = cond.value
        node_flat = np.flatnonzero(active)
        nid_full = np.full(active.size, -1, dtype=np.int32)
        nid_full[node_flat] = np.arange(len(node_flat), dtype=np.int32)
        fixed = fixed_full.reshape(-1, 2)[node_flat]
        ubar = np.where(fixed, ubar_full.reshape(-1, 2)[node_flat], 0.0)
        del fixed_full, ubar_full
        _check_restrained(labels, components, node_flat, fixed)
        del labels
        h = 1.0 / cell_pixels
        ke = element_stiffness(material.constitutive(), h, h)
        matrix, rhs = _assemble(code_full.ravel()[node_flat], node_flat, nid_full, nx + 1, fixed, ubar, ke)
        del nid_full
        n_dofs = int(fixed.size - fixed.sum())
        timings["assembly"] = time.perf_counter() - start
        advance()

        norm_b = float(np.linalg.norm(rhs))
        use_direct = method == "direct" or (method == "auto" and n_dofs <= DIRECT_LIMIT)
        iterations = 0
        start = time.perf_counter()
        if norm_b == 0.0:
            solution = np.zeros_like(rhs)
            solve = None
            timings["setup"] = time.perf_counter() - start
            advance()
        elif use_direct and (solve := _factorize(matrix, n_dofs, strict=method == "direct")) is not None:
            timings["setup"] = time.perf_counter() - start
            advance()
            start = time.perf_counter()
            solution = solve(rhs)
        else:
            import pyamg

            rows, cols = np.divmod(node_flat, nx + 1)
            # the hierarchy in single precision halves the memory its cycles stream; CG stays in double
            hierarchy = pyamg.smoothed_aggregation_solver(matrix.astype(np.float32),
                                                          B=_rigid_modes(cols * h, rows * h).astype(np.float32), **_AMG_OPTIONS)
            del rows, cols
            timings["setup"] = time.perf_counter() - start
            advance()
            start = time.perf_counter()
            counter = [0]

            def count(_):
                counter[0] += 1

            cycle = hierarchy.aspreconditioner()
            preconditioner = spla.LinearOperator(matrix.shape, dtype=np.float64,
                                                 matvec=lambda r: (cycle @ r.astype(np.float32)).astype(np.float64))
            solution, info = spla.cg(matrix, rhs, rtol=tol, atol=0.0, maxiter=MAX_ITERATIONS, M=preconditioner, callback=count)
            iterations = counter[0]
            if keep_solver:
                def solve(b):
                    x, status = spla.cg(matrix, b, rtol=tol, atol=0.0, maxiter=MAX_ITERATIONS, M=preconditioner)
                    if status != 0:
                        raise SolverError(f"adjoint solve: conjugate gradients did not reach tol={tol}")
                    return x
            if info != 0:
                raise SolverError(
                    f"solve_full_scale: conjugate gradients did not reach tol={tol} in {iterations} iterations "
                    f"({n_dofs} unknowns); a kept solid part may hinge about a node shared by two pixels' corners only"
                )
        residual = float(np.linalg.norm(rhs - matrix @ solution) / norm_b) if norm_b > 0 else 0.0
        timings["solve"] = time.perf_counter() - start
        advance()

    if not np.all(np.isfinite(solution)) or residual > max(10.0 * tol, 1e-6):
        raise SolverError(
            f"solve_full_scale: the solve gave residual {residual:.3g} for tol={tol} ({n_dofs} unknowns); the stiffness matrix "
            "is singular: a kept solid part may hinge about a node shared by two pixels' corners only"
        )
    displacement = np.full(((ny + 1) * (nx + 1), 2), np.nan)
    displacement[node_flat] = solution.reshape(-1, 2)
    displacement = displacement.reshape(ny + 1, nx + 1, 2)
    gy, gx = np.meshgrid(np.arange(height + 1), np.arange(width + 1), indexing="ij")
    nearest = _nearest(active, np.stack([gy.ravel(), gx.ravel()], axis=1) * cell_pixels)
    macro_displacement = displacement.reshape(-1, 2)[nearest].reshape(height + 1, width + 1, 2)
    return FullScaleResult(
        displacement=displacement,
        macro_displacement=macro_displacement,
        kept=kept,
        n_components_removed=n_components_removed,
        n_pixels_removed=n_pixels_removed,
        n_dofs=n_dofs,
        iterations=iterations,
        residual=residual,
        timings=timings,
        solver=(FullScaleSolver(solve if solve is not None else (lambda b: np.zeros_like(b)), ke, node_flat, fixed,
                                np.searchsorted(node_flat, nearest),
                                (ny + 1, nx + 1)) if keep_solver else None),
    )
