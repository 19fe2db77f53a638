"""Label search on the macro model of the chosen cells, corrected by the full-scale discrepancy.

The macro stage optimizes properties, but the structure is made of the candidates the MRF chose, whose
homogenized properties miss those targets (median 5% on the bridge), and the macro model of even the exact cells
differs from the full-scale model (interfaces, one bilinear element per cell). `relabel` works on the labels
directly: with ``P(labels)`` the chosen cells' own properties and ``d = F - M(P(labels0))`` the full-scale /
macro discrepancy at the target degrees of freedom seen for the starting labels (zero without a full-scale
solution), it minimizes

    J(labels) = ||u_M(P(labels))[gamma] + d - u_t|| / ||u_t||  +  w * E_edges(labels)

by greedy single-element swaps, where ``E_edges`` is the assembly MRF's edge energy (theta_G + theta_M, Eq. 17)
and ``w`` (``compatibility_weight``, RRMSE per unit of edge energy) keeps the swaps from breaking the
interfaces the full-scale model depends on. It is output space mapping over the discrete choice: only the
swapped elements change, so ``d`` stays close to what the next full-scale solve shows. Every swap's exact ``J``
comes from a rank-8 (Woodbury) update of the dense inverse of the macro stiffness, for all elements and
candidates at once.

Single swaps cannot leave a region built of one cell: changing one of its elements breaks four interfaces for
little gain. With cell ``identities`` the search also makes **group moves**: every element showing the same
cell moves to another cell found in most of their candidate lists (the interfaces inside the group stay those
of a cell with itself), each tried by a sparse macro solve; single swaps and group moves alternate until neither
helps. A ``proposal`` (e.g. an MRF's labels over candidates chosen in the RRMSE's metric,
`metasys.pipeline.sensitivity`) is searched from as well, and the better result is returned.

On the bridge (seed 1, structure at full-scale RRMSE 0.119) one search with ``w = 0.02`` changed 5 cells and
the full scale fell to 0.017, a second round to 0.008; with ``w = 0`` it changed 52 cells, broke the
interfaces (theta_G = 0 on 24% of neighbour pairs instead of 62%) and the full scale rose to 0.84.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidValueError, describe
from .refine import edge_energy_change

MAX_DENSE_DOFS = 12_000
"""Largest macro model whose dense inverse (``n_dofs^2`` floats: 1.2 GB at this size) `relabel` forms."""
REFRESH_EVERY = 64
"""Swaps between recomputations of the dense inverse from scratch (bounds the round-off of the updates)."""
GROUP_OPTIONS = 20
"""Replacement cells a group move tries per group (`relabel`)."""
MAX_GROUP_MOVES = 8
"""Group moves per search, each followed by single swaps."""


@dataclass
class Relabeling:
    """Result of `relabel`.

    Attributes
    ----------
    labels : int array (H, W)
    predicted : float
        Full-scale RRMSE the corrected macro model predicts for ``labels`` (J without the edge term).
    start : float
        The same prediction for the starting labels.
    swaps : int
        Elements whose label changed.
    """

    labels: np.ndarray
    predicted: float
    start: float
    swaps: int


def relabel(problem, properties, labels, pairwise, edges, *, full_displacement=None, compatibility_weight: float = 0.02,
            max_swaps: int | None = None, identities=None, group_options: int = GROUP_OPTIONS,
            proposal=None) -> Relabeling:
    """Greedy label search on the discrepancy-corrected macro model (see the module docstring).

    Parameters
    ----------
    problem : Problem
    properties : array (H, W, L, 4)
        Homogenized (C11, C12, C22, C33) of every candidate (`Candidates.properties`).
    labels : int array (H, W)
        Starting labels.
    pairwise, edges : arrays (E, L, L), (E, 2)
        The assembly MRF's edge costs (`metasys.mrf.mrf_from_candidates`).
    full_displacement : array (H + 1, W + 1, 2), optional
        Full-scale macro-node displacement of the structure of ``labels``; gives the discrepancy ``d``.
    compatibility_weight : float
        ``w``: RRMSE per unit of MRF edge energy.
    max_swaps : int, optional
        Swaps at most (default: the number of elements).
    identities : int array (H, W, L), optional
        Which cell each candidate is (e.g. `Candidates.indices`, database indices; negative entries are cells
        of their own): enables the group moves (see the module docstring).
    group_options : int
        Replacement cells tried per group move (the ones in most of the group's candidate lists).
    proposal : int array (H, W), optional
        Labels to search from as well (e.g. an MRF's); the discrepancy stays that of ``labels``, and the better
        of the two searches' ``J + w E`` is returned.

    Returns
    -------
    Relabeling
    """
    from ..fem.macro import MacroModel

    props = np.asarray(properties, dtype=float)
    h, w = problem.height, problem.width
    if props.ndim != 4 or props.shape[:2] != (h, w) or props.shape[-1] != 4:
        raise InvalidValueError(f"properties: expected shape ({h}, {w}, L, 4), got {describe(properties)}")
    labels = np.array(labels, dtype=np.int64).reshape(h, w)
    if labels.min() < 0 or labels.max() >= props.shape[2]:
        raise InvalidValueError(f"labels: expected values in [0, {props.shape[2]}), got {labels.min()}..{labels.max()}")
    if not (np.isfinite(compatibility_weight) and compatibility_weight >= 0):
        raise InvalidValueError(f"compatibility_weight: expected a number >= 0, got {compatibility_weight!r}")
    max_swaps = h * w if max_swaps is None else int(max_swaps)
    model = MacroModel(w, h, problem.conditions)
    if model.n_dofs > MAX_DENSE_DOFS:
        raise InvalidValueError(f"relabel: the macro model has {model.n_dofs} degrees of freedom, more than the "
                                f"{MAX_DENSE_DOFS} whose dense inverse it forms")
    dofs, target = problem.target_dofs, problem.target_values
    norm = float(np.linalg.norm(target))
    chosen = np.take_along_axis(props, labels[:, :, None, None], axis=2)[:, :, 0]
    u, _ = _solve_dense(model, chosen, inverse=False)
    shift = np.zeros(len(dofs)) if full_displacement is None else \
        np.asarray(full_displacement, dtype=float).ravel()[dofs] - u[dofs]
    start = float(np.linalg.norm(u[dofs] + shift - target) / norm)
    fit = (dofs, target - shift, norm)  # J = ||u[dofs] - (target - shift)|| / norm
    ids = None if identities is None else _identities(identities, props.shape[:3])
    starts = [labels] if proposal is None else [labels, np.array(proposal, dtype=np.int64).reshape(h, w)]
    best = None
    for first in starts:
        found = _search(model, fit, props, first.copy(), labels, pairwise, edges, compatibility_weight, max_swaps, ids,
                        group_options)
        if best is None or found[1] < best[1]:
            best = found
    found = best[0]
    chosen = np.take_along_axis(props, found[:, :, None, None], axis=2)[:, :, 0]
    u, _ = _solve_dense(model, chosen, inverse=False)
    value = float(np.linalg.norm(u[dofs] + shift - target) / norm)
    return Relabeling(labels=found, predicted=value, start=start, swaps=int(np.count_nonzero(found != labels)))


def _search(model, fit, props, labels, original, pairwise, edges, weight, max_swaps, ids, group_options):
    """Single swaps and group moves from ``labels`` (modified in place): (labels, J + w E)."""
    dofs, target, norm = fit
    chosen = np.take_along_axis(props, labels[:, :, None, None], axis=2)[:, :, 0]
    changed = labels != original
    for _ in range(MAX_GROUP_MOVES + 1):
        _single_swaps(model, fit, props, labels, chosen, pairwise, edges, weight, max_swaps - int(changed.sum()), changed)
        if ids is None or changed.sum() >= max_swaps:
            break
        move = _best_group_move(model, fit, props, ids, labels, pairwise, edges, weight, group_options)
        if move is None:
            break
        members, new = move
        labels[members] = new
        chosen[members] = props[members, new]
        changed[members] = True
    u, _ = _solve_dense(model, chosen, inverse=False)
    return labels, float(np.linalg.norm(u[dofs] - target) / norm) + weight * _edge_energy(pairwise, edges, labels)


def _single_swaps(model, fit, props, labels, chosen, pairwise, edges, weight, max_swaps, changed) -> int:
    """Greedy single-element swaps (exact Woodbury values) until none lowers ``J + w E``; updates ``labels``,
    ``chosen`` and ``changed`` in place and returns the number of swaps. ``fit`` = (dofs, corrected target, norm)."""
    dofs, target, norm = fit
    element_dofs = model.element_dofs  # (H, W, 8)
    h, w = labels.shape
    flat_dofs = element_dofs.reshape(-1)
    if max_swaps <= 0:
        return 0
    u, inverse = _solve_dense(model, chosen)
    d_k = np.einsum("hwlq,qab->hwlab", props - chosen[:, :, None, :], model.basis)  # (H, W, L, 8, 8)
    swaps = 0
    for swap in range(max_swaps):
        if swap and swap % REFRESH_EVERY == 0:
            u, inverse = _solve_dense(model, chosen)
        residual = u[dofs] - target
        value = float(np.linalg.norm(residual) / norm)
        g_ee = inverse[element_dofs[..., :, None], element_dofs[..., None, :]]  # (H, W, 8, 8)
        g_te = inverse[np.ix_(dofs, flat_dofs)].reshape(len(dofs), h, w, 8).transpose(1, 2, 0, 3)  # (H, W, T, 8)
        system = np.eye(8) + d_k @ g_ee[:, :, None]
        rhs = d_k @ u[element_dofs][:, :, None, :, None]
        x = np.linalg.solve(system, rhs)[..., 0]  # (H, W, L, 8)
        change = -(g_te @ np.swapaxes(x, -1, -2))  # (H, W, T, L)
        predicted = np.linalg.norm(residual[:, None] + change, axis=2) / norm  # (H, W, L)
        score = predicted + weight * edge_energy_change(pairwise, edges, labels)
        j, i, label = np.unravel_index(int(np.argmin(score)), score.shape)
        if not score[j, i, label] < value * (1 - 1e-6):
            break
        e = element_dofs[j, i]
        u = u - inverse[:, e] @ x[j, i, label]
        update = np.linalg.solve(system[j, i, label], d_k[j, i, label] @ inverse[e, :])
        inverse -= inverse[:, e] @ update
        labels[j, i], chosen[j, i] = label, props[j, i, label]
        d_k[j, i] = np.einsum("lq,qab->lab", props[j, i] - chosen[j, i], model.basis)
        changed[j, i] = True
        swaps += 1
    return swaps


def _identities(identities, shape) -> np.ndarray:
    """Cell identities (H, W, L) with every negative entry (a cell of its own) made unique."""
    ids = np.array(identities, dtype=np.int64)
    if ids.shape != shape:
        raise InvalidValueError(f"identities: expected shape {shape}, got {describe(identities)}")
    own = ids < 0
    ids[own] = -1 - np.arange(int(own.sum()))
    return ids


def _edge_energy(pairwise, edges, labels) -> float:
    x = np.asarray(labels).ravel()
    return float(pairwise[np.arange(len(edges)), x[edges[:, 0]], x[edges[:, 1]]].sum())


def _best_group_move(model, fit, props, ids, labels, pairwise, edges, weight, options):
    """The best group move lowering ``J + w E``: (member mask (H, W), their new labels) or None.

    A group is every element showing the same cell; it moves together to another cell in most of its members'
    candidate lists (members without it keep theirs), so the interfaces inside the group stay those of a cell
    with itself while their common properties change. Each move is a sparse macro solve.
    """
    dofs, target, norm = fit
    current = np.take_along_axis(ids, labels[:, :, None], axis=2)[:, :, 0]
    chosen = np.take_along_axis(props, labels[:, :, None, None], axis=2)[:, :, 0]

    def score(lab, prop):
        u = model.solve(prop).vector
        return float(np.linalg.norm(u[dofs] - target) / norm) + weight * _edge_energy(pairwise, edges, lab)

    best_value, best = score(labels, chosen) * (1 - 1e-6), None
    groups, counts = np.unique(current, return_counts=True)
    for cell in groups[counts >= 2]:
        members = current == cell
        lists = ids[members]  # (m, L)
        others, seen = np.unique(lists[lists != cell], return_counts=True)
        keep = seen >= max(2, (len(lists) + 1) // 2)
        for other in others[keep][np.argsort(-seen[keep], kind="stable")][:options]:
            hit = lists == other
            has = hit.any(axis=1)
            new = np.where(has, hit.argmax(axis=1), labels[members])
            trial_labels, trial_props = labels.copy(), chosen.copy()
            trial_labels[members] = new
            trial_props[members] = props[members, new]
            value = score(trial_labels, trial_props)
            if value < best_value:
                best_value, best = value, (members, new)
    return best


def _solve_dense(model, properties, inverse: bool = True):
    """Macro displacement (n_dofs,) and the dense inverse of the free-free stiffness embedded in
    (n_dofs, n_dofs) with zero rows and columns at prescribed degrees of freedom (None if ``inverse`` is False)."""
    u = model.solve(properties).vector
    if not inverse:
        return u, None
    free = model.free
    # LAPACK's dense inverse: SuperLU's solve with n right-hand sides is 7x slower (5,202 dofs: 225 s against 32 s)
    full = np.zeros((model.n_dofs, model.n_dofs))
    full[np.ix_(free, free)] = np.linalg.inv(model.stiffness(properties)[free][:, free].toarray())
    return u, full
