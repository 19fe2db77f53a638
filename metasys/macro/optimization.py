"""Macroscale property-distribution optimization with MMA (VAE paper Sec. 5.1, Eq. 8-15).

Two modes:

- **full database** (``family=None``): four variables per element, the properties
  (C11, C12, C22, C33) scaled to [0, 1] inside the database's box ``[min, max]`` (Eq. 11), with
  C12 clipped to ``+-0.999 sqrt(C11 C22)`` (`COUPLING_LIMIT`) so that every evaluated stiffness is
  positive definite (the box alone admits C12^2 > C11 C22: small C11, C22 with a large C12). The
  feasibility of every element (signed distance ``phi_e >= 0`` to the boundary of the database's
  property cloud) is aggregated into one constraint by the Heaviside projection integral (Eq. 11-12)::

      g = sum_e S(-phi_e) - 1 <= 0,   S(x) = (tanh(beta x) + 1) / 2

  which is paper's ``mean_e S(-phi_e) <= 1 / N_e`` multiplied by ``N_e`` (order one).
- **family** (``family=`` a gradation such as `metasys.selection.families.paper_gradation`, or an
  ordered array (K, 4) of property vectors): one variable ``t`` in [0, 1] per element, the position
  along the family, so the equality constraint ``tau`` of Eq. 8 holds by construction.

The objective is ``F = ||u[gamma] - u_t||^2 / ||u_t||^2`` (so the macro-level RRMSE is ``sqrt(F)``),
with adjoint sensitivities (Eq. 13-15, `metasys.fem.MacroModel.least_squares`). The problem is
solved by nlopt's MMA (``LD_MMA``, Svanberg's 2002 CCSA variant) in `mma_with_restarts`; it stops when
the maximal change of the variables is below ``tolerance`` (1e-3) or after ``max_iterations``
objective evaluations, the paper's rule. `optimize_properties` chooses its run settings from the problem
(`macro_settings`, `resolve_settings`) unless they are given.

Practical choices (measured on the standard problems):

- Strictly positive properties are scaled logarithmically between the database's minimum and
  maximum (displacements respond to stiffness ratios); box-only bridge after 500 evaluations:
  RRMSE 0.005 (log) against 0.019 (linear).
- nlopt's MMA shrinks its moving asymptotes and raises its conservativeness ``rho`` after the
  steep HPI constraint is violated, and then crawls (smiley, one MMA run: RRMSE 0.17 after 500
  evaluations; restarted every 150: 0.087 after 450, 0.003 after 900). MMA is therefore restarted from the current design
  every ``restart_every`` (100) evaluations, and the tolerance rule counts as met when a whole MMA
  run (up to ``restart_every`` evaluations) moves no variable by more than ``tolerance`` (stricter than
  one step; ``restart_every=None`` gives one MMA run with nlopt's per-iteration rule). Lowering ``rho_init``, rescaling
  the objective or constraint (0.01 .. 100) or CCSAQ did not help as much.
- The start matters (local optima): bridge from the median cell reaches RRMSE 0.046 after 500
  evaluations, from the most auxetic deep cell 0.013 (0.006 after 1000). ``start="multi"`` runs
  pilots from five diverse cells (`candidate_starts`) and continues the best with what is left of the
  budget; `macro_settings` gives small grids 1,000 evaluations per start and 5,000 in all, so every
  start runs to its end and only evaluations left by starts that converged early continue the best
  (bridge: 0.048, 0.010, 0.012, 0.0017, 0.045 from the five starts; 4,819 evaluations in all).
- Paths are sensitive to floating point: rounding-level changes (another machine, summation order in
  the assembly) move single runs between local optima (bridge multi-start best 0.0012 .. 0.0025,
  smiley single run from the median 0.04 .. 0.10 under such changes).
- C12 beyond the clipping bound does not depend on its variable; before every restart the variable is
  moved back onto the bound (`PropertyObjective.project`, same design), so MMA can move it again.
- Objective and constraint are of order one: ``F`` is relative to ``||u_t||^2`` and the HPI
  constraint is the paper's multiplied by ``N_e``. ``beta`` (200) is in units of the database's
  normalized signed distance: an element contributes ``S(-phi) < 1e-3`` once ``phi > 0.017``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..errors import InvalidValueError, describe
from ..fem.macro import MacroModel
from .problems import Problem

SMALL_GRID = 400  # elements: up to this size the macro stage affords a multi-start
COUPLING_LIMIT = 0.999  # database mode: |C12| <= COUPLING_LIMIT sqrt(C11 C22), so det C >= 0.002 C11 C22 > 0
POSITIVE_FLOOR = 1e-6  # database mode: C11, C22, C33 >= this times the database's maximum (stand-ins with values <= 0)


@dataclass
class MacroResult:
    """Result of `optimize_properties`.

    Attributes
    ----------
    properties : array (H, W, 4)
        Optimized properties; element (i, j) is ``properties[j, i]``.
    displacement : array (H + 1, W + 1, 2)
        Macro displacements of the optimized design.
    rrmse : float
        Macro-level ``||u[gamma] - u_t|| / ||u_t||``.
    history : dict of lists
        Per objective evaluation: ``objective`` (F), ``constraint`` (g; 0 in family mode), ``change``
        (max |dx| to the previous evaluation), ``rrmse``.
    feasible_fraction : float
        Fraction of elements with signed distance >= 0 (1 in family mode without a database).
    timings : dict
        Seconds: ``setup``, ``optimize``, ``total``.
    variables : array
        Final design variables: (H, W, 4) in [0, 1] (full mode) or the family positions t (H, W).
    signed_distance : array (H, W) or None
        Feasibility signed distance per element, where a database was given.
    mode : str
        ``"database"`` or ``"family"``.
    iterations : int
        Number of objective evaluations.
    status : str
        Why MMA stopped (``xtol``: maximal change below the tolerance; ``maxeval``: iteration limit).
    restarts : int
        How often MMA was restarted from the current design.
    """

    properties: np.ndarray
    displacement: np.ndarray
    rrmse: float
    history: dict
    feasible_fraction: float
    timings: dict
    variables: np.ndarray
    signed_distance: np.ndarray | None = None
    mode: str = "database"
    iterations: int = 0
    status: str = ""
    problem: str = field(default="", repr=False)
    restarts: int = 0


def rrmse(u, problem: Problem) -> float:
    """Macro-level RRMSE ``||u[gamma] - u_t|| / ||u_t||`` of displacements ``u`` ((H+1, W+1, 2) or dof vector)."""
    u = np.asarray(u, dtype=float).ravel()
    if u.shape != (problem.n_dofs,):
        raise InvalidValueError(f"rrmse: expected {problem.n_dofs} displacements for problem {problem.name!r}, got {describe(u)}")
    r = u[problem.target_dofs] - problem.target_values
    return float(np.linalg.norm(r) / np.linalg.norm(problem.target_values))


class _Polyline:
    """Piecewise-linear gradation through ordered property vectors (K, 4), t in [0, 1]."""

    def __init__(self, points):
        self.points = np.asarray(points, dtype=float)
        if self.points.ndim != 2 or self.points.shape[1] != 4 or len(self.points) < 2:
            raise InvalidValueError(f"family: expected a gradation or ordered property vectors (K >= 2, 4), "
                                    f"got {describe(points)}")

    def _locate(self, t):
        s = np.clip(np.asarray(t, dtype=float), 0.0, 1.0) * (len(self.points) - 1)
        k = np.minimum(np.floor(s).astype(int), len(self.points) - 2)
        return k, s - k

    def __call__(self, t):
        k, a = self._locate(t)
        return self.points[k] * (1 - a[..., None]) + self.points[k + 1] * a[..., None]

    def derivative(self, t):
        k, _ = self._locate(t)
        return (self.points[k + 1] - self.points[k]) * (len(self.points) - 1)


def heaviside(x, beta):
    """Smoothed Heaviside ``S(x) = (tanh(beta x) + 1) / 2`` (Eq. 12) and its derivative."""
    th = np.tanh(beta * np.asarray(x, dtype=float))
    return 0.5 * (th + 1.0), 0.5 * beta * (1.0 - th**2)


class PropertyObjective:
    """Objective and HPI constraint as functions of the (scaled) MMA variables, with gradients.

    Exposed for tests and custom optimizers. ``mode`` is ``"database"`` (x: (H*W*4,) in [0, 1]) or
    ``"family"`` (x: (H*W,) in [0, 1]).
    """

    def __init__(self, problem: Problem, database=None, family=None, beta: float = 200.0, weights=None, scaling: str = "log"):
        if not isinstance(problem, Problem):
            raise InvalidValueError(f"problem: expected a metasys.problems.Problem, got {describe(problem)}")
        self.problem = problem
        self.model = MacroModel(problem.width, problem.height, problem.conditions)
        self.shape = (problem.height, problem.width)
        self.n_elements = problem.width * problem.height
        self.database = database
        self.beta = float(beta)
        norm2 = float(problem.target_values @ problem.target_values)
        if norm2 <= 0:
            raise InvalidValueError(f"problem {problem.name!r}: target displacements are all zero; the RRMSE is undefined")
        self.weights = np.full(len(problem.target_dofs), 1.0 / norm2) if weights is None else np.asarray(weights, float) / norm2
        if family is not None:
            self.mode = "family"
            self.family = family if callable(family) and hasattr(family, "derivative") else _Polyline(family)
            self.n = self.n_elements
        else:
            if database is None:
                raise InvalidValueError("optimize_properties: give a database or a family")
            self.mode = "database"
            if scaling not in ("log", "linear"):
                raise InvalidValueError(f"scaling: expected 'log' or 'linear', got {scaling!r}")
            props = np.asarray(database.properties, dtype=float)
            if props.ndim != 2 or props.shape[1] != 4 or len(props) == 0:
                raise InvalidValueError(f"database.properties: expected an array (N, 4), got {describe(props)}")
            diagonal = [0, 2, 3]
            if np.any(props[:, diagonal].max(axis=0) <= 0):
                raise InvalidValueError(f"database.properties: expected positive C11, C22 and C33 (positive definite cells), "
                                        f"got maxima {props[:, diagonal].max(axis=0).tolist()}")
            # Physical iterates: C11, C22, C33 at least POSITIVE_FLOOR times their maximum (a database of homogenized
            # cells is above it anyway), and C12 clipped to +-COUPLING_LIMIT sqrt(C11 C22) in `properties`.
            bounded = props.copy()
            bounded[:, diagonal] = np.maximum(props[:, diagonal], POSITIVE_FLOOR * props[:, diagonal].max(axis=0))
            self.lower, self.upper = bounded.min(axis=0), bounded.max(axis=0)
            self.span = np.where(self.upper > self.lower, self.upper - self.lower, 1.0)
            # Logarithmic scaling for strictly positive properties: displacements respond to stiffness ratios.
            self.log = (props.min(axis=0) > 0) & (self.upper > self.lower) & (scaling == "log")
            self.log_span = np.log(np.where(self.log, self.upper / np.where(self.log, self.lower, 1.0), 1.0))
            self.n = 4 * self.n_elements

    def _coordinates(self, x) -> np.ndarray:
        """Properties (H, W, 4) of variables x before the clipping of C12 (database mode)."""
        x = np.asarray(x, dtype=float).reshape(*self.shape, 4)
        return np.where(self.log, self.lower * np.exp(x * self.log_span), self.lower + x * self.span)

    def properties(self, x) -> np.ndarray:
        """Properties (H, W, 4) of variables x."""
        x = np.asarray(x, dtype=float)
        if self.mode == "family":
            return self.family(x.reshape(self.shape))
        c = self._coordinates(x)
        p = c.copy()
        p[..., 1] = self._coupling(c)[0]
        return p

    @staticmethod
    def _coupling(c):
        """Clipped C12 of unclipped properties c, dC12/dc12 and k with dC12/dC11 = k sqrt(C22 / C11) / 2 (likewise C22)."""
        bound = COUPLING_LIMIT * np.sqrt(c[..., 0] * c[..., 2])
        below, above = c[..., 1] < -bound, c[..., 1] > bound
        c12 = np.where(below, -bound, np.where(above, bound, c[..., 1]))
        k = np.where(below, -COUPLING_LIMIT, np.where(above, COUPLING_LIMIT, 0.0))
        return c12, np.where(below | above, 0.0, 1.0), k

    def chain(self, grad_p, x) -> np.ndarray:
        """Gradient (n,) w.r.t. the variables x of a function with gradient ``grad_p`` (H, W, 4) w.r.t. the properties."""
        g = np.asarray(grad_p, dtype=float).reshape(*self.shape, 4)
        if self.mode == "family":
            return np.einsum("jiq,jiq->ji", g, self.family.derivative(np.asarray(x).reshape(self.shape))).ravel()
        c = self._coordinates(x)
        dc = np.where(self.log, c * self.log_span, self.span)  # d property / d variable, before the clipping of C12
        root = np.sqrt(c[..., 0] * c[..., 2])
        _, d12, k = self._coupling(c)
        out = np.empty_like(g)
        out[..., 0] = (g[..., 0] + g[..., 1] * 0.5 * k * root / c[..., 0]) * dc[..., 0]
        out[..., 1] = g[..., 1] * d12 * dc[..., 1]
        out[..., 2] = (g[..., 2] + g[..., 1] * 0.5 * k * root / c[..., 2]) * dc[..., 2]
        out[..., 3] = g[..., 3] * dc[..., 3]
        return out.ravel()

    def project(self, x) -> np.ndarray:
        """The same design with C12's variable moved back onto the clipping bound where it lies beyond (database mode).

        Beyond the bound C12 does not depend on its variable (zero gradient), so MMA would leave it there;
        `mma_with_restarts` projects before every restart. Identity in family mode.
        """
        x = np.array(x, dtype=float)
        if self.mode == "family":
            return x
        c = self._coordinates(x)
        clipped = self._coupling(c)[1] == 0
        if np.any(clipped):
            on_bound = self.variables(self.properties(x)).reshape(*self.shape, 4)[..., 1]
            x.reshape(*self.shape, 4)[..., 1][clipped] = on_bound[clipped]
        return x

    def variables(self, properties) -> np.ndarray:
        """Variables (n,) of properties (H, W, 4) in database mode (clipped to [0, 1])."""
        p = np.array(properties, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            lin = (p - self.lower) / self.span
            lg = np.log(np.maximum(p, 1e-300) / np.where(self.log, self.lower, 1.0)) / self.log_span
        return np.clip(np.nan_to_num(np.where(self.log, lg, lin)), 0.0, 1.0).ravel()

    def objective(self, x):
        """``F(x)``, ``dF/dx`` (n,) and the macro solution."""
        p = self.properties(x)
        value, grad_p, solution = self.model.least_squares(p, self.problem.target_dofs, self.problem.target_values, self.weights)
        return value, self.chain(grad_p, x), solution

    def signed_distance(self, properties) -> tuple[np.ndarray, np.ndarray]:
        """Signed distance (H*W,) and its gradient (H*W, 4) w.r.t. properties."""
        return self.database.feasibility(np.asarray(properties, float).reshape(-1, 4))

    def constraint(self, x):
        """HPI constraint ``g = sum_e S(-phi_e) - 1`` (<= 0 feasible) and ``dg/dx`` (database mode)."""
        p = self.properties(x)
        phi, dphi = self.signed_distance(p)
        s, ds = heaviside(-phi, self.beta)
        return float(s.sum() - 1.0), self.chain(-ds[:, None] * dphi, x)

    @property
    def constrained(self) -> bool:
        """Whether there is an inequality constraint (database mode)."""
        return self.mode == "database"

    def evaluate(self, x):
        """Objective and constraint at x in one call: ``(F, dF/dx, g, dg/dx)`` (``g = 0``, ``dg/dx = None`` in family mode)."""
        value, grad, _ = self.objective(x)
        if not self.constrained:
            return value, grad, 0.0, None
        cons, cons_grad = self.constraint(x)
        return value, grad, cons, cons_grad


def macro_settings(problem: Problem, family=None) -> dict:
    """Default `optimize_properties` settings for a problem.

    Database mode runs a multi-start: five diverse uniform starts (`candidate_starts`), the best kept.
    Small grids (at most `SMALL_GRID` elements) run each start for 1,000 evaluations (MMA restarted every
    300): the bridge's feasible set has local optima (from the five starts: macro RRMSE 0.039, 0.0076, 0.011,
    0.0018, 0.053), and which pilot looks best early is not a reliable guide. Larger grids run each start for
    300 evaluations (restarts every 100): a single run from the median cell is chaotic on the smiley (macro
    RRMSE 0.034 to 0.115 for starts perturbed by 1e-9 to 1e-5, 0.102 unperturbed), the multi-start reaches
    0.0009 in 1,500 evaluations (83 s CPU). Family mode keeps the paper's single run (500 evaluations).
    """
    if family is not None:
        return {}
    if problem.width * problem.height <= SMALL_GRID:
        return {"start": "multi", "pilot_iterations": 1000, "restart_every": 300, "max_iterations": 5000}
    return {"start": "multi", "pilot_iterations": 300, "restart_every": 100, "max_iterations": 1500}


def candidate_starts(database, margin: float = 0.04) -> np.ndarray:
    """Five diverse uniform starting designs (5, 4) for multi-start: database cells with signed distance > ``margin``.

    The median cell (nearest to the median properties), the most auxetic (lowest C12), the most
    anisotropic in y and in x (highest C22 / C11, C11 / C22) and the stiffest in shear relative to C11 + C22.
    """
    props = np.asarray(database.properties, float)
    phi, _ = database.feasibility(props)
    deep = props[phi > margin]
    if len(deep) == 0:
        deep = props[[int(np.argmax(phi))]]
    scale = np.where(np.ptp(deep, axis=0) > 0, np.ptp(deep, axis=0), 1.0)
    median = deep[np.argmin(np.linalg.norm((deep - np.median(props, axis=0)) / scale, axis=1))]
    ratio = deep[:, 2] / np.maximum(deep[:, 0], 1e-12)
    return np.stack([median, deep[np.argmin(deep[:, 1])], deep[np.argmax(ratio)], deep[np.argmin(ratio)],
                     deep[np.argmax(deep[:, 3] / np.maximum(deep[:, 0] + deep[:, 2], 1e-12))]])


GENERIC_SETTINGS = {"start": "median", "max_iterations": 500, "restart_every": 100, "pilot_iterations": 100}


def resolve_settings(problem: Problem, family=None, **given) -> dict:
    """The run settings `optimize_properties` uses: ``given`` where not ``"auto"``, else `macro_settings`, else generic.

    Keys ``start``, ``max_iterations``, ``restart_every``, ``pilot_iterations``; the generic values are a single
    run from the median cell (``start="median"``), 500 evaluations, restarts every 100, pilots of 100.
    ``start=None``, ``max_iterations=None`` and ``pilot_iterations=None`` also mean ``"auto"``
    (``restart_every=None`` means one MMA run without restarts).
    """
    unknown = set(given) - set(GENERIC_SETTINGS)
    if unknown:
        raise InvalidValueError(f"resolve_settings: unknown settings {sorted(unknown)}; expected {sorted(GENERIC_SETTINGS)}")

    def auto(key, value):
        return (isinstance(value, str) and value == "auto") or (value is None and key != "restart_every")

    explicit = {key: value for key, value in given.items() if not auto(key, value)}
    return {**GENERIC_SETTINGS, **macro_settings(problem, family), **explicit}


def _start(obj: PropertyObjective, start) -> list:
    """Initial variable vectors (one, or several for multi-start)."""
    if isinstance(start, str) and start == "median":
        start = None
    if obj.mode == "family":
        t = np.full(obj.shape, 0.5) if start is None else np.broadcast_to(np.asarray(start, float), obj.shape)
        if np.any((t < 0) | (t > 1)):
            raise InvalidValueError("start: family positions must lie in [0, 1]")
        return [t.ravel().copy()]
    if isinstance(start, str):
        if start != "multi":
            raise InvalidValueError(f"start: expected 'auto', 'median', 'multi' or properties (4,), (K, 4) or (H, W, 4), "
                                    f"got {start!r}")
        start = candidate_starts(obj.database)
    if start is not None and np.ndim(start) == 2:
        cand = np.asarray(start, float)
        if cand.shape[1] != 4:
            raise InvalidValueError(f"start: expected candidate properties (K, 4), got {describe(start)}")
        return [obj.variables(np.broadcast_to(c, (*obj.shape, 4))) for c in cand]
    if start is None:
        props = np.asarray(obj.database.properties, float)
        p0 = np.median(props, axis=0)
        if obj.database.feasibility(p0)[0] <= 0:
            phi, _ = obj.database.feasibility(props)
            p0 = props[int(np.argmax(phi))]
        start = p0
    try:
        p = np.broadcast_to(np.asarray(start, float), (*obj.shape, 4))
    except ValueError:
        raise InvalidValueError(f"start: expected properties (4,), (K, 4) or {(*obj.shape, 4)}, got {describe(start)}") from None
    return [obj.variables(p)]

FEASIBLE = 1e-9  # a point counts as feasible (best-point bookkeeping) when g <= FEASIBLE


class MMARun(NamedTuple):
    """Result of `mma_with_restarts` (a named tuple: ``x, status, restarts, history, best, best_value = run``).

    Attributes
    ----------
    x : array (n,)
        Final design variables (nlopt's result of the last MMA run).
    status : str
        ``xtol`` (a whole MMA run moved no variable by more than the tolerance, or nlopt's own rule without
        restarts), ``maxeval`` (budget spent), ``roundoff-limited`` or another nlopt code name.
    restarts : int
        How often MMA was restarted from the current design.
    history : dict of lists
        Per evaluation: ``objective`` (F), ``constraint`` (g), ``change`` (max |dx| to the previous evaluation
        of this run; 0 for the first), ``rrmse`` (sqrt F).
    best : array (n,) or None
        Best evaluated point with ``g <= 1e-9``; None if no evaluated point was feasible.
    best_value : float
        Its objective F (inf without one).
    """

    x: np.ndarray
    status: str
    restarts: int
    history: dict
    best: np.ndarray | None
    best_value: float


def mma_with_restarts(objective, x0, *, budget: int, tolerance: float = 1e-3, restart_every: int | None = 100,
                      algorithm: str = "LD_MMA", objective_scale: float = 1.0, constraint_scale: float = 1.0,
                      rho_init: float | None = None, inner_maxeval: int | None = None, callback=None) -> MMARun:
    """MMA from ``x0`` in the box [0, 1]^n for at most ``budget`` evaluations, restarted every ``restart_every``.

    Each MMA run starts fresh (nlopt's asymptotes and ``rho`` reset) from the previous run's result; the
    tolerance rule counts as met when a whole run moves no variable by more than ``tolerance`` (see the
    module docstring); ``restart_every=None`` runs one MMA with nlopt's per-iteration rule ``xtol_abs = tolerance``.

    Parameters
    ----------
    objective : PropertyObjective or any object with ``n`` (number of variables), ``constrained`` (bool) and
        ``evaluate(x) -> (F, dF/dx, g, dg/dx)``
        Evaluated once per MMA evaluation: nlopt asks for the objective and then the constraint at the same
        point, and the constraint is taken from that evaluation.
    x0 : array (n,)
        Start, in [0, 1].
    budget : int
        Maximal number of evaluations.
    tolerance, restart_every, algorithm, objective_scale, constraint_scale, rho_init, inner_maxeval
        As in `optimize_properties`.
    callback : callable, optional
        ``callback(k, x, F, g)`` after the k-th evaluation of this run (k from 1).

    Returns
    -------
    MMARun
    """
    import nlopt

    if int(budget) != budget or budget < 1:
        raise InvalidValueError(f"budget: expected a positive integer, got {budget!r}")
    if not tolerance > 0:
        raise InvalidValueError(f"tolerance: expected a positive number, got {tolerance!r}")
    if restart_every is not None and (int(restart_every) != restart_every or restart_every < 1):
        raise InvalidValueError(f"restart_every: expected a positive integer or None, got {restart_every!r}")
    n = int(objective.n)
    history = {"objective": [], "constraint": [], "change": [], "rrmse": []}
    last = {"x": None, "constraint": None}  # the latest evaluation: nlopt's constraint call reuses it
    best = {"x": None, "value": np.inf}

    def f(x, grad):
        value, dvalue, cons, dcons = objective.evaluate(x)
        if grad.size:
            grad[:] = objective_scale * dvalue
        change = float(np.max(np.abs(x - last["x"]))) if last["x"] is not None else 0.0
        last["x"], last["constraint"] = x.copy(), (cons, dcons)
        history["objective"].append(value)
        history["constraint"].append(cons)
        history["change"].append(change)
        history["rrmse"].append(float(np.sqrt(value)))
        if value < best["value"] and cons <= FEASIBLE:
            best["x"], best["value"] = x.copy(), value
        if callback is not None:
            callback(len(history["objective"]), x, value, cons)
        return objective_scale * value

    def c(x, grad):
        if last["x"] is not None and np.array_equal(x, last["x"]):
            cons, dcons = last["constraint"]
        else:  # not expected from nlopt's MMA / CCSAQ: evaluate here (not counted as an evaluation)
            cons, dcons = objective.evaluate(x)[2:]
        if grad.size:
            grad[:] = constraint_scale * dcons
        return constraint_scale * cons

    def make():
        opt = nlopt.opt(getattr(nlopt, algorithm), n)
        opt.set_lower_bounds(np.zeros(n))
        opt.set_upper_bounds(np.ones(n))
        opt.set_min_objective(f)
        if objective.constrained:
            opt.add_inequality_constraint(c, 1e-8)
        # With restarts, nlopt's own rule only ends runs that move far less than the tolerance; the
        # tolerance rule is applied to whole runs below.
        opt.set_xtol_abs(float(tolerance) * (1e-2 if restart_every else 1.0))
        if rho_init is not None:
            opt.set_param("rho_init", float(rho_init))
        if inner_maxeval is not None:
            opt.set_param("inner_maxeval", int(inner_maxeval))
        return opt

    names = {nlopt.XTOL_REACHED: "xtol", nlopt.MAXEVAL_REACHED: "maxeval", nlopt.FTOL_REACHED: "ftol",
             nlopt.SUCCESS: "success", nlopt.STOPVAL_REACHED: "stopval"}
    x = np.array(x0, dtype=float)
    status, restarts, budget = "unknown", 0, int(budget)
    chunk = budget if not restart_every else int(restart_every)
    while len(history["objective"]) < budget:
        # A fresh MMA (asymptotes and rho reset) from the current design; see the module docstring.
        if hasattr(objective, "project"):
            x = np.asarray(objective.project(x), dtype=float)
        opt = make()
        x_before = x.copy()
        opt.set_maxeval(int(min(chunk, budget - len(history["objective"]))))
        try:
            x = np.asarray(opt.optimize(x), dtype=float)
            result = opt.last_optimize_result()
            status = names.get(result, str(result))
        except nlopt.RoundoffLimited:
            x = best["x"] if best["x"] is not None else last["x"]
            status, result = "roundoff-limited", None
        moved = float(np.max(np.abs(x - x_before)))
        if not restart_every or result is None or moved < tolerance:
            if restart_every and result is not None:
                status = "xtol"
            break  # converged: a whole MMA run moved no variable by more than the tolerance
        if len(history["objective"]) < budget:
            restarts += 1
    if len(history["objective"]) >= budget:
        status = "maxeval"
    return MMARun(x, status, restarts, history, best["x"], float(best["value"]))


def optimize_properties(problem: Problem, database=None, family=None, *, start="auto", max_iterations: int | str = "auto",
                        restart_every: int | str | None = "auto", pilot_iterations: int | str = "auto",
                        tolerance: float = 1e-3, beta: float = 200.0, scaling: str = "log", constraint_scale: float = 1.0,
                        objective_scale: float = 1.0, rho_init: float | None = None, inner_maxeval: int | None = None,
                        algorithm: str = "LD_MMA", verbose: bool = False, callback=None) -> MacroResult:
    """Optimize the per-element properties of a macro grid so its displacements match the problem's target.

    Called with the problem alone it uses the settings `macro_settings` chooses for it: on small grids in
    database mode (at most `SMALL_GRID` elements, e.g. the bridge) a multi-start from the five
    `candidate_starts`, each start run for 1,000 evaluations, the best kept; otherwise the paper's single run
    from the median cell (500 evaluations). Any of ``start``, ``max_iterations``, ``restart_every`` and
    ``pilot_iterations`` given explicitly replaces that setting alone (`resolve_settings`).

    Parameters
    ----------
    problem : Problem
        Grid, prescribed displacements and targets (e.g. `metasys.problems.bridge`).
    database : Database, optional
        Full-database mode: properties bounded by the database's box, feasibility through its
        signed-distance field (HPI constraint). Default: `metasys.Database.default` when no
        ``family`` is given. Any object with ``properties`` (N, 4) and ``feasibility(p)`` works.
    family : Gradation or array (K, 4), optional
        Family mode: one position ``t`` in [0, 1] per element along this gradation (e.g.
        `metasys.selection.families.paper_gradation`) or along the polyline through ordered properties.
    start : "auto", "median", "multi" or an array
        Initial design: properties (4,), (K, 4) or (H, W, 4) in database mode, positions (scalar or (H, W)) in
        family mode. ``"auto"`` (default; None too): from `macro_settings`, else ``"median"``.
        ``"median"``: the database's median properties (if feasible, else its deepest cell) or t = 0.5.
        Several candidates (K, 4) (or ``"multi"``: `candidate_starts`) start a multi-start: each runs
        ``pilot_iterations`` evaluations from its uniform design, and what is left of ``max_iterations``
        continues the best one (the best feasible design seen is kept). Pilot evaluations count towards
        ``max_iterations`` and appear in the history.
    max_iterations : int or "auto"
        Maximal number of objective evaluations, all starts together ("auto": `macro_settings`, else 500).
    restart_every : int, None or "auto"
        Restart MMA from the current design after this many evaluations ("auto": `macro_settings`, else 100);
        None runs one MMA.
    pilot_iterations : int or "auto"
        Multi-start: evaluations per start ("auto": `macro_settings`, else 100).
    tolerance : float
        Stop when a whole MMA run (or, without restarts, one MMA iteration) changes no scaled variable by
        more than this (1e-3).
    beta : float
        Sharpness of the Heaviside projection (Eq. 12) in 1 / signed-distance units (normalized properties).
    scaling : "log" or "linear"
        Database mode: strictly positive properties (C11, C22, C33) are scaled logarithmically
        between the database's minimum and maximum (default), C12 linearly; "linear" scales all linearly.
    constraint_scale, objective_scale : float
        Factors on g and F as seen by MMA (nlopt's MMA is sensitive to absolute scaling).
    rho_init, inner_maxeval : optional
        nlopt MMA parameters.
    algorithm : str
        nlopt algorithm name (``"LD_MMA"``; ``"LD_CCSAQ"`` also handles the constraint).
    verbose : bool
        Print one line per evaluation (objective, constraint, change) to stderr.
    callback : callable, optional
        ``callback(iteration, x, objective, constraint)`` after each evaluation (iterations numbered over all
        starts; ``PropertyObjective.properties(x)`` gives the evaluated properties).

    Returns
    -------
    MacroResult
    """
    t0 = time.perf_counter()
    if family is None and database is None:
        from ..database import Database

        database = Database.default()
    if not isinstance(problem, Problem):
        raise InvalidValueError(f"problem: expected a metasys.problems.Problem, got {describe(problem)}")
    settings = resolve_settings(problem, family, start=start, max_iterations=max_iterations, restart_every=restart_every,
                                pilot_iterations=pilot_iterations)
    start, max_iterations = settings["start"], settings["max_iterations"]
    restart_every, pilot_iterations = settings["restart_every"], settings["pilot_iterations"]
    for name, value in (("max_iterations", max_iterations), ("pilot_iterations", pilot_iterations)):
        if isinstance(value, bool) or not isinstance(value, int | float | np.number) or int(value) != value or value < 1:
            raise InvalidValueError(f"{name}: expected a positive integer or 'auto', got {value!r}")
    max_iterations, pilot_iterations = int(max_iterations), int(pilot_iterations)
    if not tolerance > 0:
        raise InvalidValueError(f"tolerance: expected a positive number, got {tolerance!r}")
    obj = PropertyObjective(problem, database, family, beta=beta, scaling=scaling)
    starts = _start(obj, start)
    mma = dict(tolerance=tolerance, restart_every=restart_every, algorithm=algorithm, objective_scale=objective_scale,
               constraint_scale=constraint_scale, rho_init=rho_init, inner_maxeval=inner_maxeval)
    history = {"objective": [], "constraint": [], "change": [], "rrmse": []}

    def run(x, budget):
        """One `mma_with_restarts` whose evaluations extend ``history`` and are numbered from its end."""
        offset, previous = len(history["objective"]), [None]

        def report(k, x, value, cons):
            if verbose:
                change = float(np.max(np.abs(x - previous[0]))) if previous[0] is not None else 0.0
                previous[0] = x.copy()
                print(f"{problem.name} it {offset + k:4d}  F {value:.4e}  rrmse {np.sqrt(value):.4f}  g {cons:+.3e}  "
                      f"change {change:.3e}", file=sys.stderr, flush=True)
            if callback is not None:
                callback(offset + k, x, value, cons)

        result = mma_with_restarts(obj, x, budget=budget, callback=report, **mma)
        for key, values in result.history.items():
            history[key].extend(values)
        return result

    t1 = time.perf_counter()
    restarts, best, best_value = 0, None, np.inf
    if len(starts) > 1:
        # Multi-start: each candidate runs ``pilot_iterations`` evaluations, then the best one continues.
        pilots = []
        for xk in starts:
            r = run(xk, min(int(pilot_iterations), max(1, max_iterations - len(history["objective"]))))
            restarts += r.restarts
            pilots.append((r.best_value if r.best is not None else obj.objective(r.x)[0], r.x, r.best))
            if len(history["objective"]) >= max_iterations:
                break
        best_value, x, best = min(pilots, key=lambda item: item[0])
    else:
        x = starts[0]
    budget = max_iterations - len(history["objective"])
    status = "maxeval"
    if budget > 0:
        r = run(x, budget)
        x, status = r.x, r.status
        restarts += r.restarts
        if r.best is not None and r.best_value < best_value:
            best, best_value = r.best, r.best_value
    t2 = time.perf_counter()
    value, _, cons, _ = obj.evaluate(x)
    if best is not None and (cons > FEASIBLE or best_value < value):
        x = best  # the last iterate violates the constraint or is worse than the best feasible one seen: return that
    p = obj.properties(x)
    solution = obj.model.solve(p)
    phi = None
    if database is not None:
        phi = obj.signed_distance(p)[0].reshape(obj.shape)
    feasible = 1.0 if phi is None else float(np.mean(phi >= 0))
    variables = np.asarray(x).reshape(obj.shape) if obj.mode == "family" else np.asarray(x).reshape(*obj.shape, 4)
    t3 = time.perf_counter()
    return MacroResult(properties=p, displacement=solution.displacement, rrmse=rrmse(solution.vector, problem), history=history,
                       feasible_fraction=feasible, timings={"setup": t1 - t0, "optimize": t2 - t1, "total": t3 - t0},
                       variables=variables, signed_distance=phi, mode=obj.mode, iterations=len(history["objective"]),
                       status=status, problem=problem.name, restarts=restarts)
