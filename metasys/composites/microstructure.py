"""Particle-matrix microstructures: equal non-overlapping circles (2D, 64 x 64 pixels) or spheres (3D, 32^3 voxels).

Conventions: the sample is the unit square or cube; a 2D field ``f[r, c]`` (64, 64) has row ``r`` counted from
the bottom (y up) and column ``c`` (x right); pixel (r, c) covers ``[c, c+1] x [r, r+1] / 64`` and
belongs to a particle when its centre lies inside a circle. A 3D field ``f[k, r, c]`` (32, 32, 32) adds the
layer ``k`` (z up) in front, x stays the last axis (as `metasys.fem.homogenize` does for voxel cells).
Centres are stored as (x, y[, z]). Radii are fractions of the side. Particles
never overlap (centre distance >= 2 r) and never cut the boundary (centres in ``[r, 1 - r]^dim``).

Every function takes the dimension ``dim`` (2 or 3, default 2) as a parameter; ``dim=2`` is the 2D designer as it
was before 3D existed, bit for bit (same random streams, same arithmetic order).

Particle counts (paper Sec. 5.2 and 6.2): the expected count is ``f / V(r)`` with ``V(r) = pi r^2`` (2D) or
``4/3 pi r^3`` (3D); the dataset rounds it (`particle_count` without a generator), the evaluation of a backprojected
design draws ``floor`` or ``floor + 1`` with the probability of the fractional part (with a generator), so that
the expected volume fraction is the requested one.
"""

from __future__ import annotations

import numba
import numpy as np

from ..errors import InvalidValueError, SolverError, describe

RESOLUTION = 64
"""Pixels per side in 2D."""
RESOLUTIONS = {2: RESOLUTION, 3: 32}
"""Grid points per side by dimension (the paper: 64 x 64 pixels and 32 x 32 x 32 voxels)."""


SLACK = {2: 0.0, 3: 1e-9}
"""Relative extra distance the relaxation pushes overlapping pairs to. Without it (2D) a pair at a distance that
rounds to 2 r stalls the relaxation until its update limit, and the placement restarts: in 3D this made even
7 spheres of diameter 0.4 fail 10 of 10 times. 2D keeps 0 so that its shipped datasets reproduce bit for bit
(a stall costs it a restart only)."""


def check_dim(dim) -> int:
    """``dim`` as an int, or InvalidValueError naming it unless it is 2 or 3."""
    if isinstance(dim, bool) or dim not in (2, 3):
        raise InvalidValueError(f"dim: expected 2 or 3, got {describe(dim)}")
    return int(dim)


def particle_measure(radius: float, dim: int = 2) -> float:
    """Area (2D, ``pi r^2``) or volume (3D, ``4/3 pi r^3``) of one particle of ``radius`` in the unit square/cube."""
    r = float(radius)
    return np.pi * r**2 if check_dim(dim) == 2 else 4.0 / 3.0 * np.pi * r**3


def particle_count(volume_fraction: float, radius: float, rng=None, dim: int = 2) -> int:
    """Number of circles (``dim=2``) or spheres (``dim=3``) of ``radius`` (fraction of the side) for ``volume_fraction``.

    Without ``rng``: ``round(f / V(r))`` (dataset rule). With a ``numpy.random.Generator`` (or
    seed): the stochastic rule, ``floor`` or ``floor + 1`` with probability of the fractional part.
    """
    expected = float(volume_fraction) / particle_measure(radius, dim)
    if rng is None:
        return int(np.floor(expected + 0.5))
    base = int(np.floor(expected))
    return base + int(np.random.default_rng(rng).random() < expected - base)


@numba.njit(cache=True)
def _relax(pos, r, lo, hi, max_updates, seed, slack):
    """Push intersecting particles apart in place; return the number of updates, or -1 if still intersecting.

    ``pos`` is (n, dim) for any dim. Each intersecting pair moves both centres apart by 1.5 x half the penetration
    along the centre line plus a small random vector (xorshift64* stream from ``seed``, one draw per coordinate in
    the order x, y[, z], so 2D keeps its stream); all moves of an update are applied at once. Pairs are pushed
    towards the distance ``2 r (1 + slack)``: with ``slack = 0`` a pair whose distance rounds to exactly ``2 r``
    while its squared distance stays below ``4 r^2`` gets no push and stalls until ``max_updates`` (see
    `SLACK`).
    """
    n, dim = pos.shape
    gap = 2.0 * r
    delta = np.zeros_like(pos)
    diff = np.zeros(dim)
    state = np.uint64(seed)
    for it in range(max_updates):
        delta[:] = 0.0
        overlapping = False
        for i in range(n):
            for j in range(i + 1, n):
                d2 = 0.0
                for k in range(dim):
                    diff[k] = pos[i, k] - pos[j, k]
                    d2 += diff[k] * diff[k]
                if d2 < gap * gap:
                    overlapping = True
                    dist = np.sqrt(d2)
                    norm2 = 0.0
                    for k in range(dim):
                        state ^= state >> np.uint64(12)
                        state ^= state << np.uint64(25)
                        state ^= state >> np.uint64(27)
                        u = np.float64((state * np.uint64(2685821657736338717)) >> np.uint64(11)) / 9007199254740992.0
                        diff[k] += (u - 0.5) * 2e-3 * r
                        norm2 += diff[k] * diff[k]
                    s = 1.5 * 0.5 * (gap * (1.0 + slack) - dist) / max(np.sqrt(norm2), 1e-12)
                    for k in range(dim):
                        delta[i, k] += s * diff[k]
                        delta[j, k] -= s * diff[k]
        if not overlapping:
            return it
        for i in range(n):
            for k in range(dim):
                pos[i, k] = min(max(pos[i, k] + delta[i, k], lo), hi)
    return -1


def place_particles(n: int, radius: float, rng, *, dim: int = 2, max_updates: int = 10_000,
                    max_restarts: int = 2000) -> np.ndarray:
    """Centres (n, dim) = (x, y[, z]) of ``n`` non-overlapping circles/spheres of ``radius`` inside the unit square/cube.

    The paper's procedure (appendix A): uniform positions that do not cut the boundary; while particles
    intersect, every intersecting pair pushes both apart along their centre line (plus a small
    random vector) by 1.5 times half the penetration, all moves at once; after ``max_updates``
    unsuccessful updates the positions are drawn anew (compiled with numba: dense packings, e.g. 28
    circles at f = 0.5, need a few restarts and take about 0.05 s).

    Raises
    ------
    SolverError
        If no placement is found in ``max_restarts`` restarts (the packing is too dense).
    """
    rng = np.random.default_rng(rng)
    n, r, dim = int(n), float(radius), check_dim(dim)
    if n == 0:
        return np.zeros((0, dim))
    lo, hi = r, 1.0 - r
    for _ in range(max_restarts):
        pos = lo + rng.random((n, dim)) * (hi - lo)
        if _relax(pos, r, lo, hi, int(max_updates), int(rng.integers(1, 2**62)), SLACK[dim]) >= 0:
            return pos
    kind = "circles" if dim == 2 else "spheres"
    raise SolverError(f"place_particles: no placement of {n} {kind} of radius {r:.4g} found in {max_restarts} restarts")


def place_circles(n: int, radius: float, rng, **kwargs) -> np.ndarray:
    """`place_particles` in 2D: centres (n, 2) of non-overlapping circles (the name the 2D designer uses)."""
    return place_particles(n, radius, rng, dim=2, **kwargs)


def rasterize(centers, radius: float, resolution: int = RESOLUTION, dim: int = 2) -> np.ndarray:
    """Bool mask ``(resolution,) * dim``: grid points whose cell centre lies inside a particle.

    Axes are (y, x) in 2D and (z, y, x) in 3D (row 0 at the bottom); ``centers`` is (n, dim) in (x, y[, z]).
    """
    dim = check_dim(dim)
    centers = np.asarray(centers, dtype=float).reshape(-1, dim)
    shape = (int(resolution),) * dim
    t = (np.arange(resolution) + 0.5) / resolution
    mask = np.zeros(shape, dtype=bool)
    # chunks of particles keep the (chunk, *shape) temporary near 16 MB in 3D (250 spheres x 32^3 would be 0.5 GB)
    step = max(1, 2**21 // int(np.prod(shape)))
    for c in (centers[i:i + step] for i in range(0, len(centers), step)):
        d2 = 0.0
        for k in range(dim):  # x varies along the last axis, y the one before, z the first
            view = [1] * (dim + 1)
            view[0], view[dim - k] = len(c), resolution
            d2 = d2 + (t[None, :] - c[:, k, None]).reshape(view) ** 2
        mask |= (d2 <= float(radius) ** 2).any(axis=0)
    return mask


def _check_geometry(radius, volume_fraction):
    if not (np.isfinite(radius) and 0 < radius < 0.5):
        raise InvalidValueError(f"radius: expected a fraction of the side in (0, 0.5), got {describe(radius)}")
    if not (np.isfinite(volume_fraction) and 0 <= volume_fraction < 1):
        raise InvalidValueError(f"volume_fraction: expected a value in [0, 1), got {describe(volume_fraction)}")


def particle_mask(radius: float, volume_fraction: float, seed, *, stochastic: bool = True,
                  resolution: int | None = None, dim: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A random particle mask ``(resolution,) * dim`` bool and its centres (n, dim).

    ``stochastic`` picks the evaluation's particle count rule (else the dataset's rounding); ``resolution``
    defaults to ``RESOLUTIONS[dim]``.
    """
    dim = check_dim(dim)
    _check_geometry(radius, volume_fraction)
    rng = np.random.default_rng(seed)
    n = particle_count(volume_fraction, radius, rng if stochastic else None, dim=dim)
    centers = place_particles(n, radius, rng, dim=dim)
    return rasterize(centers, radius, RESOLUTIONS[dim] if resolution is None else resolution, dim), centers


def _material(value, name):
    v = np.asarray(value, dtype=float).ravel()
    if v.shape not in ((2,), (3,)) or not np.all(np.isfinite(v)):
        raise InvalidValueError(f"{name}: expected a material (E, nu) or (E, nu, rho), got {describe(value)}")
    if not (v[0] > 0 and 0 < v[1] < 0.5):
        raise InvalidValueError(f"{name}: expected E > 0 and 0 < nu < 0.5, got E = {v[0]:.4g}, nu = {v[1]:.4g}")
    return v


def compose(mask, matrix, particle) -> np.ndarray:
    """Material image (k, *mask.shape) from a bool mask (ny, nx) or (nz, ny, nx) and two materials of k = 2 or 3
    values (E, nu[, rho])."""
    m, p = _material(matrix, "matrix"), _material(particle, "particle")
    if len(m) != len(p):
        raise InvalidValueError(f"particle: expected as many values as matrix ({len(m)}), got {len(p)}")
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim not in (2, 3):
        raise InvalidValueError(f"mask: expected a 2D (ny, nx) or 3D (nz, ny, nx) mask, got {describe(mask)}")
    column = (-1,) + (1,) * mask.ndim
    return np.where(mask[None], p.reshape(column), m.reshape(column))


def sample_microstructure(matrix, particle, radius: float, volume_fraction: float, seed,
                          dim: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(E, nu) fields (64, 64) (``dim=2``) or (32, 32, 32) (``dim=3``) each of a random microstructure, with the
    stochastic particle count rule.

    Parameters
    ----------
    matrix, particle : array-like (2,) or (3,)
        Materials (E [GPa], nu[, rho]) of the matrix and the particles.
    radius : float
        Particle radius as a fraction of the side (the datasets: 0.075 .. 0.2 in 2D, 0.075 .. 0.175 in 3D).
    volume_fraction : float
        Requested particle volume fraction (the expected count is ``f / V(r)``).
    seed : int or numpy.random.Generator
        Randomness of the count and the positions.
    dim : int
        2 (circles) or 3 (spheres).
    """
    mask, _ = particle_mask(radius, volume_fraction, seed, stochastic=True, dim=dim)
    image = compose(mask, np.asarray(matrix, float).ravel()[:2], np.asarray(particle, float).ravel()[:2])
    return image[0], image[1]
