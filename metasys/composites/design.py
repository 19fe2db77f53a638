"""Inverse design of particle composites for a target bulk modulus (the loss-guided paper's whole pipeline).

`inverse_design` draws ``n`` images from the prior guided by J_1 or J_2 (`metasys.composites.guided`), or
unguided (``method="unguided"``, the paper's Table 3a baseline), or runs the Bayesian-optimization baseline
over the original parameters (``method="bayesian"``, `metasys.composites.baseline`); every design is then
backprojected to table materials, radius and volume fraction, and evaluated by K_theta (the mean bulk modulus
of 10 re-sampled microstructures). `evaluate_images` does the evaluation alone.

``dim=3`` designs 32 x 32 x 32 voxel composites (spheres) with the 3D prior (`metasys.composites.prior.Prior.dim`),
the voxel bulk modulus and the 3D backprojection; every K solve then costs seconds on 2 cores, so ``n_theta`` (the
re-samples per design) is worth keeping small in 3D measurements (the paper: 10).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from ..errors import InvalidValueError, describe
from .backproject import backproject, k_theta
from .homogenize import bulk_modulus
from .materials import MaterialTable, denormalize, load_table
from .result import DesignResult, design_result

METHODS = ("guided", "unguided", "bayesian")


def _check_common(k_target, n, objective, density_weight, method, dim=2, n_theta=10):
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
    if isinstance(dim, bool) or dim not in (2, 3):
        raise InvalidValueError(f"dim: expected 2 (64 x 64 pixels) or 3 (32^3 voxels), got {dim!r}")
    if isinstance(n_theta, bool) or int(n_theta) != n_theta or n_theta < 1:
        raise InvalidValueError(f"n_theta: expected a positive number of re-sampled microstructures, got {n_theta!r}")


def evaluate_images(images, k_target: float, table: MaterialTable | None = None, *, normalized: bool = True,
                    seed: int = 0, n_theta: int = 10, method: str = "guided", objective: str = "J1",
                    density_weight: float = 0.0, wall_time_s: float = 0.0, info: dict | None = None) -> DesignResult:
    """Backproject images (n, 3, 64, 64) or voxel fields (n, 3, 32, 32, 32) and evaluate K_s, K_theta and the metrics
    against ``k_target`` (the dimension comes from the shape).

    Design ``j``'s re-sampled microstructures use the seeds ``[seed * 1_000_003 + j, i]``, i < ``n_theta``.
    """
    table = load_table() if table is None else table
    imgs = np.asarray(images, dtype=float)
    if imgs.ndim not in (4, 5) or imgs.shape[1] != 3:
        raise InvalidValueError(f"images: expected (n, 3, ny, nx) material images or (n, 3, nz, ny, nx) voxel fields, "
                                f"got {describe(images)}")
    dim = imgs.ndim - 2
    phys = denormalize(np.moveaxis(imgs, 1, -1)) if normalized else np.moveaxis(imgs, 1, -1)
    lo = np.array([1e-3 * 500.0, 2.5e-4, 0.0])
    hi = np.array([500.0, 0.5 - 2.5e-4, 10.0])
    phys = np.clip(phys, lo, hi)
    k_sample = np.asarray(bulk_modulus(phys[..., 0], phys[..., 1], dim=dim), dtype=float).reshape(len(imgs))
    rows = []
    for j, img in enumerate(np.moveaxis(phys, -1, 1)):
        bp = backproject(img, table, seed=seed)
        rows.append((bp, k_theta(bp, table, n=n_theta, seed=int(seed) * 1_000_003 + j)))
    return design_result(rows, table, k_target, k_sample, np.moveaxis(phys, -1, 1), method, objective, density_weight,
                   wall_time_s, {**(info or {}), **({"dim": 3} if dim == 3 else {})})


def inverse_design(k_target: float, n: int = 200, seed: int = 0, objective: str = "J1", density_weight: float = 0.0, *,
                   method: str = "guided", prior=None, table: MaterialTable | None = None, steps: int = 100,
                   batch_size: int = 8, n_theta: int = 10, scale_e: float | None = None, scale_nu: float | None = None,
                   iterations: int = 100, dim: int = 2) -> DesignResult:
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
    dim : 2 (64 x 64 pixel circles) or 3 (32^3 voxel spheres; ``prior`` None then loads the shipped
        ``databases/composites3d-prior``, and a given prior must be 3D). The Bayesian baseline is 2D only.
    """
    from .guided import SCALE_E, SCALE_NU, guided_sample
    from .prior import as_prior

    _check_common(k_target, n, objective, density_weight, method, dim, n_theta)
    table = load_table() if table is None else table
    if method == "bayesian" and dim == 3:
        raise InvalidValueError("method: the Bayesian-optimization baseline is 2D only; use 'guided' or 'unguided' "
                                "with dim=3")
    if method == "bayesian":
        from .baseline import bayesian_design

        return bayesian_design(k_target, n, seed, objective, density_weight, table=table, iterations=iterations,
                               n_theta=n_theta)
    t0 = time.time()
    prior = as_prior(prior, dim)
    if prior.dim != dim:
        raise InvalidValueError(f"prior: expected a {dim}D prior for dim={dim}, got a {prior.dim}D one "
                                f"({'(B, 32, 32, 32, 3)' if prior.dim == 3 else '(B, 64, 64, 3)'} samples)")
    se = SCALE_E if scale_e is None else float(scale_e)
    sn = SCALE_NU if scale_nu is None else float(scale_nu)
    samples = guided_sample(prior, float(k_target) if method == "guided" else None, int(n), seed,
                            density_weight=density_weight, steps=steps, scale_e=se, scale_nu=sn, batch_size=batch_size)
    info = {"steps": steps, "scale_e": se, "scale_nu": sn, "sampling_time_s": samples.wall_time_s,
            "k_history": samples.k_history}
    result = evaluate_images(samples.images, k_target, table, seed=seed, n_theta=n_theta, method=method,
                             objective=objective, density_weight=density_weight, info=info)
    return replace(result, wall_time_s=time.time() - t0)
