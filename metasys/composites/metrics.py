"""The loss-guided paper's evaluation metrics (Sec. 6.2) and its choice of target bulk moduli (Sec. 6.1).

For a set of designs generated for one target ``K*``:

- ``eps_r = |K_theta - K*| / K*`` per design (``K_theta``: the backprojected design's bulk modulus,
  averaged over re-sampled microstructures);
- ``frac(t)``: the fraction of designs with ``eps_r < t`` (t = 0.01 and 0.05 in the paper);
- ``cov(t)``: the number of distinct material chunks used by the designs with ``eps_r < t`` (the
  chunks of both the matrix and the particle material, after the nearest-material lookup), divided
  by the number of non-empty chunks of the table (168 in the paper).
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidValueError, describe


def relative_error(k_theta, k_target) -> np.ndarray:
    """``eps_r = |K_theta - K*| / K*`` (elementwise)."""
    k_target = np.asarray(k_target, dtype=float)
    if np.any(k_target <= 0) or not np.all(np.isfinite(k_target)):
        raise InvalidValueError(f"k_target: expected a positive target bulk modulus, got {describe(k_target)}")
    return np.abs(np.asarray(k_theta, dtype=float) - k_target) / k_target


def frac(eps_r, threshold: float) -> float:
    """Fraction of designs with ``eps_r < threshold``."""
    eps_r = np.asarray(eps_r, dtype=float)
    if eps_r.size == 0:
        raise InvalidValueError("eps_r: expected at least one design")
    return float(np.mean(eps_r < threshold))


def cov(eps_r, matrix_chunks, particle_chunks, n_chunks: int, threshold: float) -> float:
    """Distinct chunks of the matrix and particle materials of the designs with ``eps_r < threshold``, over ``n_chunks``.

    ``matrix_chunks`` and ``particle_chunks`` (n,) are flat chunk ids (`MaterialTable.chunk_ids` of the
    backprojected materials).
    """
    eps_r = np.asarray(eps_r, dtype=float)
    m, p = np.asarray(matrix_chunks), np.asarray(particle_chunks)
    if m.shape != eps_r.shape or p.shape != eps_r.shape:
        raise InvalidValueError(f"matrix_chunks, particle_chunks: expected shape {eps_r.shape}, got {m.shape} and {p.shape}")
    if int(n_chunks) < 1:
        raise InvalidValueError(f"n_chunks: expected a positive number of non-empty chunks, got {n_chunks}")
    ok = eps_r < threshold
    return len(np.union1d(m[ok], p[ok])) / int(n_chunks)


def targets_from(k_values, count: int = 5) -> np.ndarray:
    """``count`` equally spaced targets from the 1- to the 99-percentile of ``k_values`` (both included)."""
    k = np.asarray(k_values, dtype=float)
    k = k[np.isfinite(k)]
    if k.size < 2:
        raise InvalidValueError(f"k_values: expected bulk moduli of a dataset, got {k.size} finite values")
    if int(count) < 2:
        raise InvalidValueError(f"count: expected at least 2 targets, got {count}")
    lo, hi = np.percentile(k, [1, 99])
    return np.linspace(lo, hi, int(count))
