"""Bayesian-optimization baseline over the original parameters (the loss-guided paper, Table 2a and appendix E).

As the paper, with the library it used (``bayesian-optimization``, Nogueira 2014): a Gaussian process over the
8 parameters theta = (E_m, nu_m, rho_m, E_p, nu_p, rho_p, r_p, f_p), each scaled to [0, 1] (materials through
the normalized box, r_p in [0.075, 0.2], f_p in [0.05, 0.5]), upper-confidence-bound acquisition with
kappa = 1, maximizing -J. Every suggested point is projected to the nearest table materials and evaluated
by K_theta (10 re-sampled microstructures, as the evaluation of the guided designs); the value is registered
at the suggested and at the projected point. After ``iterations`` evaluations, each of the ``n`` designs starts
from a uniformly random point and maximizes the surrogate's mean (L-BFGS-B, no exploration term); the
result is projected and evaluated the same way. The paper ran 1000 iterations per target; the default here
is 100 (2-core time).
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import SolverError
from .backproject import Backprojection, k_theta
from .materials import MaterialTable

NAMES = ("E_m", "nu_m", "rho_m", "E_p", "nu_p", "rho_p", "r_p", "f_p")
RADIUS = (0.075, 0.2)
FRACTION = (0.05, 0.5)
KAPPA = 1.0
PIXELS = 64 * 64


def decode(u, table: MaterialTable):
    """Unit-cube point (8,) -> (matrix index, particle index, radius, volume fraction), materials projected."""
    u = np.clip(np.asarray(u, dtype=float), 0.0, 1.0)
    idx, _ = table.nearest(np.stack([2.0 * u[0:3] - 1.0, 2.0 * u[3:6] - 1.0]), normalized=True)
    radius = RADIUS[0] + u[6] * (RADIUS[1] - RADIUS[0])
    fraction = FRACTION[0] + u[7] * (FRACTION[1] - FRACTION[0])
    return int(idx[0]), int(idx[1]), float(radius), float(fraction)


def encode(matrix: int, particle: int, radius: float, fraction: float, table: MaterialTable) -> np.ndarray:
    """Inverse of `decode` for a projected design (the point registered besides the suggested one)."""
    m, p = table.normalized[matrix], table.normalized[particle]
    return np.concatenate([(m + 1.0) / 2.0, (p + 1.0) / 2.0, [(radius - RADIUS[0]) / (RADIUS[1] - RADIUS[0]),
                                                                  (fraction - FRACTION[0]) / (FRACTION[1] - FRACTION[0])]])


def design_k_theta(matrix: int, particle: int, radius: float, fraction: float, table: MaterialTable, *, n: int = 10,
                   seed: int = 0) -> float:
    """K_theta of a design given by its parameters (the same re-sampling as the guided designs' evaluation)."""
    bp = Backprojection(matrix=matrix, particle=particle, radius=radius, volume_fraction=fraction,
                        matrix_estimate=table.values[matrix], particle_estimate=table.values[particle], distance=0.0,
                        variance=0.0, centers=np.zeros((0, 2)), detected=True)
    return k_theta(bp, table, n=n, seed=seed)


def _objective(k, k_target, density, density_weight):
    if not np.isfinite(k):
        k = 0.0  # a design that cannot be packed scores as badly as K = 0
    return (k - k_target) ** 2 + density_weight * PIXELS * density


def bayesian_design(k_target: float, n: int, seed: int = 0, objective: str = "J1", density_weight: float = 0.0, *,
                    table: MaterialTable, iterations: int = 100, init_points: int = 10, n_theta: int = 10):
    """Run the baseline for one target and return a `DesignResult` (method "bayesian").

    ``images`` are the first re-sampled microstructure of each design (physical E, nu, rho) and ``k_sample`` its K.
    """
    from bayes_opt import BayesianOptimization, acquisition
    from scipy.optimize import minimize

    from .homogenize import bulk_modulus
    from .microstructure import compose, particle_mask
    from .result import design_result

    t0 = time.time()
    rng = np.random.default_rng(seed)
    opt = BayesianOptimization(f=None, pbounds={name: (0.0, 1.0) for name in NAMES},
                               acquisition_function=acquisition.UpperConfidenceBound(kappa=KAPPA),
                               random_state=seed, verbose=0, allow_duplicate_points=True)
    best = np.inf
    for it in range(int(init_points) + int(iterations)):
        if it < init_points:
            u = rng.random(8)
        else:
            suggestion = opt.suggest()
            u = np.array([suggestion[name] for name in NAMES])
        m, p, r, f = decode(u, table)
        density = (1.0 - f) * table.values[m, 2] + f * table.values[p, 2]
        j = _objective(design_k_theta(m, p, r, f, table, n=n_theta, seed=int(seed) * 1_000_003 + it), k_target,
                       density, density_weight)
        best = min(best, j)
        for point in (u, encode(m, p, r, f, table)):
            opt.register(params=dict(zip(NAMES, point)), target=-j)
    search_s = time.time() - t0

    def neg_mean(u):
        return -float(opt.predict([dict(zip(NAMES, u))], fit_gp=False)[0])

    rows, k_sample, images = [], [], []
    for j in range(int(n)):
        res = minimize(neg_mean, rng.random(8), method="L-BFGS-B", bounds=[(0.0, 1.0)] * 8)
        m, p, r, f = decode(res.x, table)
        eval_seed = (int(seed) + 1) * 1_000_003 + j
        bp = Backprojection(matrix=m, particle=p, radius=r, volume_fraction=f, matrix_estimate=table.values[m],
                            particle_estimate=table.values[p], distance=0.0, variance=0.0, centers=np.zeros((0, 2)),
                            detected=True)
        rows.append((bp, k_theta(bp, table, n=n_theta, seed=eval_seed)))
        try:
            mask, _ = particle_mask(r, f, [eval_seed, 0])
        except SolverError:  # cannot be packed: shown as the matrix alone (its K_theta is NaN, a miss)
            mask = np.zeros((64, 64), dtype=bool)
        image = compose(mask, table.values[m], table.values[p])
        images.append(image)
        k_sample.append(float(bulk_modulus(image[0], image[1])))
    info = {"iterations": int(iterations), "init_points": int(init_points), "kappa": KAPPA, "search_time_s": search_s,
            "best_search_objective": float(best)}
    return design_result(rows, table, k_target, np.array(k_sample), np.stack(images), "bayesian", objective, density_weight,
                   time.time() - t0, info)

