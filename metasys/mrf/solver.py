"""MAP inference on pairwise MRFs by dual decomposition into chains (DD-MRF, Komodakis et al. 2011).

The energy ``E(x) = sum_i unary[i, x_i] + sum_e pairwise[e, x_u, x_v]`` is split into chains that
together cover every edge once (rows and columns on a grid). Each node's unary cost is shared
equally by its copies in the chains; Lagrange multipliers ``lambda`` (summing to zero over a
node's copies) make the copies agree. The dual ``D(lambda) = sum_c min E_c`` is a lower bound of
every labelling's energy; it is raised by projected supergradient steps::

    lambda_k += alpha * (onehot(x_k) - mean over the node's copies),
    alpha = gamma * (E_best - D) / ||g||^2                                  (Polyak step, target E_best)

where ``gamma`` (start 1) is halved whenever the dual has not improved for ``patience`` steps.
Primal labellings are read off the chains (the label of a node's j-th copy), improved by a
chain-wise block coordinate descent, and the best is kept. The loop stops when
``(E_best - D_best) / max(|E_best|, S) <= rel_gap`` or after ``max_iter`` iterations. ``S``
(`cost_scale`) is the sum over nodes of the range ``max - min`` of their finite unary costs (of the
pairwise tables when every unary row is constant): a scale of the problem that adding constants to
the costs does not change, so it cannot vanish with the energy. Dividing by ``|E_best|`` alone never
stops a model whose optimal energy is 0 or near it (costs shifted so that the best labelling costs
nothing, a perfectly matched assembly): the dual approaches E* from below and the ratio stays huge.
Where ``|E_best| >= S`` (both 50 x 50 assembly benchmarks below: S = 203 and 1502 against
E = 288 and 3141) the criterion is the usual ``(E - D) / |E|``; near 0 it is an absolute gap of
``rel_gap * S``. ``S = 0`` only when every term is constant on its finite entries: every finite
labelling is then optimal, and the gap counts as 0. ``MRFResult.gap`` is this ratio.

The chains come from the node numbering: edges are grouped by ``v - u`` (``u < v``), and runs
``u, u + d, u + 2d, ...`` are chains; on a W-wide grid numbered ``n = j * W + i`` these are exactly
the rows (d = 1) and columns (d = W). When that gives short chains (any other graph), a greedy path
cover is used instead. Every kernel of an iteration runs over all chains in one numba call.

Measured (``benchmarks/mrf.py``, 2 shared cores):

- assembly MRFs from database cells, 50 x 50 elements, 10 candidates: relative gap <= 1e-3 after
  40-50 iterations (< 1 s); the LP relaxation of these costs is nearly tight. The same instances
  with their costs shifted so that the energy found is 0: 61 and 51 iterations (dividing by
  ``|E|`` alone: 207 iterations, and 5000 iterations / 10 s without converging);
- i.i.d. uniform costs, 50 x 50 x 10 (worst case): 5000 iterations in 2-12 s (load-dependent), gap
  0.051 (S = 2045 > |E|; 0.068 relative to |E|); without the chain-wise descent
  (``polish_every=0``) 40 % faster but energy 1927 instead of 1551;
- frustrated binary grids (UAI 2014 Grids_26/29/30): the dual reaches the local-polytope LP
  optimum (to 1e-7 relative) but that LP lies 25 % below the optimum E*, so no dual decomposition
  certifies them; the energies found are 2.6-3.7 % above E* (descent every iteration: within 0.5 %
  of that); the Segmentation instances are solved to E* in < 20 iterations (there S = 276 and
  222 exceed E* = 51 and 50, so the stop comes at an absolute gap of 0.2-0.3).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidTypeError, InvalidValueError, describe
from . import _kernels


@dataclass
class MRFResult:
    """Result of `solve_mrf`.

    Attributes
    ----------
    labels : int array (n,)
        Best labelling found (minimum energy among all primal candidates).
    energy : float
        Its energy ``E(labels)``.
    lower_bound : float
        Best dual value; ``lower_bound <= min_x E(x) <= energy``.
    iterations : int
        Supergradient iterations done.
    history : dict of arrays (iterations,)
        ``energy`` (best primal so far), ``bound`` (dual at the iteration), ``best_bound``,
        ``step`` (alpha).
    converged : bool
        Whether the relative gap reached ``rel_gap`` (or every node's copies agreed: an exact optimum).
    seconds : float
        Wall time of the solve (setup included).
    n_chains : int
        Number of chains of the decomposition.
    gap_scale : float or None
        Denominator of the relative gap the solver stopped on: ``max(|E|, S)`` (module docstring),
        with ``E`` the energy the solver saw (a model's ``constant`` is not included). None when
        unknown: ``gap`` then divides by ``|energy|``.
    """

    labels: np.ndarray
    energy: float
    lower_bound: float
    iterations: int
    history: dict = field(repr=False)
    converged: bool = False
    seconds: float = 0.0
    n_chains: int = 0
    gap_scale: float | None = None

    @property
    def gap(self) -> float:
        """Relative primal-dual gap ``(energy - lower_bound) / gap_scale``: the quantity compared with ``rel_gap``."""
        if self.gap_scale is None:
            return relative_gap(self.energy, self.lower_bound)
        return _gap_ratio(self.energy - self.lower_bound, self.gap_scale)


def cost_scale(unary: np.ndarray, pairwise: np.ndarray) -> float:
    """Problem scale of the relative gap: the sum over nodes of ``max - min`` of their finite unary costs
    (what the labels can change through the unary terms); the same sum over the pairwise tables when
    every unary row is constant. Unchanged by adding a constant to any term, so it does not vanish when
    the optimal energy does; 0 only when every term is constant on its finite entries.
    """
    for table in (unary, pairwise):
        if table.size:
            table = table.reshape(len(table), -1)
            finite = np.isfinite(table)
            spread = np.where(finite, table, -np.inf).max(axis=1) - np.where(finite, table, np.inf).min(axis=1)
            total = float(spread[np.isfinite(spread)].sum())
            if total > 0:
                return total
    return 0.0


def _gap_ratio(diff: float, scale: float) -> float:
    """``diff / scale`` for the solver's scale ``max(|E|, S)``; 0 for ``diff <= 0`` and for a zero scale
    (energy 0 and all terms constant: every finite labelling is optimal); inf for an infinite energy."""
    if not diff > 0:
        return 0.0 if diff <= 0 else np.inf
    if not np.isfinite(scale):
        return np.inf
    return diff / scale if scale > 0 else 0.0


def relative_gap(energy: float, bound: float, scale: float | None = None) -> float:
    """Relative gap ``(energy - bound) / max(|energy|, scale)`` (``scale``: `cost_scale` of the model).

    Without ``scale``: ``(energy - bound) / |energy|``, which is inf for a zero energy above its bound
    (the reason the solver uses ``scale``). 0 when ``energy <= bound``.
    """
    diff = energy - bound
    if scale is None:
        if diff <= 0:
            return 0.0
        return diff / abs(energy) if energy != 0 else np.inf
    return _gap_ratio(diff, max(abs(energy), scale))


def validate_mrf(unary, edges, pairwise, name: str = "solve_mrf"):
    """Check and convert the array form; returns float unary (n, L), int edges (E, 2), float pairwise (E, L, L)."""
    for arg, val in (("unary", unary), ("edges", edges), ("pairwise", pairwise)):
        if val is None or isinstance(val, (str, bytes)):
            raise InvalidTypeError(f"{name}: {arg} must be an array, got {describe(val)}")
    try:
        u = np.asarray(unary, dtype=float)
        p = np.asarray(pairwise, dtype=float)
        e = np.asarray(edges)
    except (TypeError, ValueError) as exc:
        raise InvalidTypeError(f"{name}: unary, edges and pairwise must be numeric arrays ({exc})") from None
    if u.ndim != 2 or u.shape[1] < 1:
        raise InvalidValueError(f"{name}: unary must have shape (n, L) with L >= 1, got {describe(unary)}")
    n, n_labels = u.shape
    if e.size == 0:
        e = np.zeros((0, 2), np.int64)
    if e.ndim != 2 or e.shape[1] != 2:
        raise InvalidValueError(f"{name}: edges must have shape (E, 2), got {describe(edges)}")
    if not np.issubdtype(e.dtype, np.integer):
        if not np.all(np.equal(np.mod(e, 1), 0)):
            raise InvalidTypeError(f"{name}: edges must hold integer node indices, got {describe(edges)}")
    e = e.astype(np.int64)
    if p.size == 0 and len(e) == 0:
        p = np.zeros((0, n_labels, n_labels))
    if p.shape != (len(e), n_labels, n_labels):
        raise InvalidValueError(f"{name}: pairwise must have shape (E, L, L) = ({len(e)}, {n_labels}, {n_labels}), "
                                f"got {describe(pairwise)}")
    if len(e) and (e.min() < 0 or e.max() >= n):
        raise InvalidValueError(f"{name}: edges must index nodes in [0, {n}), got values in [{e.min()}, {e.max()}]")
    if np.any(e[:, 0] == e[:, 1]):
        raise InvalidValueError(f"{name}: edges must join two different nodes, got a self-loop at edge "
                                f"{int(np.flatnonzero(e[:, 0] == e[:, 1])[0])}")
    if np.isnan(u).any() or np.isnan(p).any() or (u == -np.inf).any() or (p == -np.inf).any():
        raise InvalidValueError(f"{name}: costs must be finite or +inf (forbidden), got NaN or -inf")
    if not np.isfinite(u.min(axis=1)).all():
        raise InvalidValueError(f"{name}: every node needs at least one label of finite unary cost")
    return u, e, p


def canonical_edges(edges: np.ndarray, pairwise: np.ndarray):
    """Orient every edge ``u < v`` (transposing its table) and sum the tables of repeated pairs."""
    flip = edges[:, 0] > edges[:, 1]
    e = np.where(flip[:, None], edges[:, ::-1], edges)
    p = np.where(flip[:, None, None], np.swapaxes(pairwise, 1, 2), pairwise)
    if len(e) == 0:
        return e, p
    keys, inverse = np.unique(e, axis=0, return_inverse=True)
    if len(keys) == len(e):
        order = np.lexsort((e[:, 1], e[:, 0]))
        return e[order], p[order]
    summed = np.zeros((len(keys),) + p.shape[1:])
    np.add.at(summed, inverse.ravel(), p)
    return keys, summed


def _chains_by_difference(eu: np.ndarray, ev: np.ndarray) -> list[list[int]]:
    """Edge chains u, u+d, u+2d, ... per difference d = v - u (rows and columns of a numbered grid)."""
    chains = []
    if len(eu) == 0:
        return chains
    d = ev - eu
    order = np.lexsort((eu, d))
    bounds = np.flatnonzero(np.diff(d[order])) + 1
    for idx in np.split(order, bounds):
        diff = int(d[idx[0]])
        by_start = dict(zip(eu[idx].tolist(), idx.tolist()))
        for e in idx.tolist():
            if eu[e] - diff in by_start:
                continue  # not the first edge of its run
            run = [e]
            nxt = int(ev[e])
            while nxt in by_start:
                run.append(by_start[nxt])
                nxt = int(ev[by_start[nxt]])
            chains.append(run)
    return chains


def _greedy_path_cover(n: int, eu: np.ndarray, ev: np.ndarray) -> list[list[int]]:
    """Cover the edges by simple paths: walk along unused edges to nodes not yet on the current path."""
    adj = [[] for _ in range(n)]
    for e, (a, b) in enumerate(zip(eu.tolist(), ev.tolist())):
        adj[a].append((b, e))
        adj[b].append((a, e))
    used = np.zeros(len(eu), bool)
    remaining = np.array([len(a) for a in adj])
    chains = []
    # start from low-degree nodes first: their paths tend to be long and not to strand edges
    for start in np.argsort(remaining, kind="stable").tolist():
        while remaining[start] > 0:
            path_nodes = {start}
            run = []
            cur = start
            while True:
                step = None
                for nb, e in adj[cur]:
                    if not used[e] and nb not in path_nodes:
                        step = (nb, e)
                        break
                if step is None:
                    break
                nb, e = step
                used[e] = True
                remaining[cur] -= 1
                remaining[nb] -= 1
                run.append(e)
                path_nodes.add(nb)
                cur = nb
            if not run:  # only edges back into the path are left at start: cannot happen at a fresh start
                break
            chains.append(run)
    return chains


@dataclass
class _Decomposition:
    chain_ptr: np.ndarray  # (C + 1,)
    copy_node: np.ndarray  # (K,)
    link_edge: np.ndarray  # (K,) edge from copy k to k + 1; -1 at a chain's end
    link_flip: np.ndarray  # (K,) bool
    n_copies: np.ndarray  # (n,) float
    node_copies: np.ndarray  # (n, m) copy indices of each node (padded with its last copy)


def decompose(n: int, eu: np.ndarray, ev: np.ndarray, method: str = "auto") -> _Decomposition:
    """Chains covering every edge once and every node at least once (isolated nodes: one-node chains)."""
    if method not in ("auto", "difference", "greedy"):
        raise InvalidValueError(f"solve_mrf: chains must be 'auto', 'difference' or 'greedy', got {method!r}")
    chains = _chains_by_difference(eu, ev) if method != "greedy" else []
    if method == "greedy" or (method == "auto" and len(chains) and len(eu) / len(chains) < 3.0):
        chains = _greedy_path_cover(n, eu, ev)
    nodes_of = []
    links = []
    for run in chains:
        first = run[0]
        # orient the run: start from the endpoint of the first edge not shared with the second edge
        if len(run) > 1 and eu[first] in (eu[run[1]], ev[run[1]]):
            start = int(ev[first])
        else:
            start = int(eu[first])
        seq = [start]
        flips = []
        cur = start
        for e in run:
            if eu[e] == cur:
                cur = int(ev[e])
                flips.append(False)
            else:
                cur = int(eu[e])
                flips.append(True)
            seq.append(cur)
        nodes_of.append(seq)
        links.append((run, flips))
    covered = np.zeros(n, bool)
    for seq in nodes_of:
        covered[seq] = True
    for i in np.flatnonzero(~covered).tolist():
        nodes_of.append([i])
        links.append(([], []))
    lengths = np.array([len(s) for s in nodes_of], np.int64)
    chain_ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    copy_node = np.concatenate([np.asarray(s, np.int64) for s in nodes_of])
    k = len(copy_node)
    link_edge = np.full(k, -1, np.int64)
    link_flip = np.zeros(k, np.bool_)
    for c, (run, flips) in enumerate(links):
        if run:
            link_edge[chain_ptr[c]:chain_ptr[c] + len(run)] = run
            link_flip[chain_ptr[c]:chain_ptr[c] + len(run)] = flips
    n_copies = np.bincount(copy_node, minlength=n).astype(float)
    order = np.argsort(copy_node, kind="stable")
    m = int(n_copies.max())
    starts = np.concatenate([[0], np.cumsum(n_copies.astype(np.int64))[:-1]])
    pos = np.minimum(np.arange(m)[None, :], n_copies[:, None].astype(np.int64) - 1)
    node_copies = order[starts[:, None] + pos]
    return _Decomposition(chain_ptr, copy_node, link_edge, link_flip, n_copies, node_copies)


def _adjacency(n: int, eu: np.ndarray, ev: np.ndarray):
    """CSR incidence: for node i the edges adj_edge[adj_ptr[i]:adj_ptr[i+1]]."""
    ends = np.concatenate([eu, ev])
    edge_ids = np.concatenate([np.arange(len(eu)), np.arange(len(eu))])
    order = np.argsort(ends, kind="stable")
    adj_ptr = np.concatenate([[0], np.cumsum(np.bincount(ends, minlength=n))]).astype(np.int64)
    return adj_ptr, edge_ids[order].astype(np.int64)


def solve_mrf(unary, edges, pairwise, *, max_iter: int = 5000, rel_gap: float = 1e-3, patience: int = 20,
              polish_every: int = 10, chains: str = "auto", time_limit: float | None = None) -> MRFResult:
    """Minimize ``sum_i unary[i, x_i] + sum_e pairwise[e, x_u, x_v]`` by dual decomposition into chains.

    Parameters
    ----------
    unary : array (n, L)
        Label costs per node; ``+inf`` forbids a label (at least one finite per node).
    edges : int array (E, 2)
        Node pairs ``(u, v)``; repeated pairs are summed, orientation is free.
    pairwise : array (E, L, L)
        ``pairwise[e, a, b]`` is the cost of label ``a`` at ``edges[e, 0]`` and ``b`` at ``edges[e, 1]``.
    max_iter : int
        Maximum number of supergradient iterations (keyword-only, like every tuning parameter).
    rel_gap : float
        Stop when ``(energy - lower_bound) / max(|energy|, S) <= rel_gap``; ``S`` is the sum of the
        nodes' unary cost ranges (`cost_scale`; see the module docstring), so models whose optimal
        energy is 0 stop on the gap too.
    patience : int
        Iterations without a better dual before the step factor ``gamma`` is halved.
    polish_every : int
        Run the chain-wise descent on the iteration's best primal candidate every this many
        iterations (0: never; the primal is then read off the chains only).
    chains : {"auto", "difference", "greedy"}
        Decomposition (see the module docstring).
    time_limit : float, optional
        Stop after this many seconds.

    Returns
    -------
    MRFResult
    """
    t0 = time.perf_counter()
    u, e, p = validate_mrf(unary, edges, pairwise)
    if not (isinstance(max_iter, (int, np.integer)) and max_iter >= 0):
        raise InvalidValueError(f"solve_mrf: max_iter must be an integer >= 0, got {max_iter!r}")
    if not (np.isfinite(rel_gap) and rel_gap >= 0):
        raise InvalidValueError(f"solve_mrf: rel_gap must be a number >= 0, got {rel_gap!r}")
    n, n_labels = u.shape
    e, p = canonical_edges(e, p)
    p = np.ascontiguousarray(p)
    scale = cost_scale(u, p)  # S of the gap criterion
    eu = np.ascontiguousarray(e[:, 0])
    ev = np.ascontiguousarray(e[:, 1])
    dec = decompose(n, eu, ev, chains)
    adj_ptr, adj_edge = _adjacency(n, eu, ev)
    k = len(dec.copy_node)
    n_chains = len(dec.chain_ptr) - 1
    base = u[dec.copy_node] / dec.n_copies[dec.copy_node, None]  # unary shared equally by a node's copies
    lam = np.zeros((k, n_labels))
    theta = np.empty((k, n_labels))
    copy_labels = np.zeros(k, np.int64)
    chain_values = np.zeros(n_chains)
    msg = np.empty((k, n_labels))
    back = np.zeros((k, n_labels), np.int64)
    cond = np.empty((k, n_labels))
    new = np.zeros(k, np.int64)
    counts = np.zeros((n, n_labels))
    g = np.zeros((k, n_labels))

    best_labels = np.argmin(u, axis=1).astype(np.int64)
    best_energy = _kernels.energy(best_labels, u, p, eu, ev)
    best_bound = -np.inf
    gamma, stall = 1.0, 0
    hist = {"energy": [], "bound": [], "best_bound": [], "step": []}
    converged = False
    it = 0
    while it < max_iter:
        it += 1
        np.add(base, lam, out=theta)
        _kernels.viterbi_chains(theta, p, dec.chain_ptr, dec.link_edge, dec.link_flip, copy_labels, chain_values, msg, back)
        dual = float(chain_values.sum())
        # primal candidates: node i takes the label of its j-th copy
        cand_best, cand_energy = None, np.inf
        for j in range(min(dec.node_copies.shape[1], 4)):
            x = copy_labels[dec.node_copies[:, j]]
            en = _kernels.energy(x, u, p, eu, ev)
            if en < cand_energy:
                cand_best, cand_energy = x, en
        if polish_every and it % polish_every == 0 and len(eu):
            x = cand_best.copy()
            _kernels.chain_descent(x, u, p, eu, ev, adj_ptr, adj_edge, dec.chain_ptr, dec.copy_node, dec.link_edge,
                                   dec.link_flip, msg, back, cond, new, 50)
            en = _kernels.energy(x, u, p, eu, ev)
            if en < cand_energy:
                cand_best, cand_energy = x, en
        if cand_energy < best_energy:
            best_labels, best_energy = cand_best.copy(), cand_energy
        if not np.isfinite(best_bound) or dual > best_bound + 1e-12 * max(abs(best_bound), 1.0):
            best_bound, stall = dual, 0
        else:
            stall += 1
            if stall >= patience:
                gamma, stall = max(gamma * 0.5, 1e-6), 0
        norm2 = _kernels.subgradient(copy_labels, dec.copy_node, dec.n_copies, counts, g)
        if norm2 == 0.0:  # all copies agree: that labelling is optimal and the dual is tight
            x = copy_labels[dec.node_copies[:, 0]]
            en = _kernels.energy(x, u, p, eu, ev)
            if en < best_energy:
                best_labels, best_energy = x.copy(), en
            best_bound = max(best_bound, min(dual, best_energy))
            alpha = 0.0
        else:
            target = best_energy if np.isfinite(best_energy) else dual + 0.1 * max(abs(dual), 1.0)
            alpha = gamma * max(target - dual, 1e-9 * max(abs(dual), 1.0)) / norm2
            lam += alpha * g
        hist["energy"].append(best_energy)
        hist["bound"].append(dual)
        hist["best_bound"].append(best_bound)
        hist["step"].append(alpha)
        if relative_gap(best_energy, best_bound, scale) <= rel_gap or norm2 == 0.0:
            converged = True
            break
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            break
    if polish_every and len(eu) and np.isfinite(best_energy):
        # a last descent from the best labelling, kept only if it is lower (with chords the descent can rise)
        x = best_labels.copy()
        _kernels.chain_descent(x, u, p, eu, ev, adj_ptr, adj_edge, dec.chain_ptr, dec.copy_node, dec.link_edge,
                               dec.link_flip, msg, back, cond, new, 50)
        en = _kernels.energy(x, u, p, eu, ev)
        if en < best_energy:
            best_labels, best_energy = x, en
    if it == 0:  # max_iter = 0: only the trivial bound sum_i min unary over an edgeless model is known
        best_bound = float(u.min(axis=1).sum()) if len(eu) == 0 else -np.inf
    history = {key: np.asarray(val, float) for key, val in hist.items()}
    return MRFResult(best_labels.astype(np.int64), float(best_energy), float(best_bound), it, history, converged,
                     time.perf_counter() - t0, n_chains, gap_scale=max(abs(float(best_energy)), scale))


def energy(unary, edges, pairwise, labels) -> float:
    """Energy ``sum_i unary[i, x_i] + sum_e pairwise[e, x_u, x_v]`` of a labelling ``labels`` (n,)."""
    u, e, p = validate_mrf(unary, edges, pairwise, name="energy")
    x = np.asarray(labels)
    if x.shape != (len(u),) or not np.issubdtype(x.dtype, np.integer) or (len(x) and (x.min() < 0 or x.max() >= u.shape[1])):
        raise InvalidValueError(f"energy: labels must be integers in [0, {u.shape[1]}) of shape ({len(u)},), "
                                f"got {describe(labels)}")
    x = x.astype(np.int64)
    return float(u[np.arange(len(u)), x].sum() + p[np.arange(len(e)), x[e[:, 0]], x[e[:, 1]]].sum())
