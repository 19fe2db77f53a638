"""The pairwise MRF in compact array form, its energy, and the pgmpy view of it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidValueError, describe
from .solver import MRFResult, canonical_edges, solve_mrf, validate_mrf


@dataclass
class MRFModel:
    """Pairwise MRF ``E(x) = constant + sum_i unary[i, x_i] + sum_e pairwise[e, x_u, x_v]`` (minimized).

    Attributes
    ----------
    unary : array (n, L)
        Node costs; ``+inf`` marks labels a node does not have (fewer labels than ``L``) or forbids.
    edges : int array (E, 2)
        Node pairs ``(u, v)``.
    pairwise : array (E, L, L)
        ``pairwise[e, a, b]``: cost of label ``a`` at ``edges[e, 0]`` and ``b`` at ``edges[e, 1]``.
    constant : float
        Energy offset (order-0 factors of a file); not seen by the solver.
    n_labels : int array (n,)
        Labels per node (``L`` for all unless a file says otherwise).
    grid_shape : (H, W) or None
        Macro grid when built from candidates (node ``n = j * W + i`` for element (i, j)).
    """

    unary: np.ndarray
    edges: np.ndarray
    pairwise: np.ndarray
    constant: float = 0.0
    n_labels: np.ndarray | None = None
    grid_shape: tuple | None = None
    info: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.unary, self.edges, self.pairwise = validate_mrf(self.unary, self.edges, self.pairwise, name="MRFModel")
        n, n_labels = self.unary.shape
        if self.n_labels is None:
            self.n_labels = np.full(n, n_labels, np.int64)
        self.n_labels = np.asarray(self.n_labels, np.int64)
        if self.n_labels.shape != (n,) or self.n_labels.min(initial=1) < 1 or self.n_labels.max(initial=1) > n_labels:
            raise InvalidValueError(f"MRFModel: n_labels must be integers in [1, {n_labels}] of shape ({n},), "
                                    f"got {describe(self.n_labels)}")

    def __iter__(self):
        """Unpacks as ``unary, edges, pairwise`` (the arguments of `solve_mrf`)."""
        return iter((self.unary, self.edges, self.pairwise))

    @property
    def n_nodes(self) -> int:
        return self.unary.shape[0]

    @property
    def n_edges(self) -> int:
        return self.edges.shape[0]

    def energy(self, labels) -> float:
        """Energy of a labelling (n,), constant included."""
        x = np.asarray(labels)
        if x.shape != (self.n_nodes,) or not np.issubdtype(x.dtype, np.integer) or np.any(x < 0) or np.any(x >= self.n_labels):
            raise InvalidValueError(f"MRFModel.energy: labels must be integers below n_labels of shape ({self.n_nodes},), "
                                    f"got {describe(labels)}")
        e = self.edges
        return float(self.constant + self.unary[np.arange(self.n_nodes), x].sum()
                     + self.pairwise[np.arange(self.n_edges), x[e[:, 0]], x[e[:, 1]]].sum())

    def solve(self, **kwargs) -> MRFResult:
        """`solve_mrf` on this model; ``energy`` and ``lower_bound`` include ``constant``."""
        res = solve_mrf(self.unary, self.edges, self.pairwise, **kwargs)
        res.energy += self.constant
        res.lower_bound += self.constant
        for key in ("energy", "bound", "best_bound"):
            res.history[key] = res.history[key] + self.constant
        return res

    def to_pgmpy(self, values: str = "potential"):
        """The model as a pgmpy ``DiscreteMarkovNetwork`` with variables ``0 .. n-1``.

        ``values="potential"``: factors hold ``exp(-(cost - min cost of the factor))`` (Gibbs
        potentials up to a constant, what pgmpy's probabilistic queries expect).
        ``values="log"``: factors hold log-potentials ``max cost - cost + 1 >= 1`` per factor (what
        pgmpy's ``Mplp`` maximizes as a sum; the shift keeps every factor positive, which Mplp's
        best-assignment bookkeeping needs, and changes the energy by a constant only; forbidden
        entries get -1e9).
        One unary factor per node (added first: Mplp reads a node's first factor as its unary).
        """
        from pgmpy.factors.discrete import DiscreteFactor
        from pgmpy.models import DiscreteMarkovNetwork

        if values not in ("potential", "log"):
            raise InvalidValueError(f"MRFModel.to_pgmpy: values must be 'potential' or 'log', got {values!r}")

        def convert(cost):
            finite = cost[np.isfinite(cost)]
            if values == "potential":
                return np.exp(-(cost - finite.min()))
            return np.where(np.isfinite(cost), finite.max() - cost + 1.0, -1e9)  # forbidden: a prohibitive log-potential

        e, p = canonical_edges(self.edges, self.pairwise)
        net = DiscreteMarkovNetwork()
        net.add_nodes_from(range(self.n_nodes))
        net.add_edges_from([tuple(pair) for pair in e.tolist()])
        factors = []
        for i in range(self.n_nodes):
            k = int(self.n_labels[i])
            factors.append(DiscreteFactor([i], [k], convert(self.unary[i, :k])))
        for (a, b), table in zip(e.tolist(), p):
            ka, kb = int(self.n_labels[a]), int(self.n_labels[b])
            factors.append(DiscreteFactor([a, b], [ka, kb], convert(table[:ka, :kb]).ravel()))
        net.add_factors(*factors)
        return net


def as_model(model_or_unary, edges=None, pairwise=None) -> MRFModel:
    """An `MRFModel` from a model or from the three arrays."""
    if isinstance(model_or_unary, MRFModel):
        return model_or_unary
    return MRFModel(model_or_unary, edges, pairwise)


def mplp_map(model: MRFModel, **kwargs) -> np.ndarray:
    """MAP labelling (n,) by pgmpy's ``Mplp`` (keyword arguments go to ``Mplp.map_query``)."""
    from pgmpy.inference import Mplp

    net = model.to_pgmpy(values="log")
    assignment = Mplp(net).map_query(**kwargs)
    if len(assignment) != model.n_nodes:
        raise InvalidValueError(f"mplp_map: pgmpy's Mplp returned {len(assignment)} of {model.n_nodes} labels")
    return np.array([int(assignment[i]) for i in range(model.n_nodes)], np.int64)
