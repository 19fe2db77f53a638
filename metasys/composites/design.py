"""Inverse design of particle composites for a target bulk modulus (the loss-guided paper's whole pipeline).

`inverse_design` draws ``n`` images from the prior guided by J_1 or J_2 (`metasys.composites.guided`), or
unguided (``method="unguided"``, the paper's Table 3a baseline), or runs the Bayesian-optimization baseline
over the original parameters (``method="bayesian"``, `metasys.composites.baseline`); every design is then
backprojected to table materials, radius and volume fraction, and evaluated by K_theta (the mean bulk modulus
of 10 re-sampled microstructures). `evaluate_images` does the evaluation alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import InvalidValueError, describe
from .backproject import backproject, k_theta
from .homogenize import bulk_modulus
from .materials import MaterialTable, denormalize, load_table
from .metrics import cov as cov_metric
from .metrics import frac as frac_metric
from .metrics import relative_error

METHODS = ("guided", "unguided", "bayesian")


@dataclass(frozen=True)
class DesignResult:
    """``n`` designs for one target.

    ``matrix`` / ``particle`` (n, 3): table materials (E [GPa], nu, rho [g/cm^3]) and their table indices
    ``matrix_index`` / ``particle_index`` (n,); ``radius`` (n,) as a fraction of the side (NaN without
    particles); ``volume_fraction`` (n,); ``k_theta`` (n,): mean K of 10 re-sampled microstructures of the
    backprojected design; ``k_sample`` (n,): K of the generated image itself (K_s; for the Bayesian baseline the
    first re-sampled microstructure); ``eps_r`` (n,) = |K_theta - K*| / K*; ``images`` (n, 3, 64, 64) physical
    (E, nu, rho) per pixel; ``density`` (n,): the design's mean density (1 - f_p) rho_m + f_p rho_p;
    ``chunks`` (n, 2): the chunk ids of matrix and particle; ``n_chunks``: non-empty chunks of the table.
    """

    k_target: float
    method: str
    objective: str
    density_weight: float
    matrix: np.ndarray
    particle: np.ndarray
    matrix_index: np.ndarray
    particle_index: np.ndarray
    radius: np.ndarray
    volume_fraction: np.ndarray
    k_theta: np.ndarray
    k_sample: np.ndarray
    images: np.ndarray
    density: np.ndarray
    chunks: np.ndarray
    n_chunks: int
    wall_time_s: float
    info: dict = field(default_factory=dict)

    @property
    def eps_r(self) -> np.ndarray:
        """Relative error of K_theta to the target (NaN K_theta, designs that cannot be packed, count as misses)."""
        return np.nan_to_num(relative_error(self.k_theta, self.k_target), nan=np.inf)

    def frac(self, threshold: float = 0.05) -> float:
        """Share of the designs with ``eps_r < threshold``."""
        return frac_metric(self.eps_r, threshold)

    def cov(self, threshold: float = 0.05) -> float:
        """Distinct chunks used by the designs with ``eps_r < threshold``, over the non-empty chunks."""
        return cov_metric(self.eps_r, self.chunks[:, 0], self.chunks[:, 1], self.n_chunks, threshold)

    def mean_density(self, threshold: float = 0.05) -> float:
        """Mean design density of the designs with ``eps_r < threshold`` (NaN if none; the paper's Table 3b)."""
        ok = self.eps_r < threshold
        return float(np.mean(self.density[ok])) if ok.any() else float("nan")


def _check_common(k_target, n, objective, density_weight, method):
    if not (np.isscalar(k_target) and np.isfinite(k_target) and k_target > 0):
        raise InvalidValueError(f"k_target: expected a positive target bulk modulus, got {describe(k_target)}")
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise InvalidValueError(f"n: expected a positive number of designs, got {n!r}")
    if objective not in ("J1", "J2"):
        raise InvalidValueError(f"objective: expected 'J1' or 'J2', got {objective!r}")
    if not (np.isfinite(density_weight) and density_weight >= 0):
        raise InvalidValueError(f"density_weight: expected lambda >= 0, got {density_weight!r}")
    if objective == "J1" and density_weight:
        raise InvalidValueError(f"density_weight: J1 has no density term; use objective='J2' (got {density_weight!r})")
    if method not in METHODS:
        raise InvalidValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")


def evaluate_images(images, k_target: float, table: MaterialTable | None = None, *, normalized: bool = True,
                    seed: int = 0, n_theta: int = 10, method: str = "guided", objective: str = "J1",
                    density_weight: float = 0.0, wall_time_s: float = 0.0, info: dict | None = None) -> DesignResult:
    """Backproject images (n, 3, 64, 64) and evaluate K_s, K_theta and the metrics against ``k_target``.

    Design ``j``'s re-sampled microstructures use the seeds ``[seed * 1_000_003 + j, i]``, i < ``n_theta``.
    """
    table = load_table() if table is None else table
    imgs = np.asarray(images, dtype=float)
    if imgs.ndim != 4 or imgs.shape[1] != 3:
        raise InvalidValueError(f"images: expected (n, 3, ny, nx) material images, got {describe(images)}")
    phys = denormalize(np.moveaxis(imgs, 1, -1)) if normalized else np.moveaxis(imgs, 1, -1)
    lo = np.array([1e-3 * 500.0, 2.5e-4, 0.0])
    hi = np.array([500.0, 0.5 - 2.5e-4, 10.0])
    phys = np.clip(phys, lo, hi)
    k_sample = np.asarray(bulk_modulus(phys[..., 0], phys[..., 1]), dtype=float).reshape(len(imgs))
    rows = []
    for j, img in enumerate(np.moveaxis(phys, -1, 1)):
        bp = backproject(img, table, seed=seed)
        rows.append((bp, k_theta(bp, table, n=n_theta, seed=int(seed) * 1_000_003 + j)))
    return _result(rows, table, k_target, k_sample, np.moveaxis(phys, -1, 1), method, objective, density_weight,
                   wall_time_s, info or {})


def _result(rows, table, k_target, k_sample, images, method, objective, density_weight, wall_time_s, info):
    mi = np.array([bp.matrix for bp, _ in rows], dtype=int)
    pi = np.array([bp.particle for bp, _ in rows], dtype=int)
    vf = np.array([bp.volume_fraction for bp, _ in rows], dtype=float)
    m, p = table.values[mi], table.values[pi]
    ids = table.chunk_ids
    return DesignResult(k_target=float(k_target), method=method, objective=objective, density_weight=float(density_weight),
                        matrix=m, particle=p, matrix_index=mi, particle_index=pi,
                        radius=np.array([bp.radius for bp, _ in rows], dtype=float), volume_fraction=vf,
                        k_theta=np.array([k for _, k in rows], dtype=float), k_sample=np.asarray(k_sample, float),
                        images=np.asarray(images, dtype=np.float32), density=(1.0 - vf) * m[:, 2] + vf * p[:, 2],
                        chunks=np.stack([ids[mi], ids[pi]], axis=1), n_chunks=len(table.chunks),
                        wall_time_s=float(wall_time_s), info=info)


def inverse_design(k_target: float, n: int = 200, seed: int = 0, objective: str = "J1", density_weight: float = 0.0, *,
                   method: str = "guided", prior=None, table: MaterialTable | None = None, steps: int = 100,
                   batch_size: int = 8, n_theta: int = 10, scale_e: float | None = None, scale_nu: float | None = None,
                   iterations: int = 100) -> DesignResult:
    """``n`` composite designs for the target bulk modulus ``k_target`` (GPa).

    Parameters
    ----------
    objective, density_weight : "J1" = (K - K*)^2, or "J2" = J1 + lambda * density (``density_weight`` = lambda)
    method : "guided" (loss-guided sampling, the paper's method), "unguided" (prior samples) or "bayesian"
        (Bayesian optimization over the 8 original parameters, ``iterations`` evaluations, then ``n`` designs
        from the surrogate; `metasys.composites.baseline`)
    prior : a `Prior`, a prior directory, or None (the shipped ``databases/composites-prior``)
    steps, batch_size : DDIM steps (paper: 100) and images per batch
    n_theta : re-sampled microstructures per design for K_theta (paper: 10)
    scale_e, scale_nu : FEM gradient scales (default 0.02 / 0.005, `metasys.composites.guided`; the paper: 0.5 / 0.02)
    """
    from .guided import SCALE_E, SCALE_NU, guided_sample
    from .prior import as_prior

    _check_common(k_target, n, objective, density_weight, method)
    table = load_table() if table is None else table
    if method == "bayesian":
        from .baseline import bayesian_design

        return bayesian_design(k_target, n, seed, objective, density_weight, table=table, iterations=iterations,
                               n_theta=n_theta)
    t0 = time.time()
    prior = as_prior(prior)
    se = SCALE_E if scale_e is None else float(scale_e)
    sn = SCALE_NU if scale_nu is None else float(scale_nu)
    samples = guided_sample(prior, float(k_target) if method == "guided" else None, int(n), seed,
                            density_weight=density_weight, steps=steps, scale_e=se, scale_nu=sn, batch_size=batch_size)
    info = {"steps": steps, "scale_e": se, "scale_nu": sn, "sampling_time_s": samples.wall_time_s,
            "k_history": samples.k_history}
    result = evaluate_images(samples.images, k_target, table, seed=seed, n_theta=n_theta, method=method,
                             objective=objective, density_weight=density_weight, info=info)
    return replace(result, wall_time_s=time.time() - t0)
