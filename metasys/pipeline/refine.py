"""Full-scale-in-the-loop cell swaps: moves ranked by the adjoint of the full-scale RRMSE, kept only if a
full-scale solve finds them better.

The stages before the full-scale solve optimize surrogates (homogenized properties, the macro model, the
compatibility energy of Eq. 16-17); the full-scale RRMSE is decided by what none of them sees (interfaces between
different cells, the candidates' property errors). `refine` works on that RRMSE itself, over the candidate sets
of the assembly:

1. **estimate**: one adjoint solve (`metasys.fem.FullScaleSolver.adjoint`, reusing the forward solve's
   factorization or multigrid hierarchy) gives the adjoint field of the RRMSE. For swapping element e's cell for
   candidate l, the exact cell-level stiffness difference ``K_e(p_l) - K_e(p_current)`` (homogenized properties,
   one bilinear element per cell) is contracted with the forward and adjoint fields fitted over the cell's
   boundary (`swap_estimates`). The per-pixel derivative (`metasys.fem.FullScaleResult.sensitivity`) is exact
   for small changes, but a whole cell swap is not small: summed over a swapped block it mis-ranked swaps by orders
   of magnitude, and the cell-level estimate ranks single swaps only loosely too (Spearman 0.1-0.3 against exact
   re-solves on 4 x 2 and 10 x 3 arches). The estimate therefore only proposes moves; the full-scale solve decides;
2. **compatibility**: swaps that raise the MRF edge energy with the current neighbours are not proposed
   (``max_compatibility_increase``): those are the ones that break load paths;
3. **move**: the elements whose best swap has the lowest score are swapped together (at most ``batch``, no two
   adjacent); the structure must not gain solid components;
4. **check**: the full-scale solve of the new structure decides: the move is kept only if the full-scale RRMSE
   is lower. A rejected move halves the batch, an accepted one doubles it.

The loop stops when the batch falls below one, after ``max_iterations`` full-scale solves or when the time budget
is spent. It never returns a design worse at full scale than the one it started from. Before the loop, `connect`
swaps cells of loose solid parts (components other than the largest) for candidates that join them to it or remove
them, so that the structure is one solid part.

`metasys.design` runs it after the output space mapping rounds (`metasys.pipeline.run`), which move the whole
design at once and gave most of the gain on the problems measured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidValueError
from ..mrf import count_components, place_cells

CELL = 50


@dataclass
class Refinement:
    """Result of `refine`.

    Attributes
    ----------
    labels : int array (H, W)
        Chosen candidate per element after the refinement.
    structure : bool array (50 H, 50 W)
    full_scale : FullScaleResult
        The full-scale solution of ``structure``.
    rrmse_full : float
    history : list of dict
        One entry per full-scale solve: ``iteration``, ``rrmse_full`` (of the structure kept after it),
        ``tried`` (full-scale RRMSE of the move), ``swaps`` (elements changed by the move),
        ``accepted``, ``estimate`` (the adjoint's first-order change of the move), ``n_components``
        and ``time_s`` (since the start of the refinement). Entry 0 is the starting design (after `connect`),
        with ``unrefined``: the full-scale RRMSE of ``initial`` (None without it).
    """

    labels: np.ndarray
    structure: np.ndarray
    full_scale: object
    rrmse_full: float
    history: list = field(default_factory=list)

    @property
    def swaps_accepted(self) -> int:
        return int(sum(h["swaps"] for h in self.history if h.get("accepted")))


def rrmse_and_gradient(macro_displacement, problem) -> tuple[float, np.ndarray]:
    """Full-scale RRMSE of the macro-node displacements (H + 1, W + 1, 2) and its gradient (same shape)."""
    u = np.asarray(macro_displacement, dtype=float).ravel()
    residual = u[problem.target_dofs] - problem.target_values
    norm_t = float(np.linalg.norm(problem.target_values))
    value = float(np.linalg.norm(residual) / norm_t)
    grad = np.zeros_like(u)
    if value > 0:
        np.add.at(grad, problem.target_dofs, residual / (norm_t**2 * value))
    return value, grad.reshape(np.shape(macro_displacement))


def cell_corner_fields(field, grid_shape) -> np.ndarray:
    """Bilinear fit of a fine nodal field over each cell's boundary ring: corner values (H, W, 8).

    ``field`` (50 H + 1, 50 W + 1, 2) (NaN at nodes outside the model) is fitted, per cell, by the bilinear
    field of the cell's four corners in the least-squares sense over the 200 nodes of its boundary ring
    (those with a value), so that a corner in a void does not decide the cell's deformation. Local dof order
    of `metasys.fem.element` (corners (0, 0), (1, 0), (1, 1), (0, 1); x then y).
    """
    h, w = grid_shape
    s = np.arange(CELL + 1) / CELL
    ring = np.concatenate([np.stack([s, np.zeros_like(s)], 1), np.stack([s, np.ones_like(s)], 1),
                           np.stack([np.zeros_like(s[1:-1]), s[1:-1]], 1), np.stack([np.ones_like(s[1:-1]), s[1:-1]], 1)])
    rr = np.round(ring[:, 1] * CELL).astype(int)
    cc = np.round(ring[:, 0] * CELL).astype(int)
    x, y = ring[:, 0], ring[:, 1]
    shape = np.stack([(1 - x) * (1 - y), x * (1 - y), x * y, (1 - x) * y], axis=1)  # (R, 4)
    rows = CELL * np.arange(h)[:, None, None] + rr
    cols = CELL * np.arange(w)[None, :, None] + cc
    values = np.asarray(field, dtype=float)[rows, cols]  # (H, W, R, 2)
    valid = np.all(np.isfinite(values), axis=-1).astype(float)
    gram = np.einsum("hwr,ra,rb->hwab", valid, shape, shape) + 1e-9 * np.eye(4)
    rhs = np.einsum("hwr,ra,hwrc->hwac", valid, shape, np.nan_to_num(values))
    corners = np.linalg.solve(gram, rhs)  # (H, W, 4, 2)
    return corners.reshape(h, w, 8)


def swap_estimates(displacement, adjoint, properties, labels) -> np.ndarray:
    """First-order change of the objective (H, W, L) for replacing each element's cell by each candidate.

    The change of element e's stiffness is taken at the cell level: its homogenized element stiffness
    difference ``K_e(p_l) - K_e(p_current)`` (one bilinear element per cell, `metasys.fem.element.orthotropic_basis`)
    contracted with the forward and adjoint fields of the full-scale solution, each fitted bilinearly over the
    cell's boundary (`cell_corner_fields`): ``dJ ~ -lambda_e^T dK_e u_e``.

    Parameters
    ----------
    displacement, adjoint : arrays (50 H + 1, 50 W + 1, 2)
        Full-scale displacement (NaN outside the model) and adjoint field (`FullScaleSolver.adjoint`).
    properties : array (H, W, L, 4)
        Homogenized (C11, C12, C22, C33) of every candidate.
    labels : int array (H, W)
        Current label of each element.
    """
    from ..fem.element import orthotropic_basis

    props = np.asarray(properties, dtype=float)
    h, w = props.shape[:2]
    u = cell_corner_fields(displacement, (h, w))
    lam = cell_corner_fields(np.where(np.isfinite(displacement), adjoint, np.nan), (h, w))
    # lambda^T K(p) u is linear in p: one number per property and element
    per_property = np.einsum("hwa,qab,hwb->hwq", lam, orthotropic_basis(1.0, 1.0), u)
    current = np.take_along_axis(props, np.asarray(labels)[:, :, None, None], axis=2)
    return -np.einsum("hwlq,hwq->hwl", props - current, per_property)


def edge_energy_change(pairwise, edges, labels) -> np.ndarray:
    """Change of the MRF edge energy (H, W, L) for relabelling one element, its neighbours' labels fixed.

    ``pairwise`` (E, L, L) and ``edges`` (E, 2) as in `metasys.mrf.mrf_from_candidates` (node ``j W + i``).
    """
    h, w = labels.shape
    x = np.asarray(labels).ravel()
    n_labels = pairwise.shape[1]
    delta = np.zeros((h * w, n_labels))
    e = np.arange(len(edges))
    u, v = edges[:, 0], edges[:, 1]
    # node u takes label l, v keeps x[v]: pairwise[e, l, x[v]]; and symmetrically for v
    np.add.at(delta, u, pairwise[e, :, x[v]] - pairwise[e, x[u], x[v]][:, None])
    np.add.at(delta, v, pairwise[e, x[u], :] - pairwise[e, x[u], x[v]][:, None])
    return delta.reshape(h, w, n_labels)


def _independent_moves(score, best, grid_shape, batch) -> list[tuple[int, int, int]]:
    """Up to ``batch`` elements with the most negative scores, no two of them 4-adjacent: [(j, i, label)]."""
    h, w = grid_shape
    order = np.argsort(score, axis=None, kind="stable")
    taken = np.zeros((h + 2, w + 2), dtype=bool)
    moves = []
    for flat in order:
        if score.flat[flat] >= 0 or len(moves) >= batch:
            break
        j, i = divmod(int(flat), w)
        if taken[j + 1, i + 1] or taken[j, i + 1] or taken[j + 2, i + 1] or taken[j + 1, i] or taken[j + 1, i + 2]:
            continue
        taken[j + 1, i + 1] = True
        moves.append((j, i, int(best[j, i])))
    return moves


def _place(structure, cells, moves) -> np.ndarray:
    new = structure.copy()
    for j, i, label in moves:
        new[CELL * j : CELL * (j + 1), CELL * i : CELL * (i + 1)] = cells[j, i, label]
    return new


def connect(cells, labels, structure, *, max_rounds: int = 5) -> tuple[np.ndarray, np.ndarray, int]:
    """Swap cells so that loose solid parts (4-connected components other than the largest) join it or vanish.

    For every element that holds pixels of a loose part, each of its candidates is tried and the one
    giving the fewest components is kept (ties: the current label); rounds repeat while the count falls.
    Returns (labels, structure, number of components).
    """
    from scipy import ndimage

    labels, structure = np.array(labels), np.array(structure, dtype=bool)
    h, w, n_labels = cells.shape[:3]
    components = count_components(structure)
    for _ in range(max_rounds):
        if components <= 1:
            break
        start = components
        parts, n_parts = ndimage.label(structure)
        sizes = np.bincount(parts.ravel(), minlength=n_parts + 1)
        sizes[0] = 0
        loose = (parts > 0) & (parts != int(np.argmax(sizes)))
        blocks = loose.reshape(h, CELL, w, CELL).any(axis=(1, 3))
        for j, i in zip(*np.nonzero(blocks), strict=True):
            best, best_count = int(labels[j, i]), components
            for label in range(n_labels):
                if label == labels[j, i]:
                    continue
                count = count_components(_place(structure, cells, [(j, i, label)]))
                if count < best_count:
                    best, best_count = label, count
            if best != labels[j, i]:
                structure = _place(structure, cells, [(j, i, best)])
                labels[j, i], components = best, best_count
        if components >= start:
            break
    return labels, structure, components


def refine(problem, cells, properties, labels, pairwise, edges, *, material, initial=None, budget: float | None = 60.0,
           max_iterations: int = 50, batch: int | None = None, compatibility_weight: float = 0.0,
           max_compatibility_increase: float = 0.0, progress: bool = False, say=None) -> Refinement:
    """Improve an assembled design at full scale by adjoint-ranked cell swaps (see the module docstring).

    Parameters
    ----------
    problem : Problem
    cells : bool array (H, W, L, 50, 50)
        The candidate cells of every element (`Candidates.cells`).
    properties : array (H, W, L, 4)
        Their homogenized properties (`Candidates.properties`).
    labels : int array (H, W)
        The starting choice (the MRF's).
    pairwise, edges : arrays (E, L, L), (E, 2)
        The assembly MRF's edge costs (`metasys.mrf.mrf_from_candidates`).
    material : Material
        Base material of the structure.
    initial : FullScaleResult, optional
        Full-scale solution of the starting structure (solved again with its solver kept if it has none and
        ``max_iterations`` > 0).
    budget : float or None
        Seconds after which no new full-scale solve is started (None: no limit).
    max_iterations : int
        Full-scale solves of moves at most.
    batch : int, optional
        Elements swapped in the first move (default: 2% of the elements, at least 1).
    compatibility_weight : float
        RRMSE units per unit of MRF edge energy in the swap score (0: the estimate alone).
    max_compatibility_increase : float
        Swaps that raise the MRF edge energy (theta_G + theta_M with the current neighbours) by more than this
        are not tried: on the bridge the swaps the estimate ranked best but that raised it by 1.3-4.2 raised the
        full-scale RRMSE by up to 0.95 (broken load paths the cell-level estimate cannot see).
    progress : bool
        Progress bar over the full-scale solves.
    say : callable, optional
        Called with one line per iteration.

    Returns
    -------
    Refinement
    """
    from ..fem.full_scale import solve_full_scale
    from ..progress import progress_bar

    if max_iterations < 0 or int(max_iterations) != max_iterations:
        raise InvalidValueError(f"max_iterations: expected a non-negative integer, got {max_iterations!r}")
    if budget is not None and not budget >= 0:
        raise InvalidValueError(f"budget: expected seconds >= 0 or None, got {budget!r}")
    say = say or (lambda line: None)
    t0 = time.perf_counter()
    cells = np.asarray(cells, dtype=bool)
    h, w = problem.height, problem.width
    if cells.shape[:2] != (h, w) or cells.shape[3:] != (CELL, CELL):
        raise InvalidValueError(f"cells: expected shape ({h}, {w}, L, {CELL}, {CELL}), got {cells.shape}")
    labels = np.asarray(labels).reshape(h, w).copy()
    start = place_cells(np.take_along_axis(cells, labels[:, :, None, None, None], axis=2)[:, :, 0])
    labels, structure, n_components = connect(cells, labels, start)

    def solve(s):
        return solve_full_scale(s, problem.conditions, material=material, keep_solver=max_iterations > 0)

    # the kept solver (factorization or multigrid hierarchy, gigabytes on the smiley) only serves the swap moves
    reuse = (initial is not None and np.array_equal(structure, start)
             and (initial.solver is not None or max_iterations == 0))
    current = initial if reuse else solve(structure)
    value, _ = rrmse_and_gradient(current.macro_displacement, problem)
    unrefined = None if initial is None else rrmse_and_gradient(initial.macro_displacement, problem)[0]
    history = [{"iteration": 0, "rrmse_full": value, "tried": value, "swaps": 0, "accepted": True, "estimate": 0.0,
                "n_components": int(n_components), "time_s": round(time.perf_counter() - t0, 3), "unrefined": unrefined}]
    say(f"refinement: start rrmse {value:.4f}, {n_components} solid component(s)")
    batch = max(1, int(round(0.02 * h * w))) if batch is None else int(batch)
    max_batch = max(batch, h * w // 4)
    with progress_bar("full-scale refinement", total=max_iterations, enabled=progress) as advance:
        for iteration in range(1, max_iterations + 1):
            if budget is not None and time.perf_counter() - t0 > budget:
                break
            value, grad = rrmse_and_gradient(current.macro_displacement, problem)
            estimate = swap_estimates(current.displacement, current.solver.adjoint(grad), properties, labels)
            compatibility = edge_energy_change(pairwise, edges, labels)
            score = estimate + compatibility_weight * compatibility
            score = np.where((estimate < 0) & (compatibility <= max_compatibility_increase), score, np.inf)
            best = np.argmin(score, axis=-1)
            best_score = np.take_along_axis(score, best[..., None], axis=-1)[..., 0]
            moves = _independent_moves(np.where(np.isfinite(best_score), best_score, 0.0), best, (h, w), batch)
            if not moves:
                break
            trial = _place(structure, cells, moves)
            trial_components = count_components(trial)
            predicted = float(sum(estimate[j, i, label] for j, i, label in moves))
            entry = {"iteration": iteration, "swaps": len(moves), "estimate": predicted, "n_components": int(trial_components)}
            if trial_components > n_components:
                entry.update(tried=None, accepted=False)
            else:
                result = solve(trial)
                tried, _ = rrmse_and_gradient(result.macro_displacement, problem)
                entry.update(tried=tried, accepted=tried < value)
                if tried < value:
                    for j, i, label in moves:
                        labels[j, i] = label
                    structure, current, value, n_components = trial, result, tried, trial_components
            batch = min(2 * batch, max_batch) if entry["accepted"] else batch // 2
            entry.update(rrmse_full=value, time_s=round(time.perf_counter() - t0, 3))
            history.append(entry)
            advance()
            outcome = "more components" if entry["tried"] is None else f"{entry['tried']:.4f}"
            say(f"refinement {iteration}: {len(moves)} swaps (estimate {predicted:+.4f}) -> {outcome}"
                f"{' kept' if entry['accepted'] else ''}; rrmse {value:.4f}")
            if batch < 1:
                break
    return Refinement(labels=labels, structure=structure, full_scale=current, rrmse_full=value, history=history)
