"""Diverse candidate sets for target properties (VAE paper Sec. 4.2, Fig. 11).

For a target property vector ``p_t = (C11, C12, C22, C33)``, `diverse_candidates` takes the
database cells whose properties lie within ``tolerance`` of the target, clusters their latent codes
with k-means (scikit-learn) on the first two principal components of the database's latent codes,
and keeps the best-matching cell of each cluster. The result is ``k`` cells that all match the
target about equally well but look different, so that the MRF assembly (paper Sec. 5, Eq. 16-17)
has several ways to connect neighbouring cells. `greedy_candidates` is the baseline of Fig. 11:
the ``k`` closest cells, which tend to be near-copies of each other.

Distances in property space are ``||p - p_t||_inf`` in property units (the node weight of paper
Eq. 16), so "within tolerance" and ``errors <= tolerance`` are the same statement.

Choice of the tolerance
-----------------------
The paper does not state a radius; it reports that both the clustered and the greedy sets have a
property MSE below 0.01 (Fig. 11). The default ``tolerance = 0.03`` (2.3 % of the solid C11 of the
database material, 1.31596) guarantees an MSE <= 0.03**2 = 9e-4, well inside the paper's figure,
while giving pools of about 100 cells for a typical target of the shipped 107k-cell database
(median over targets drawn from the database cloud; about 20 cells at 0.02, about 1 at 0.01), which is
enough for ten clusters to differ. Raise it for sparse regions of the property space, lower it when
property accuracy matters more than shape diversity.
"""

from __future__ import annotations

import functools
import warnings
import weakref
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidTypeError, InvalidValueError, describe

DEFAULT_TOLERANCE = 0.03
DEFAULT_MAX_POOL = 300


@dataclass(eq=False)
class Candidates:
    """Candidate cells for each target; leading dimensions ``...`` are those of the targets.

    Attributes
    ----------
    indices : int array (..., k)
        Database indices, -1 for cells supplied by the generator (or decoded, method ``"family"``).
        Sorted by ``errors`` (best first), except for ``"family"`` (one or two labels per family, in order).
    cells : bool array (..., k, 50, 50)
        The candidate cells (row 0 at the bottom).
    properties : array (..., k, 4)
        Their homogenized (C11, C12, C22, C33).
    errors : array (..., k)
        ``||properties - targets||_inf`` (paper Eq. 16).
    covered : bool array (...)
        True where the database alone holds at least ``k`` cells within ``tolerance`` of the target.
        Uncovered targets still get ``k`` candidates: cells from the generator (when given) and the
        nearest database cells, some of them farther than ``tolerance``.
    targets : array (..., 4)
        The target property vectors.
    z : float32 array (..., k, latent_dim)
        Latent codes of the candidates (database codes; generated cells are encoded).
    n_within : int array (...)
        Number of database cells within ``tolerance`` (counted up to ``max_pool``).
    tolerance : float
    method : str
        ``"kmeans"``, ``"greedy"`` or ``"family"`` (`metasys.selection.families.family_candidates`).
    """

    indices: np.ndarray
    cells: np.ndarray
    properties: np.ndarray
    errors: np.ndarray
    covered: np.ndarray
    targets: np.ndarray
    z: np.ndarray
    n_within: np.ndarray
    tolerance: float
    method: str
    timings: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def k(self) -> int:
        return int(self.indices.shape[-1])

    @property
    def generated(self) -> np.ndarray:
        """bool (..., k): candidates supplied by the generator (not in the database)."""
        return self.indices < 0

    def diversity(self) -> np.ndarray:
        """Mean pairwise latent distance of each candidate set, shape (...)."""
        return diversity(self.z)

    def mse(self) -> np.ndarray:
        """Mean squared property error of each candidate set, shape (...) (the figure of paper Fig. 11)."""
        return np.mean((self.properties - self.targets[..., None, :]) ** 2, axis=(-2, -1))

    def __repr__(self) -> str:
        shape = self.indices.shape[:-1]
        return (f"Candidates(method={self.method!r}, targets={shape}, k={self.k}, tolerance={self.tolerance}, "
                f"covered={int(np.sum(self.covered))}/{int(np.prod(shape))}, generated={int(np.sum(self.generated))})")


def diversity(z) -> np.ndarray:
    """Mean pairwise Euclidean distance of latent codes ``z`` (..., k, d) over the k(k-1)/2 pairs, shape (...)."""
    a = np.asarray(z, dtype=np.float64)
    if a.ndim < 2:
        raise InvalidValueError(f"diversity: expected latent codes (..., k, d), got {describe(z)}")
    k = a.shape[-2]
    if k < 2:
        return np.zeros(a.shape[:-2])
    d = np.linalg.norm(a[..., :, None, :] - a[..., None, :, :], axis=-1)
    return d.sum(axis=(-2, -1)) / (k * (k - 1))


# --------------------------------------------------------------------------- inputs
def _targets_in(target) -> tuple[np.ndarray, tuple]:
    try:
        t = np.asarray(target, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidTypeError(f"target: expected property vectors (4,), (M, 4) or (H, W, 4), got {describe(target)}") from None
    if t.ndim not in (1, 2, 3) or t.shape[-1] != 4 or t.size == 0:
        raise InvalidValueError(f"target: expected property vectors (4,), (M, 4) or (H, W, 4), got {describe(target)}")
    if not np.isfinite(t).all():
        raise InvalidValueError("target: expected finite property values, got NaN or inf")
    return t.reshape(-1, 4), t.shape[:-1]


@functools.lru_cache(maxsize=1)
def _default_model():
    """The shipped latent model, loaded once per process (TensorFlow start-up takes ~10 s)."""
    from ..latent.api import LatentModel

    return LatentModel.default()


def database_and_codes(database, model, codes):
    """Resolve the (database, model, latent codes) triple shared by candidates and families.

    Defaults: the shipped model and its training database. ``codes`` (N, d), when given, replace
    ``model.latent_codes()``; otherwise the model must describe ``database`` (same fingerprint).
    """
    if database is None and model is None:
        model = _default_model()
    if database is None:
        database = model.database
    if len(database) == 0:
        raise InvalidValueError(f"database: expected a non-empty database, got {database!r}")
    if codes is None:
        if model is None:
            from ..latent.api import LatentModel

            model = _default_model() if database.fingerprint == _default_fingerprint() else LatentModel.default(database=database)
        elif model.database is not database and getattr(model.database, "fingerprint", None) != getattr(
                database, "fingerprint", 0):
            raise InvalidValueError(f"model: its latent codes describe {model.database!r}, not the given database {database!r}; "
                                    "load the model with LatentModel.load(directory, database=...) or pass codes=")
        codes = model.latent_codes()
    codes = np.asarray(codes, dtype=np.float32)
    if codes.ndim != 2 or codes.shape[0] != len(database):
        raise InvalidValueError(f"codes: expected latent codes ({len(database)}, d) of the database, got {describe(codes)}")
    return database, model, codes


def _default_fingerprint():
    import json

    from ..latent.api import default_model_dir

    try:
        return json.loads((default_model_dir() / "model.json").read_text())["database_fingerprint"]
    except (OSError, ValueError, KeyError):
        return None


def _resolve(database, model, codes, space="pca"):
    """The database, the model, its latent codes (N, d), their 2-D PCA coordinates (N, 2) and PCA transform."""
    from sklearn.decomposition import PCA

    given = codes is not None
    database, model, codes = database_and_codes(database, model, codes)
    if space == "latent":
        return database, model, codes, codes.astype(np.float64), lambda z: np.asarray(z, np.float64)
    if not given and hasattr(model, "pca"):
        pca = model.pca(2)
        coords, transform = pca.coords, pca.transform
    else:
        p = PCA(n_components=min(2, codes.shape[1])).fit(codes)
        coords, transform = p.transform(codes), p.transform
    return database, model, codes, np.asarray(coords, np.float64), transform


def _int_arg(name, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidTypeError(f"{name}: expected an integer, got {describe(value)}")
    if value < low or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise InvalidValueError(f"{name}: expected an integer in {bound}, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- selection
def _kmeans_pick(coords, errors, k, seed, n_init, max_iter):
    """Positions (k,) into the pool: the lowest-error member of each of k k-means clusters of ``coords``.

    Clusters left empty (fewer distinct points than k) are made up by the best remaining pool members,
    so the set always has k distinct members.
    """
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        # "Number of distinct clusters found smaller than n_clusters" (duplicate points): handled below.
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=seed).fit_predict(coords)
    order = np.lexsort((np.arange(len(errors)), errors))          # best first, ties by pool position
    _, first = np.unique(labels[order], return_index=True)         # first occurrence = best of each cluster
    picked = order[np.sort(first)]
    if len(picked) < k:
        rest = order[~np.isin(order, picked)]
        picked = np.concatenate([picked, rest[: k - len(picked)]])
    return picked


def _select(pool_err, pool_xy, k, tol, method, seed, n_init, max_iter):
    """Choose k of a target's pool (sorted by error): positions into the pool, best first."""
    within = int(np.count_nonzero(pool_err <= tol))
    if method == "greedy" or within <= k:
        # Nothing to cluster: the within-tolerance cells, then the nearest others, all sorted by error.
        return np.arange(k)
    picked = _kmeans_pick(pool_xy[:within], pool_err[:within], k, seed, n_init, max_iter)
    return picked[np.lexsort((picked, pool_err[picked]))]


def diverse_candidates(target, k: int = 10, database=None, model=None, *, tolerance: float = DEFAULT_TOLERANCE,
                       method: str = "kmeans", codes=None, max_pool: int = DEFAULT_MAX_POOL, n_init: int = 1,
                       max_iter: int = 100, generator=None, n_generate: int | None = None, seed: int = 0,
                       space: str = "pca", load_cells: bool = True) -> Candidates:
    """A small, diverse set of ``k`` database cells for each target property vector (paper Sec. 4.2).

    For each target: the database cells with ``||p - target||_inf <= tolerance`` form the pool (at
    most the ``max_pool`` nearest); k-means (scikit-learn) splits the pool's latent codes, projected
    on the first two principal components of the database's latent codes (``model.pca(2)``), into
    ``k`` clusters; the lowest-error cell of each cluster is a candidate. With ``method="greedy"``
    the candidates are the ``k`` nearest cells (the baseline of Fig. 11).

    Parameters
    ----------
    target : array (4,), (M, 4) or (H, W, 4)
        Target (C11, C12, C22, C33); the result's leading dimensions follow these.
    k : int
        Candidates per target (the MRF's labels per node).
    database : Database, optional
        Defaults to ``model.database`` (the shipped database when both are None).
    model : LatentModel, optional
        Supplies the latent codes (``latent_codes()``), their PCA (``pca(2)``) and, for generated cells,
        ``encode``. Defaults to ``LatentModel.default()``.
    tolerance : float
        Radius of the pool in property units (inf-norm). See the module notes for the default 0.03.
    method : ``"kmeans"`` (default) or ``"greedy"``
    codes : array (N, d), optional
        Latent codes of ``database`` to use instead of ``model.latent_codes()`` (no model needed
        unless a generator is used); their PCA is computed here.
    max_pool : int
        At most this many nearest cells per target are clustered (k-means cost; counts in
        ``n_within`` saturate at it).
    n_init, max_iter : int
        k-means restarts and iterations (``sklearn.cluster.KMeans``); one k-means++ start converges in
        a few iterations on 2-D points, so more restarts buy little.
    generator : callable, optional
        ``generator(targets, n, seed) -> cells`` with ``targets`` (m, 4) the uncovered targets, ``n`` the
        cells wanted per target and ``seed`` an int; returns binary cells (m, n, 50, 50). They are
        homogenized with `metasys.homogenize` (the database material) and encoded with
        ``model.encode``; a target's distinct generated cells within ``tolerance`` join its pool (indices
        -1), ranked with the database cells by error (and clustered with them when more than ``k`` are
        within tolerance).
    n_generate : int, optional
        ``n`` passed to the generator; default: the largest shortfall ``k - n_within`` among the
        uncovered targets, enough to complete every set if the generated cells match.
    seed : int
        k-means seed (and the generator's seed).
    space : ``"pca"`` (default) or ``"latent"``
        Where k-means runs: the first two principal components of the latent codes (the paper), or
        the full latent space (more diverse in full latent distance; see ``benchmarks/candidates.py``).
    load_cells : bool
        Read the cells from the database (set False to get indices and properties only; ``cells`` is
        then an empty (..., k, 0, 0) array).

    Returns
    -------
    Candidates
        ``indices`` (..., k), ``cells`` (..., k, 50, 50), ``properties`` (..., k, 4), ``errors``
        (..., k), ``covered`` (...), ``targets`` (..., 4), ``z`` (..., k, d), sorted best first.

    Examples
    --------
    >>> c = diverse_candidates([0.3, 0.1, 0.3, 0.08], k=10)            # doctest: +SKIP
    >>> c.indices.shape, c.errors.max() <= c.tolerance, c.diversity()  # doctest: +SKIP
    """
    import time

    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    targets, lead = _targets_in(target)
    if method not in ("kmeans", "greedy"):
        raise InvalidValueError(f"method: expected 'kmeans' or 'greedy', got {method!r}")
    if space not in ("pca", "latent"):
        raise InvalidValueError(f"space: expected 'pca' or 'latent', got {space!r}")
    try:
        tol = float(tolerance)
    except (TypeError, ValueError):
        raise InvalidTypeError(f"tolerance: expected a number, got {describe(tolerance)}") from None
    if not tol > 0 or not np.isfinite(tol):
        raise InvalidValueError(f"tolerance: expected a positive finite number, got {tolerance!r}")
    k = _int_arg("k", k, 1)
    if generator is not None and not callable(generator):
        raise InvalidTypeError(f"generator: expected a callable generator(targets, n, seed) -> cells, got {describe(generator)}")
    database, model, codes, coords, transform = _resolve(database, model, codes, space)
    n_db = len(database)
    if k > n_db:
        raise InvalidValueError(f"k: expected at most the {n_db} cells of the database, got {k}")
    max_pool = _int_arg("max_pool", max_pool, k)
    pool_n = min(max_pool, n_db)
    m = len(targets)
    t_res = time.perf_counter()

    # One KD-tree query for all targets: the inf-norm in property units is exactly the error of
    # Eq. 16, so the returned distances are the candidates' errors and the pools come sorted.
    props = np.asarray(database.properties, np.float64)
    nn = _tree(database, props)
    dist, idx = nn.kneighbors(targets, n_neighbors=pool_n)
    n_within = np.count_nonzero(dist <= tol, axis=1)
    covered = n_within >= k
    t_nn = time.perf_counter()

    # Generated cells for uncovered targets join those targets' pools.
    gen = {}
    if generator is not None and not covered.all():
        gen = _generate(generator, targets, np.flatnonzero(~covered), k, n_within, n_generate, seed, database, model,
                        transform, tol)
    t_gen = time.perf_counter()

    sel_idx = np.empty((m, k), np.int64)
    sel_err = np.empty((m, k))
    sel_props = np.empty((m, k, 4))
    sel_z = np.empty((m, k, codes.shape[1]), np.float32)
    gen_cells = {}
    # Many tiny k-means problems: OpenMP threads cost far more than they save here (~10x), and the
    # caller's other work on the shared cores is left alone.
    with threadpool_limits(limits=1):
        for i in range(m):
            p_idx, p_err = idx[i], dist[i]
            if i in gen:
                g = gen[i]
                # Merge the generated cells into the sorted pool; -1 - j marks generated cell j.
                p_idx = np.concatenate([p_idx, -1 - np.arange(len(g["err"]))])
                p_err = np.concatenate([p_err, g["err"]])
                order = np.argsort(p_err, kind="stable")
                p_idx, p_err = p_idx[order], p_err[order]
                xy = np.where(p_idx[:, None] >= 0, coords[np.maximum(p_idx, 0)], g["xy"][np.maximum(-1 - p_idx, 0)])
            else:
                xy = coords[p_idx]
            pos = _select(p_err, xy, k, tol, method, seed, n_init, max_iter)
            chosen = p_idx[pos]
            sel_err[i] = p_err[pos]
            db_mask = chosen >= 0
            sel_idx[i] = np.where(db_mask, chosen, -1)
            sel_props[i, db_mask] = props[chosen[db_mask]]
            sel_z[i, db_mask] = codes[chosen[db_mask]]
            if not db_mask.all():
                j = -1 - chosen[~db_mask]
                sel_props[i, ~db_mask] = gen[i]["props"][j]
                sel_z[i, ~db_mask] = gen[i]["z"][j]
                gen_cells[i] = (np.flatnonzero(~db_mask), gen[i]["cells"][j])
    t_sel = time.perf_counter()

    res = database.resolution
    if load_cells:
        cells = np.zeros((m, k, *res), bool)
        ok = sel_idx >= 0
        cells[ok] = _read_cells(database, sel_idx[ok])
        for i, (slots, c) in gen_cells.items():
            cells[i, slots] = c
    else:
        cells = np.zeros((m, k, 0, 0), bool)
    t_cells = time.perf_counter()
    timings = {"resolve": t_res - t0, "neighbours": t_nn - t_res, "generate": t_gen - t_nn, "select": t_sel - t_gen,
               "cells": t_cells - t_sel, "total": t_cells - t0}
    return Candidates(indices=sel_idx.reshape(*lead, k), cells=cells.reshape(*lead, k, *cells.shape[2:]),
                      properties=sel_props.reshape(*lead, k, 4), errors=sel_err.reshape(*lead, k),
                      covered=covered.reshape(lead), targets=targets.reshape(*lead, 4), z=sel_z.reshape(*lead, k, -1),
                      n_within=n_within.reshape(lead), tolerance=tol, method=method, timings=timings)


def greedy_candidates(target, k: int = 10, database=None, model=None, **kwargs) -> Candidates:
    """The ``k`` database cells nearest to each target (inf-norm): the baseline of paper Fig. 11.

    Same arguments and result as `diverse_candidates` with ``method="greedy"``.
    """
    return diverse_candidates(target, k, database, model, method="greedy", **kwargs)


def _read_cells(database, indices, span: int = 4096):
    """``database.get_cells(indices)``, asked for one window of ``span`` consecutive rows at a time.

    ``get_cells`` reads a contiguous block when the requested indices are dense enough and otherwise
    falls back to HDF5 point selection, which is ~50x slower on the chunked, compressed cells (11 s
    instead of 0.5 s for 25,000 scattered cells). Windows of ``span`` rows always take the block path.
    """
    indices = np.asarray(indices, np.int64)
    out = np.empty((len(indices), *database.resolution), bool)
    if not len(indices):
        return out
    window = indices // span
    order = np.argsort(window, kind="stable")
    bounds = np.flatnonzero(np.diff(window[order])) + 1
    for part in np.split(order, bounds):
        out[part] = database.get_cells(indices[part])
    return out


_TREES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tree(database, props):
    """KD-tree (inf-norm) over the database properties, cached per database object while its size is unchanged."""
    from sklearn.neighbors import NearestNeighbors

    try:
        cached = _TREES.get(database)
    except TypeError:  # not weak-referenceable: rebuild each call (0.1 s for 100k cells)
        cached = None
    if cached is not None and cached[0] == len(props):
        return cached[1]
    nn = NearestNeighbors(metric="chebyshev", algorithm="kd_tree").fit(props)
    try:
        _TREES[database] = (len(props), nn)
    except TypeError:
        pass
    return nn


def _generate(generator, targets, uncovered, k, n_within, n_generate, seed, database, model, transform, tol):
    """Call the generator once for all uncovered targets; homogenize and encode what it returns.

    A target keeps the distinct generated cells within ``tol`` of it: the generator is there to complete
    the within-tolerance set. (A budgeted generator serves a whole group of targets with a few designs;
    one such cell outside the tolerance of most of the group, offered at many neighbouring elements, is
    compatible with itself and the MRF spreads it: smiley full-scale RRMSE 0.218 instead of 0.200.)
    """
    from ..fem import homogenize
    from ..fem.element import properties_of

    n = int(k - n_within[uncovered].min()) if n_generate is None else _int_arg("n_generate", n_generate, 1)
    tg = targets[uncovered]
    out = generator(tg.copy(), n, int(seed))
    arr = np.asarray(out)
    res = tuple(database.resolution)
    if arr.shape != (len(tg), n, *res):
        raise InvalidValueError(f"generator: expected cells of shape ({len(tg)}, {n}, {res[0]}, {res[1]}) for "
                                f"{len(tg)} uncovered targets and n={n}, got {describe(out)}")
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise InvalidValueError("generator: expected binary cells (bool or 0/1), got other values")
        arr = arr.astype(bool)
    if model is None or not hasattr(model, "encode"):
        raise InvalidValueError("generator: generated cells need latent codes; pass a model with an encode method")
    # Generators may repeat a design for several targets or slots (a bounded budget): each distinct cell is
    # homogenized and encoded once, and a target keeps one copy of it (copies would be labels with no choice).
    flat = arr.reshape(len(tg) * n, -1)
    distinct, first, inverse = np.unique(np.packbits(flat, axis=1), axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(len(tg), n)
    cells = flat[first].reshape(-1, *res)
    props = properties_of(homogenize(cells, database.material))
    z = np.asarray(model.encode(cells), np.float32)
    xy = np.asarray(transform(z), np.float64)
    out = {}
    for j, i in enumerate(uncovered):
        u = inverse[j][np.sort(np.unique(inverse[j], return_index=True)[1])]
        err = np.abs(props[u] - tg[j]).max(axis=-1)
        u, err = u[err <= tol], err[err <= tol]
        if len(u):
            out[int(i)] = {"cells": cells[u], "props": props[u], "z": z[u], "xy": xy[u], "err": err}
    return out
