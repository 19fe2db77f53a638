"""Particle-matrix microstructures: equal non-overlapping circles in a unit square, on a 64 x 64 pixel grid.

Conventions: the sample is the unit square; a field ``f[r, c]`` (64, 64) has row ``r`` counted from
the bottom (y up) and column ``c`` (x right); pixel (r, c) covers ``[c, c+1] x [r, r+1] / 64`` and
belongs to a particle when its centre lies inside a circle. Radii are fractions of the side. Circles
never overlap (centre distance >= 2 r) and never cut the boundary (centres in ``[r, 1 - r]^2``).

Particle counts (paper Sec. 5.2 and 6.2): the expected count is ``f / (pi r^2)``; the dataset rounds
it (`particle_count` without a generator), the evaluation of a backprojected design draws
``floor`` or ``floor + 1`` with the probability of the fractional part (with a generator), so that the
expected volume fraction is the requested one.
"""

from __future__ import annotations

import numba
import numpy as np

from ..errors import InvalidValueError, SolverError, describe

RESOLUTION = 64
"""Pixels per side."""


def particle_count(volume_fraction: float, radius: float, rng=None) -> int:
    """Number of circles of ``radius`` (fraction of the side) for ``volume_fraction``.

    Without ``rng``: ``round(f / (pi r^2))`` (dataset rule). With a ``numpy.random.Generator`` (or
    seed): the stochastic rule, ``floor`` or ``floor + 1`` with probability of the fractional part.
    """
    expected = float(volume_fraction) / (np.pi * float(radius) ** 2)
    if rng is None:
        return int(np.floor(expected + 0.5))
    base = int(np.floor(expected))
    return base + int(np.random.default_rng(rng).random() < expected - base)


@numba.njit(cache=True)
def _relax(pos, r, lo, hi, max_updates, seed):
    """Push intersecting circles apart in place; return the number of updates, or -1 if still intersecting.

    Each intersecting pair moves both centres apart by 1.5 x half the penetration along the centre line
    plus a small random vector (xorshift64* stream from ``seed``); all moves of an update are applied at once.
    """
    n = pos.shape[0]
    gap = 2.0 * r
    delta = np.zeros_like(pos)
    state = np.uint64(seed)
    for it in range(max_updates):
        delta[:] = 0.0
        overlapping = False
        for i in range(n):
            for j in range(i + 1, n):
                dx = pos[i, 0] - pos[j, 0]
                dy = pos[i, 1] - pos[j, 1]
                d2 = dx * dx + dy * dy
                if d2 < gap * gap:
                    overlapping = True
                    dist = np.sqrt(d2)
                    for k in range(2):
                        state ^= state >> np.uint64(12)
                        state ^= state << np.uint64(25)
                        state ^= state >> np.uint64(27)
                        u = np.float64((state * np.uint64(2685821657736338717)) >> np.uint64(11)) / 9007199254740992.0
                        if k == 0:
                            dx += (u - 0.5) * 2e-3 * r
                        else:
                            dy += (u - 0.5) * 2e-3 * r
                    s = 1.5 * 0.5 * (gap - dist) / max(np.sqrt(dx * dx + dy * dy), 1e-12)
                    delta[i, 0] += s * dx
                    delta[i, 1] += s * dy
                    delta[j, 0] -= s * dx
                    delta[j, 1] -= s * dy
        if not overlapping:
            return it
        for i in range(n):
            for k in range(2):
                pos[i, k] = min(max(pos[i, k] + delta[i, k], lo), hi)
    return -1


def place_circles(n: int, radius: float, rng, *, max_updates: int = 10_000, max_restarts: int = 2000) -> np.ndarray:
    """Centres (n, 2) = (x, y) of ``n`` non-overlapping circles of ``radius`` inside the unit square.

    The paper's procedure (appendix A): uniform positions that do not cut the boundary; while circles
    intersect, every intersecting pair pushes both circles apart along their centre line (plus a small
    random vector) by 1.5 times half the penetration, all moves at once; after ``max_updates``
    unsuccessful updates the positions are drawn anew (compiled with numba: dense packings, e.g. 28
    circles at f = 0.5, need a few restarts and take about 0.05 s).

    Raises
    ------
    SolverError
        If no placement is found in ``max_restarts`` restarts (the packing is too dense).
    """
    rng = np.random.default_rng(rng)
    n, r = int(n), float(radius)
    if n == 0:
        return np.zeros((0, 2))
    lo, hi = r, 1.0 - r
    for _ in range(max_restarts):
        pos = lo + rng.random((n, 2)) * (hi - lo)
        if _relax(pos, r, lo, hi, int(max_updates), int(rng.integers(1, 2**62))) >= 0:
            return pos
    raise SolverError(f"place_circles: no placement of {n} circles of radius {r:.4g} found in {max_restarts} restarts")


def rasterize(centers, radius: float, resolution: int = RESOLUTION) -> np.ndarray:
    """Bool mask (resolution, resolution): pixels whose centre lies inside a circle (row 0 at the bottom)."""
    centers = np.asarray(centers, dtype=float).reshape(-1, 2)
    t = (np.arange(resolution) + 0.5) / resolution
    if len(centers) == 0:
        return np.zeros((resolution, resolution), dtype=bool)
    dx = t[None, None, :] - centers[:, 0, None, None]
    dy = t[None, :, None] - centers[:, 1, None, None]
    return ((dx**2 + dy**2) <= float(radius) ** 2).any(axis=0)


def _check_geometry(radius, volume_fraction):
    if not (np.isfinite(radius) and 0 < radius < 0.5):
        raise InvalidValueError(f"radius: expected a fraction of the side in (0, 0.5), got {describe(radius)}")
    if not (np.isfinite(volume_fraction) and 0 <= volume_fraction < 1):
        raise InvalidValueError(f"volume_fraction: expected a value in [0, 1), got {describe(volume_fraction)}")


def particle_mask(radius: float, volume_fraction: float, seed, *, stochastic: bool = True,
                  resolution: int = RESOLUTION) -> tuple[np.ndarray, np.ndarray]:
    """A random particle mask (resolution, resolution) bool and its centres (n, 2).

    ``stochastic`` picks the evaluation's particle count rule (else the dataset's rounding).
    """
    _check_geometry(radius, volume_fraction)
    rng = np.random.default_rng(seed)
    n = particle_count(volume_fraction, radius, rng if stochastic else None)
    centers = place_circles(n, radius, rng)
    return rasterize(centers, radius, resolution), centers


def _material(value, name):
    v = np.asarray(value, dtype=float).ravel()
    if v.shape not in ((2,), (3,)) or not np.all(np.isfinite(v)):
        raise InvalidValueError(f"{name}: expected a material (E, nu) or (E, nu, rho), got {describe(value)}")
    if not (v[0] > 0 and 0 < v[1] < 0.5):
        raise InvalidValueError(f"{name}: expected E > 0 and 0 < nu < 0.5, got E = {v[0]:.4g}, nu = {v[1]:.4g}")
    return v


def compose(mask, matrix, particle) -> np.ndarray:
    """Material image (k, ny, nx) from a bool mask and two materials of k = 2 or 3 values (E, nu[, rho])."""
    m, p = _material(matrix, "matrix"), _material(particle, "particle")
    if len(m) != len(p):
        raise InvalidValueError(f"particle: expected as many values as matrix ({len(m)}), got {len(p)}")
    mask = np.asarray(mask, dtype=bool)
    return np.where(mask[None], p[:, None, None], m[:, None, None])


def sample_microstructure(matrix, particle, radius: float, volume_fraction: float, seed) -> tuple[np.ndarray, np.ndarray]:
    """(E, nu) fields (64, 64) each of a random microstructure, with the stochastic particle count rule.

    Parameters
    ----------
    matrix, particle : array-like (2,) or (3,)
        Materials (E [GPa], nu[, rho]) of the matrix and the particles.
    radius : float
        Particle radius as a fraction of the side (the dataset: 0.075 .. 0.2).
    volume_fraction : float
        Requested particle volume fraction (the expected count is ``f / (pi r^2)``).
    seed : int or numpy.random.Generator
        Randomness of the count and the positions.
    """
    mask, _ = particle_mask(radius, volume_fraction, seed, stochastic=True)
    image = compose(mask, np.asarray(matrix, float).ravel()[:2], np.asarray(particle, float).ravel()[:2])
    return image[0], image[1]
