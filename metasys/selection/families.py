"""Metamaterial families: property gradations (VAE paper Eq. 7) and families found on a latent graph (Sec. 4.3).

A gradation is a curve ``t -> p(t)`` in the property space (C11, C12, C22, C33), ``t`` in [0, 1].
The macro optimizer's family mode (`metasys.optimize_properties` with ``family=``) uses one
variable ``t`` per element, so the equality constraint ``tau`` of paper Eq. 8 holds by construction.

A *family* is a sequence of database cells that follows a gradation in property space while its
shapes change gradually (paper Fig. 12-13). `find_families` builds the graph of Sec. 4.3:

1. collect the database cells within ``delta`` of the gradation curve (Euclidean distance in
   property units to the curve, sampled densely and measured to the polyline);
2. sort them by C11 (the sequence H);
3. link each cell to its ``k`` = 5 nearest cells of higher rank, nearest in the latent space, the
   edge weight being their latent distance (``link="rank"``: the next ``k`` cells of H instead);
4. add a source joined to the first ``N`` = 50 cells and a destination joined from the last ``N``
   (weight 0), take the Dijkstra shortest path, delete its cells and repeat for the next family.

Choice of ``delta``
-------------------
The paper gives no value. The default ``delta = 0.03`` (2.3 % of the solid C11 = 1.31596; the same
radius as the candidate tolerance of `metasys.selection.candidates`) selects 1,716 of the 107k shipped
cells for the Eq. 7 gradation; at 0.013 (1 %) only 312 remain, most of them near the solid end, and
the families get longer jumps in C11 (up to 44 % of C11_M between consecutive members).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidTypeError, InvalidValueError, describe

DEFAULT_DELTA = 0.03


@dataclass(frozen=True)
class Gradation:
    """Property gradation of paper Eq. 7, parametrized by ``t`` in [0, 1].

    ``C11 = C11_M * (c11_min + t * (c11_max - c11_min))`` (fractions of the solid ``C11_M``), and

    - ``C22 = C11``,
    - ``C12 = [(1 - nu_M) (1 - C11 / C11_M)^4 + nu_M] C11``,
    - ``C33 = 0.25 C11^3 - 0.65 C11^2 + 0.6775 C11``.

    ``c11_min`` is kept above zero so that every element stays positive definite.
    """

    nu_M: float = 0.49
    C11_M: float = 1.31596
    c11_min: float = 0.02
    c11_max: float = 1.0

    def __post_init__(self):
        if not 0.0 < self.C11_M:
            raise InvalidValueError(f"Gradation.C11_M: expected a positive value, got {self.C11_M!r}")
        if not -1.0 < self.nu_M < 1.0:
            raise InvalidValueError(f"Gradation.nu_M: expected a value in (-1, 1), got {self.nu_M!r}")
        if not 0.0 < self.c11_min < self.c11_max <= 1.0:
            raise InvalidValueError(f"Gradation: expected 0 < c11_min < c11_max <= 1, got {self.c11_min!r}, {self.c11_max!r}")

    def _c11(self, t):
        t = np.asarray(t, dtype=float)
        return self.C11_M * (self.c11_min + t * (self.c11_max - self.c11_min))

    def __call__(self, t) -> np.ndarray:
        """Properties (..., 4) at positions ``t`` (...)."""
        c = self._c11(t)
        f = (1.0 - self.nu_M) * (1.0 - c / self.C11_M) ** 4 + self.nu_M
        return np.stack([c, f * c, c, 0.25 * c**3 - 0.65 * c**2 + 0.6775 * c], axis=-1)

    def derivative(self, t) -> np.ndarray:
        """dp / dt (..., 4) at positions ``t`` (...)."""
        c = self._c11(t)
        dc = self.C11_M * (self.c11_max - self.c11_min)
        s = 1.0 - c / self.C11_M
        f = (1.0 - self.nu_M) * s**4 + self.nu_M
        df = -4.0 * (1.0 - self.nu_M) * s**3 / self.C11_M
        dp_dc = np.stack([np.ones_like(c), f + c * df, np.ones_like(c), 0.75 * c**2 - 1.3 * c + 0.6775], axis=-1)
        return dp_dc * dc


def paper_gradation(nu_M: float = 0.49, C11_M: float = 1.31596, c11_min: float = 0.02, c11_max: float = 1.0) -> Gradation:
    """The gradation of paper Eq. 7 for a base material with Poisson's ratio ``nu_M`` and solid ``C11_M``."""
    return Gradation(float(nu_M), float(C11_M), float(c11_min), float(c11_max))


# =========================================================================== the gradation curve
def gradation_samples(gradation, n: int = 2001) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``t`` (n,) evenly spaced in [0, 1] and the properties ``gradation(t)`` (n, 4).

    ``gradation`` is any callable ``t -> (4,)``; vectorized ones (``(n,) -> (n, 4)``, like
    `Gradation`) are called once.
    """
    if not callable(gradation):
        raise InvalidTypeError(f"gradation: expected a callable t -> property vector (4,), got {describe(gradation)}")
    t = np.linspace(0.0, 1.0, int(n))
    try:
        p = np.asarray(gradation(t), dtype=np.float64)
    except Exception:  # a scalar-only callable: fall back to one call per position
        p = None
    if p is None or p.shape != (len(t), 4):
        try:
            p = np.array([np.asarray(gradation(float(x)), dtype=np.float64) for x in t])
        except (TypeError, ValueError) as exc:
            raise InvalidValueError(f"gradation: calling it with t in [0, 1] failed ({exc})") from None
        if p.shape != (len(t), 4):
            raise InvalidValueError(f"gradation: expected a property vector (4,) per t, got {describe(p[0])}")
    if not np.isfinite(p).all():
        raise InvalidValueError("gradation: returned non-finite properties for some t in [0, 1]")
    return t, p


def distance_to_curve(properties, gradation, n_samples: int = 2001) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance (property units) from property vectors to a gradation curve, and the nearest ``t``.

    The curve is the polyline through ``n_samples`` points; the distance is measured to the segments
    next to the nearest sample point (exact for a polyline whose sampling is finer than its curvature).

    Parameters
    ----------
    properties : array (..., 4)
    gradation : callable t -> (4,)

    Returns
    -------
    distance : array (...)
    t : array (...)
        Position on the curve of the nearest point, in [0, 1].
    """
    from sklearn.neighbors import NearestNeighbors

    p = np.asarray(properties, dtype=np.float64)
    if p.shape[-1:] != (4,):
        raise InvalidValueError(f"properties: expected property vectors (..., 4), got {describe(properties)}")
    t, curve = gradation_samples(gradation, n_samples)
    flat = p.reshape(-1, 4)
    if not len(flat):
        return np.zeros(p.shape[:-1]), np.zeros(p.shape[:-1])
    j = NearestNeighbors(n_neighbors=1).fit(curve).kneighbors(flat, return_distance=False)[:, 0]
    best_d = np.full(len(flat), np.inf)
    best_t = np.zeros(len(flat))
    for a_idx in (np.maximum(j - 1, 0), j):                  # the segments before and after the nearest sample
        b_idx = np.minimum(a_idx + 1, len(t) - 1)
        a, b = curve[a_idx], curve[b_idx]
        ab = b - a
        den = np.einsum("ij,ij->i", ab, ab)
        u = np.clip(np.einsum("ij,ij->i", flat - a, ab) / np.where(den > 0, den, 1.0), 0.0, 1.0)
        d = np.linalg.norm(flat - (a + u[:, None] * ab), axis=1)
        better = d < best_d
        best_d[better] = d[better]
        best_t[better] = (t[a_idx] + u * (t[b_idx] - t[a_idx]))[better]
    return best_d.reshape(p.shape[:-1]), best_t.reshape(p.shape[:-1])


# =========================================================================== families
@dataclass(eq=False)
class Family:
    """A metamaterial family: cells ordered by C11 along a gradation (paper Fig. 12b).

    Attributes
    ----------
    indices : int array (n,)
        Database indices in order (-1 for members decoded by `interpolate`).
    cells : bool array (n, 50, 50)
    properties : array (n, 4)
        Homogenized (C11, C12, C22, C33).
    z : float32 array (n, latent_dim)
        The latent path.
    t : array (n,)
        Position of each member's nearest point on the gradation curve.
    distance : array (n,)
        Euclidean distance of each member's properties to the gradation curve (property units).
    """

    indices: np.ndarray
    cells: np.ndarray
    properties: np.ndarray
    z: np.ndarray
    t: np.ndarray
    distance: np.ndarray
    gradation: object = field(default=None, repr=False, compare=False)
    model: object = field(default=None, repr=False, compare=False)
    material: object = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        c11 = self.properties[:, 0]
        return (f"Family(n={len(self)}, C11 {c11.min():.4g}..{c11.max():.4g}, max distance to the gradation "
                f"{self.distance.max():.3g})")

    # ------------------------------------------------------------ the latent path
    def path_length(self) -> float:
        """Length of the latent path (sum of the latent distances between consecutive members)."""
        return float(np.linalg.norm(np.diff(self.z.astype(np.float64), axis=0), axis=1).sum())

    def latent_at(self, s) -> np.ndarray:
        """Codes (..., d) at arc-length fractions ``s`` (...) of the latent path; outside [0, 1] the end segments continue."""
        z = self.z.astype(np.float64)
        s = np.asarray(s, dtype=np.float64)
        if len(z) == 1:
            return np.broadcast_to(z[0], (*s.shape, z.shape[1])).astype(np.float32)
        seg = np.linalg.norm(np.diff(z, axis=0), axis=1)
        cum = np.concatenate([[0.0], np.cumsum(seg)])
        # Coincident members (zero-length segments) would make the arc length stall: fall back to index spacing.
        x = cum / cum[-1] if cum[-1] > 0 and np.all(seg > 0) else np.linspace(0.0, 1.0, len(z))
        i = np.clip(np.searchsorted(x, s, side="right") - 1, 0, len(z) - 2)
        u = (s - x[i]) / (x[i + 1] - x[i])
        return (z[i] + u[..., None] * (z[i + 1] - z[i])).astype(np.float32)

    def interpolate(self, n: int = 10, extrapolate: float = 0.0, model=None) -> Family:
        """New members decoded from ``n`` codes evenly spaced along the latent path (paper Fig. 13b).

        Parameters
        ----------
        n : int
            Number of new members.
        extrapolate : float
            Extend the path by this fraction of its length beyond both ends (0: between the first
            and the last member only). The end segments are continued in a straight line.
        model : LatentModel, optional
            Decoder (default: the model the family was found with).

        Returns
        -------
        Family
            Members with ``indices`` -1, cells from ``model.to_cells`` and properties homogenized
            with `metasys.homogenize` (the database material).
        """
        from ..fem import homogenize
        from ..fem.element import properties_of
        from ..material import Material

        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InvalidValueError(f"interpolate: n must be a positive integer, got {n!r}")
        e = float(extrapolate)
        if not 0.0 <= e <= 1.0:
            raise InvalidValueError(f"interpolate: extrapolate must lie in [0, 1] (a fraction of the path), got {extrapolate!r}")
        model = model if model is not None else self.model
        if model is None:
            raise InvalidValueError("interpolate: no model to decode with; pass model=")
        s = np.linspace(-e, 1.0 + e, int(n)) if n > 1 else np.array([0.5])
        z = self.latent_at(s)
        cells = np.asarray(model.to_cells(z), bool).reshape(len(z), *self.cells.shape[1:])
        material = self.material if self.material is not None else Material()
        props = properties_of(homogenize(cells, material))
        dist, t = distance_to_curve(props, self.gradation) if self.gradation is not None else (np.full(len(z), np.nan),) * 2
        return Family(indices=np.full(len(z), -1, np.int64), cells=cells, properties=props, z=z, t=t, distance=dist,
                      gradation=self.gradation, model=model, material=material)

    # ------------------------------------------------------------ cells for a graded design
    def _c11_target(self, t) -> np.ndarray:
        if self.gradation is None:
            raise InvalidValueError("this family has no gradation; positions t cannot be mapped to properties")
        t = np.asarray(t, dtype=np.float64)
        if not np.isfinite(t).all():
            raise InvalidValueError("t: expected finite positions in [0, 1]")
        t_samples, curve = gradation_samples(self.gradation, 2001)
        return np.interp(np.clip(t, 0.0, 1.0), t_samples, curve[:, 0])

    def index_at(self, t) -> np.ndarray:
        """Member (position in this family, int array (...)) whose C11 is nearest to the gradation's C11 at ``t`` (...)."""
        c = self._c11_target(t)
        return np.abs(self.properties[:, 0][None, :] - c.reshape(-1, 1)).argmin(axis=1).reshape(c.shape)

    def properties_at(self, t) -> np.ndarray:
        """Properties (..., 4) of the members `index_at` picks for positions ``t`` (...)."""
        return self.properties[self.index_at(t)]

    def z_at(self, t) -> np.ndarray:
        """Latent code (..., d) for position ``t``: member codes interpolated linearly in C11 (clamped at the ends)."""
        c = self._c11_target(t).reshape(-1)
        c11 = np.maximum.accumulate(self.properties[:, 0])      # non-decreasing by construction; guard anyway
        z = np.stack([np.interp(c, c11, self.z[:, j]) for j in range(self.z.shape[1])], axis=-1)
        return z.reshape(*np.shape(t), -1).astype(np.float32)

    def cell_at(self, t, decode: bool = False, model=None) -> np.ndarray:
        """Cells (..., 50, 50) of this family for gradation positions ``t`` (...) in [0, 1].

        ``decode=False``: the member nearest in C11 (a database cell; homogenized properties known).
        ``decode=True``: the cell decoded from `z_at` (a continuous family, paper Sec. 5 "directly
        generate the corresponding microstructure by interpolating in the latent space").
        """
        if not decode:
            return self.cells[self.index_at(t)]
        model = model if model is not None else self.model
        if model is None:
            raise InvalidValueError("cell_at(decode=True): no model to decode with; pass model=")
        z = self.z_at(t)
        cells = np.asarray(model.to_cells(z.reshape(-1, z.shape[-1])), bool)
        return cells.reshape(*np.shape(t), *self.cells.shape[1:])


@dataclass(eq=False)
class FamilyGraph:
    """The directed graph of paper Sec. 4.3 on the cells near a gradation (Fig. 12a).

    Nodes ``0..n-1`` are the selected cells in rank order (ascending C11), plus ``"source"`` and
    ``"destination"``; edge attribute ``weight`` is the latent distance (0 on source/destination edges).

    Attributes
    ----------
    indices : int array (n,)
        Database indices of the nodes, in rank order.
    properties : array (n, 4)
    z : array (n, d)
    distance, t : array (n,)
        Distance to the gradation curve and position of the nearest curve point.
    graph : networkx.DiGraph
    """

    indices: np.ndarray
    properties: np.ndarray
    z: np.ndarray
    distance: np.ndarray
    t: np.ndarray
    graph: object = field(repr=False)
    delta: float = 0.0
    gradation: object = field(default=None, repr=False)
    database: object = field(default=None, repr=False)
    model: object = field(default=None, repr=False)

    def __repr__(self) -> str:
        return (f"FamilyGraph(nodes={len(self.indices)}, edges={self.graph.number_of_edges()}, delta={self.delta})")

    def paths(self, n_families: int = 5) -> list[np.ndarray]:
        """Up to ``n_families`` disjoint shortest source-destination paths (node ids, rank order); see `shortest_paths`."""
        return shortest_paths(self.graph, n_families)

    def families(self, n_families: int = 5) -> list[Family]:
        """The families of the first ``n_families`` disjoint shortest paths (fewer when the graph runs out of paths)."""
        out = []
        for nodes in self.paths(n_families):
            idx = self.indices[nodes]
            out.append(Family(indices=idx, cells=self.database.get_cells(idx), properties=self.properties[nodes],
                              z=self.z[nodes].astype(np.float32), t=self.t[nodes], distance=self.distance[nodes],
                              gradation=self.gradation, model=self.model, material=self.database.material))
        return out


def build_graph(z, k: int = 5, n_ends: int = 50, link: str = "latent"):
    """Directed graph of paper Sec. 4.3 over codes ``z`` (n, d) given in rank order.

    Node ``i`` links to its ``k`` nearest (latent Euclidean distance) nodes among ``i+1..n-1``
    (``link="latent"``), or to the next ``k`` nodes ``i+1..i+k`` (``link="rank"``); the weight is the
    latent distance. ``"source"`` links to nodes ``0..n_ends-1`` and nodes ``n-n_ends..n-1`` link to
    ``"destination"``, with weight 0.
    """
    import networkx as nx

    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2:
        raise InvalidValueError(f"z: expected latent codes (n, d), got {describe(z)}")
    if link not in ("latent", "rank"):
        raise InvalidValueError(f"link: expected 'latent' or 'rank', got {link!r}")
    n = len(z)
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    g.add_nodes_from(("source", "destination"))
    for i in range(n - 1):
        later = np.arange(i + 1, n)
        d = np.linalg.norm(z[later] - z[i], axis=1)
        if link == "latent":
            keep = np.argsort(d, kind="stable")[:k]
        else:
            keep = np.arange(min(k, len(later)))
        g.add_weighted_edges_from((i, int(later[j]), float(d[j])) for j in keep)
    m = min(n_ends, n)
    g.add_weighted_edges_from(("source", i, 0.0) for i in range(m))
    g.add_weighted_edges_from((i, "destination", 0.0) for i in range(n - m, n))
    return g


def shortest_paths(graph, n_paths: int) -> list[np.ndarray]:
    """Successive Dijkstra shortest ``"source"`` -> ``"destination"`` paths, deleting each path's nodes before the next.

    Returns the inner node ids of each path (source and destination dropped); fewer than ``n_paths``
    when no path is left. ``graph`` is not modified.
    """
    import networkx as nx

    g = graph.copy()
    out = []
    for _ in range(int(n_paths)):
        try:
            path = nx.dijkstra_path(g, "source", "destination", weight="weight")
        except nx.NetworkXNoPath:
            break
        inner = path[1:-1]
        out.append(np.asarray(inner, dtype=np.int64))
        g.remove_nodes_from(inner)
    return out


def family_graph(gradation, *, delta: float = DEFAULT_DELTA, k: int = 5, n_ends: int = 50, database=None, model=None,
                 codes=None, link: str = "latent", n_samples: int = 2001) -> FamilyGraph:
    """Select the cells within ``delta`` of the gradation curve and build the graph of paper Sec. 4.3.

    See `find_families` for the arguments (all but ``gradation`` keyword-only); ``n_samples`` points of
    the curve are used for the distances.
    """
    for name, value, low in (("k", k, 1), ("n_ends", n_ends, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InvalidValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    try:
        delta = float(delta)
    except (TypeError, ValueError):
        raise InvalidTypeError(f"delta: expected a number, got {describe(delta)}") from None
    if not delta > 0 or not np.isfinite(delta):
        raise InvalidValueError(f"delta: expected a positive distance in property units, got {delta!r}")
    gradation_samples(gradation, 3)                             # fail early on a bad gradation
    from .candidates import database_and_codes

    database, model, codes = database_and_codes(database, model, codes)
    props = np.asarray(database.properties, np.float64)
    dist, t = distance_to_curve(props, gradation, n_samples)
    sel = np.flatnonzero(dist <= delta)
    if len(sel) < 2:
        raise InvalidValueError(f"delta: only {len(sel)} database cells lie within {delta} of the gradation curve; "
                                f"increase delta (the nearest cell is {dist.min():.4g} away)")
    order = sel[np.lexsort((sel, props[sel, 0]))]               # the sequence H: ascending C11, ties by index
    graph = build_graph(codes[order], k=int(k), n_ends=int(n_ends), link=link)
    return FamilyGraph(indices=order, properties=props[order], z=codes[order], distance=dist[order], t=t[order], graph=graph,
                       delta=delta, gradation=gradation, database=database, model=model)


def find_families(gradation, n_families: int = 5, *, delta: float = DEFAULT_DELTA, k: int = 5, n_ends: int = 50,
                  database=None, model=None, codes=None, link: str = "latent", seed: int | None = None) -> list[Family]:
    """Disjoint metamaterial families following a property gradation (paper Sec. 4.3, Fig. 12-13).

    ``gradation`` and ``n_families`` may be given by position; every other argument is keyword-only.

    Parameters
    ----------
    gradation : callable
        ``t -> (C11, C12, C22, C33)`` for ``t`` in [0, 1], e.g. `paper_gradation` (Eq. 7).
    n_families : int
        Families to find (successive shortest paths, each deleting its cells from the graph).
    delta : float
        Cells whose properties lie within this Euclidean distance (property units) of the curve take
        part (default 0.03; see the module notes).
    k : int
        Out-edges per cell: its ``k`` latent-nearest cells of higher C11 rank (paper: 5).
    n_ends : int
        The source joins the ``n_ends`` lowest-C11 cells, the highest ``n_ends`` join the destination (paper: 50).
    database, model
        As in `metasys.selection.candidates.diverse_candidates`; the model supplies the latent codes
        and decodes interpolated members.
    codes : array (N, d), optional
        Latent codes of the database instead of ``model.latent_codes()``.
    link : ``"latent"`` (default) or ``"rank"``
        Reading of "k-nearest microstructures with higher ranks": nearest in the latent space, or the
        next k in the C11 order.
    seed : ignored
        Accepted for a uniform signature across design stages; the search is deterministic.

    Returns
    -------
    list of Family
        Ordered by path length (the first is the shortest). Fewer than ``n_families`` (with a
        ``UserWarning``) when the graph runs out of source-destination paths.
    """
    import warnings

    if isinstance(n_families, bool) or not isinstance(n_families, (int, np.integer)) or n_families < 1:
        raise InvalidValueError(f"n_families: expected a positive integer, got {n_families!r}")
    fg = family_graph(gradation, delta=delta, k=k, n_ends=n_ends, database=database, model=model, codes=codes, link=link)
    fams = fg.families(int(n_families))
    if len(fams) < n_families:
        warnings.warn(f"find_families: only {len(fams)} of {n_families} disjoint families exist in the graph of "
                      f"{len(fg.indices)} cells within delta={fg.delta}; increase delta or k", UserWarning, stacklevel=2)
    return fams


def family_candidates(families, targets, *, source: str = "both", tolerance: float | None = None, levels: int = 256,
                      model=None):
    """Candidates for the elements of a graded design from families (MRF labels, family mode).

    For each target and each family: the member nearest to the target (``||p - target||_inf``)
    and/or the cell decoded from the family's latent code at the target's C11 (`Family.z_at`,
    paper Sec. 5: "generate the corresponding microstructure by interpolating in the latent space").

    Parameters
    ----------
    families : list of Family
    targets : array (..., 4)
        Element properties (e.g. ``MacroResult.properties`` (H, W, 4) of a family-mode optimization).
    source : ``"members"``, ``"decoded"`` or ``"both"`` (default)
        Labels per element: one per family, one per family, or two per family (member, then decoded).
    tolerance : float, optional
        For ``covered`` (default `metasys.selection.candidates.DEFAULT_TOLERANCE`).
    levels : int
        Decoded cells are made for target C11 values rounded to this many levels over each family's
        C11 range (so a 50 x 50 grid decodes and homogenizes at most ``levels`` cells per family).
    model : LatentModel, optional
        Decoder (default: the families' model).

    Returns
    -------
    Candidates
        ``k`` = labels per element as above; ``indices`` -1 for decoded cells; ``covered`` where at
        least one label is within ``tolerance`` (a family offers one cell per position, not ``k``
        interchangeable ones, so the database-mode rule "k cells within tolerance" would flag almost
        every element); ``n_within`` counts the labels within it; ``method`` ``"family"``.
    """
    from ..fem import homogenize
    from ..fem.element import properties_of
    from ..material import Material
    from .candidates import DEFAULT_TOLERANCE, Candidates, _targets_in

    if source not in ("members", "decoded", "both"):
        raise InvalidValueError(f"source: expected 'members', 'decoded' or 'both', got {source!r}")
    fams = list(families)
    if not fams or not all(isinstance(f, Family) and len(f) for f in fams):
        raise InvalidTypeError(f"families: expected a non-empty list of non-empty Family, got {describe(families)}")
    tol = DEFAULT_TOLERANCE if tolerance is None else float(tolerance)
    q, lead = _targets_in(targets)
    m = len(q)
    labels = []                                        # (indices (m,), cells (m, n, n), props (m, 4), z (m, d)) per label
    for fam in fams:
        if source in ("members", "both"):
            err = np.abs(fam.properties[None, :, :] - q[:, None, :]).max(axis=2)
            pos = err.argmin(axis=1)
            labels.append((fam.indices[pos], fam.cells[pos], fam.properties[pos], fam.z[pos]))
        if source in ("decoded", "both"):
            dec = model if model is not None else fam.model
            if dec is None:
                raise InvalidValueError("family_candidates: decoded cells need a model; pass model=")
            lo, hi = fam.properties[0, 0], fam.properties[-1, 0]
            c = np.clip(q[:, 0], lo, hi)
            level = np.rint((c - lo) / max(hi - lo, 1e-12) * (levels - 1)).astype(np.int64) if hi > lo else np.zeros(m, np.int64)
            used, inverse = np.unique(level, return_inverse=True)
            c_used = lo + used / max(levels - 1, 1) * (hi - lo)
            c11 = np.maximum.accumulate(fam.properties[:, 0])
            z = np.stack([np.interp(c_used, c11, fam.z[:, j]) for j in range(fam.z.shape[1])], axis=-1).astype(np.float32)
            cells = np.asarray(dec.to_cells(z), bool).reshape(len(z), *fam.cells.shape[1:])
            props = properties_of(homogenize(cells, fam.material if fam.material is not None else Material()))
            labels.append((np.full(m, -1, np.int64), cells[inverse], props[inverse], z[inverse]))
    indices = np.stack([lab[0] for lab in labels], axis=1)
    cells = np.stack([lab[1] for lab in labels], axis=1)
    props = np.stack([lab[2] for lab in labels], axis=1)
    z = np.stack([lab[3] for lab in labels], axis=1).astype(np.float32)
    errors = np.abs(props - q[:, None, :]).max(axis=2)
    k = indices.shape[1]
    return Candidates(indices=indices.reshape(*lead, k), cells=cells.reshape(*lead, k, *cells.shape[2:]),
                      properties=props.reshape(*lead, k, 4), errors=errors.reshape(*lead, k),
                      covered=(errors <= tol).any(axis=1).reshape(lead), targets=q.reshape(*lead, 4),
                      z=z.reshape(*lead, k, -1), n_within=(errors <= tol).sum(axis=1).reshape(lead), tolerance=tol,
                      method="family")
