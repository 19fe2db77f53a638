"""Database seeds by SIMP inverse homogenization (VAE paper, Sec. 3.2).

The paper starts its database from topology-optimized cells: "for each uniformly sampled target
stiffness matrix, SIMP-based topology optimization finds a pixelated microstructure; after a
threshold filtering each design is a 50x50 binary matrix". The stochastic perturbation that
populates the rest of the property space starts from these seeds (elsewhere).

One seed is the solution of

    min_x  sum_k ((p_k(rho(x)) - t_k) / D11)^2,   x in [0, 1]^(25x25),

where ``x`` are the densities of the bottom-left quarter of a doubly mirror-symmetric cell,
``rho(x)`` the filtered (and in the last stages Heaviside-projected) physical densities, ``p`` the
homogenized properties (C11, C12, C22, C33) of the mirrored cell under SIMP (penal 3), ``t`` the
target and ``D11`` the solid's C11 (so the objective is of order one, as nlopt's MMA needs). It is
solved by nlopt's MMA with the exact adjoint gradient of ``metasys.fem.homogenize_quarter_gradient``,
then the physical density is thresholded at 0.5 and mirrored.

Units: stiffness in the units of ``Material.E``; the cell has side 1, lengths in pixels where said.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..errors import InvalidTypeError, InvalidValueError, describe
from ..fem import homogenize, homogenize_quarter_gradient, mirror_quarter
from ..fem.element import properties_of
from ..material import Material

# Box of the target sampler, as fractions of the solid's (D11, D12, D22, D33). The lower ends keep
# targets away from the nearly-empty cells a 50x50 pixel grid cannot resolve (a one-pixel strut
# already gives C11 ~ 0.02 D11); the upper ends stay below the solid itself.
TARGET_BOX = np.array([[0.02, -0.1, 0.02, 0.01], [0.85, 0.9, 0.85, 0.9]])

# Largest volume fraction a sampled target may need (``required_volume_fraction``). SIMP seeds
# overshoot that bound by ~0.06 (median), so a target needing 0.85 already gives a perforated solid
# of ~0.9, too coarse at 50x50 pixels to tune four properties independently: over 150 sampled
# targets the median seed error grew from 0.022 (f < 0.7) to 0.079 (0.85 < f < 0.9). The stiff
# corner is better reached by the perturbation stage, which pushes the database boundary outwards.
MAX_VOLUME_FRACTION = 0.85

# Largest normal coupling |C12| / sqrt(C11 C22) of a sampled target (1 = singular, the solid has
# nu = 0.49). Strong coupling with finite stiffness needs a mechanism (re-entrant, pentamode-like)
# that is stiff in every other mode, which pixel cells do not reach: in 150 seeds the largest coupling
# reached was 0.78, and the median error of targets above 0.7 was over twice that of targets below 0.5.
MAX_COUPLING = 0.75


@dataclass
class SeedResult:
    """One seed of the database.

    Attributes
    ----------
    cell : bool array (50, 50)
        Binary cell, mirror-symmetric about both mid-lines, row 0 at the bottom.
    density : float array (25, 25)
        Final grey physical density of the bottom-left quarter (before the 0.5 threshold).
    target : array (4,)
        Target property vector (C11, C12, C22, C33).
    properties : array (4,)
        Properties of the binary ``cell`` homogenized with the database material (not the SIMP one).
    error : float
        ``max_k |properties_k - target_k| / D11`` (dimensionless).
    iterations : int
        Objective evaluations made by MMA, all stages together.
    history : array (iterations,)
        Objective value of every evaluation (grey SIMP model, in evaluation order).
    seed : int or None
        Seed of the random initial design, when known.
    """

    cell: np.ndarray
    density: np.ndarray
    target: np.ndarray
    properties: np.ndarray
    error: float
    iterations: int
    history: np.ndarray = field(repr=False)
    seed: int | None = None

    @property
    def volume_fraction(self) -> float:
        return float(self.cell.mean())


# ---------------------------------------------------------------------------------------------------
# Targets


def _reference(material: Material) -> np.ndarray:
    """Solid property vector (D11, D12, D22, D33) of ``material``."""
    return properties_of(material.constitutive())


def required_volume_fraction(targets, material: Material = Material()) -> np.ndarray:
    """Smallest solid volume fraction that two classical bounds allow for each target (N, 4) -> (N,).

    * Voigt (Loewner) bound: no uniform strain can store more energy than in the solid fraction
      alone, ``C <= f D``; the smallest such ``f`` is the largest eigenvalue of ``D^-1/2 C D^-1/2``.
    * Hashin-Shtrikman upper bound of a void/solid composite on the hydrostatic (area) energy
      ``k = (C11 + C22 + 2 C12) / 4``: ``k <= f k_s m_s / (m_s + (1 - f) k_s)`` with the solid's
      2-D bulk ``k_s = (D11 + D12) / 2`` and shear ``m_s = D33`` moduli; solved for ``f``.

    Both are necessary conditions, not sufficient ones: a target that passes may still be out of
    reach of a 50x50 pixel cell, but one that fails is out of reach of any cell.
    """
    t = np.atleast_2d(np.asarray(targets, dtype=float))
    d = material.constitutive()
    c = np.zeros((len(t), 3, 3))
    c[:, 0, 0], c[:, 0, 1], c[:, 1, 0], c[:, 1, 1], c[:, 2, 2] = t[:, 0], t[:, 1], t[:, 1], t[:, 2], t[:, 3]
    w, v = np.linalg.eigh(d)
    d_inv_half = (v / np.sqrt(w)) @ v.T
    f_voigt = np.linalg.eigvalsh(d_inv_half @ c @ d_inv_half)[:, -1]
    k_s, m_s = (d[0, 0] + d[0, 1]) / 2.0, d[2, 2]
    k = np.maximum((t[:, 0] + t[:, 2] + 2.0 * t[:, 1]) / 4.0, 0.0)
    f_hs = k * (m_s + k_s) / (k_s * (m_s + k))
    return np.maximum(f_voigt, f_hs)


def sample_targets(n: int, rng: np.random.Generator, material: Material = Material(), *, box=TARGET_BOX,
                   max_volume_fraction: float = MAX_VOLUME_FRACTION, max_coupling: float = MAX_COUPLING) -> np.ndarray:
    """Target property vectors sampled uniformly over the admissible part of a box.

    Each component is uniform in ``box * (D11, D12, D22, D33)`` (default `TARGET_BOX`, D the
    solid's stiffness); a sample is kept only if

    * it is positive definite with margin: ``|C12| <= max_coupling * sqrt(C11 C22)`` (``max_coupling``
      < 1; see `MAX_COUPLING`), and
    * ``required_volume_fraction(C) <= max_volume_fraction`` (Voigt and Hashin-Shtrikman bounds).

    Rejection keeps the accepted samples uniform over the admissible region. Note that, the region
    being 4-D, uniform sampling puts most targets at large volume fractions (the volume of
    ``{C <= f D}`` grows like f^4); low-stiffness seeds need a smaller ``box``.

    Parameters
    ----------
    n : int
        Number of targets (>= 0).
    rng : numpy.random.Generator
    material : Material
        Base material of the database (its solid stiffness scales the box).
    box : array (2, 4)
        Lower and upper fractions of (D11, D12, D22, D33).
    max_volume_fraction : float in (0, 1]
    max_coupling : float in (0, 1)

    Returns
    -------
    targets : array (n, 4)
        (C11, C12, C22, C33), in the units of ``material.E``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise InvalidValueError(f"sample_targets: n must be a non-negative integer, got {describe(n)}")
    if not isinstance(rng, np.random.Generator):
        raise InvalidTypeError(f"sample_targets: rng must be a numpy.random.Generator, got {describe(rng)}")
    box = np.asarray(box, dtype=float)
    if box.shape != (2, 4) or not np.all(np.isfinite(box)) or np.any(box[0] > box[1]):
        raise InvalidValueError(f"sample_targets: box must be a finite (2, 4) array with lower <= upper, got {describe(box)}")
    if not 0.0 < max_volume_fraction <= 1.0:
        raise InvalidValueError(f"sample_targets: max_volume_fraction must lie in (0, 1], got {max_volume_fraction!r}")
    if not 0.0 < max_coupling < 1.0:
        raise InvalidValueError(f"sample_targets: max_coupling must lie in (0, 1), got {max_coupling!r}")
    ref = _reference(material)
    lo, hi = np.minimum(box[0] * ref, box[1] * ref), np.maximum(box[0] * ref, box[1] * ref)
    out, have, draws = np.empty((n, 4)), 0, 0
    while have < n:
        if draws > 1000 * max(n, 100):
            raise InvalidValueError(
                "sample_targets: (almost) no admissible target in box; widen box, max_volume_fraction or max_coupling"
            )
        t = rng.uniform(lo, hi, size=(max(256, 4 * (n - have)), 4))
        draws += len(t)
        ok = (t[:, 0] > 0) & (t[:, 2] > 0) & (t[:, 3] > 0)
        ok &= t[:, 1] ** 2 <= max_coupling**2 * t[:, 0] * t[:, 2]
        ok &= required_volume_fraction(t, material) <= max_volume_fraction
        take = t[ok][: n - have]
        out[have : have + len(take)] = take
        have += len(take)
    return out


# ---------------------------------------------------------------------------------------------------
# Density filter on the mirrored periodic cell


def hat_kernel(radius: float) -> np.ndarray:
    """Normalized linear cone kernel ``max(0, radius - d)`` (odd square, d in pixels)."""
    if not np.isfinite(radius) or radius < 1.0:
        raise InvalidValueError(f"filter_radius: expected a number >= 1 (pixels), got {radius!r}")
    r = math.ceil(radius) - 1
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    w = np.maximum(radius - np.hypot(dx, dy), 0.0)
    return w / w.sum()


def _fold(cells: np.ndarray) -> np.ndarray:
    """Adjoint of ``mirror_quarter``: sum of the four mirror images of (2q, 2q) onto the quarter."""
    qy, qx = cells.shape[0] // 2, cells.shape[1] // 2
    half = cells[:qy] + cells[: qy - 1 : -1]
    return half[:, :qx] + half[:, : qx - 1 : -1]


def filter_quarter(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Filtered quarter (q, q): convolve the mirrored cell periodically, take the quarter.

    Filtering the full periodic cell (not the quarter with some edge rule) is what makes the
    result the quarter of a filtered *periodic, mirrored* cell: struts that cross the mirror lines or
    the cell edge are smoothed like any other.
    """
    q = x.shape[0]
    return ndimage.convolve(mirror_quarter(x), kernel, mode="wrap")[:q, : x.shape[1]]


def filter_quarter_adjoint(g: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Transpose of `filter_quarter` applied to a quarter sensitivity ``g`` (q, q).

    The filtered cell is mirror-symmetric (the kernel is symmetric and the torus reflections commute
    with it), so ``filter_quarter = fold(conv(mirror(x))) / 4``; its transpose is the same map,
    because ``fold`` is the transpose of ``mirror`` and a symmetric periodic convolution is its own.
    """
    return _fold(ndimage.convolve(mirror_quarter(g), kernel, mode="wrap")) / 4.0


def project(rho: np.ndarray, beta: float, eta: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed Heaviside (tanh) projection and its derivative; ``beta = 0`` is the identity."""
    if beta <= 0:
        return rho, np.ones_like(rho)
    a, b = np.tanh(beta * eta), np.tanh(beta * (1.0 - eta))
    th = np.tanh(beta * (rho - eta))
    return (a + th) / (a + b), beta * (1.0 - th**2) / (a + b)


# ---------------------------------------------------------------------------------------------------
# One seed


def initial_design(rng: np.random.Generator, size: int = 25, volume_fraction=(0.3, 0.7), correlation: float = 3.0,
                   amplitude: float = 0.3) -> np.ndarray:
    """Smooth random quarter (size, size) in [0, 1] around a random volume fraction.

    A uniform initial design has no preferred topology (all its sensitivities are equal up to the
    mirror symmetry), so MMA would grow the same pattern from every start; a smooth random field
    (white noise on the mirrored periodic cell, Gaussian-smoothed with standard deviation
    ``correlation`` pixels, scaled to unit standard deviation) gives each seed its own topology.
    """
    vf = rng.uniform(*volume_fraction)
    noise = ndimage.gaussian_filter(mirror_quarter(rng.standard_normal((size, size))), correlation, mode="wrap")[:size, :size]
    noise = (noise - noise.mean()) / max(noise.std(), 1e-12)
    return np.clip(vf + amplitude * noise, 0.0, 1.0)


def _check_target(target) -> np.ndarray:
    try:
        t = None if isinstance(target, (str, bytes)) else np.asarray(target, dtype=float)
    except (TypeError, ValueError):  # ragged or non-numeric
        t = None
    if t is None or t.shape != (4,) or not np.all(np.isfinite(t)):
        raise InvalidValueError(
            f"target: expected a finite property vector (C11, C12, C22, C33) of shape (4,), got {describe(target)}"
        )
    return t


# Entries (i, j) of C that make the property vector (C11, C12, C22, C33).
_PROPERTY_INDEX = (np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]))


def physical_density(x: np.ndarray, kernel: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Physical quarter density ``H_beta(filter(x))`` (q, q) and ``dH/d(filtered)`` (q, q)."""
    rho, drho = project(filter_quarter(x, kernel), beta)
    # Round-off of the convolution can step a hair outside [0, 1], which the solver rejects.
    return np.clip(rho, 0.0, 1.0), drho


def seed_objective(x: np.ndarray, target: np.ndarray, simp: Material, kernel: np.ndarray, beta: float,
                   scale: float) -> tuple[float, np.ndarray]:
    """Objective ``sum_k ((p_k - t_k) / scale)^2`` of a quarter design ``x`` (q, q) and its gradient (q, q).

    ``p`` are the properties of the mirrored cell of physical density ``physical_density(x)`` under
    ``simp``; the gradient is chained back exactly through projection and filter.
    """
    rho, drho = physical_density(x, kernel, beta)
    c, dc = homogenize_quarter_gradient(rho[None], simp)
    r = (c[0][_PROPERTY_INDEX] - target) / scale  # (4,)
    g_rho = (2.0 / scale) * np.einsum("k,yxk->yx", r, dc[0][:, :, _PROPERTY_INDEX[0], _PROPERTY_INDEX[1]])
    return float(r @ r), filter_quarter_adjoint(g_rho * drho, kernel)


def optimize_seed(target, rng: np.random.Generator | None, material: Material = Material(), *, resolution: int = 50,
                  filter_radius: float = 1.5, max_iter: int = 80, betas=(0.0, 2.0, 8.0, 32.0), stage_iters=None,
                  penal: float = 3.0, e_void: float = 1e-4, xtol: float = 1e-3, rho_init: float = 1e-3,
                  x0=None) -> SeedResult:
    """Binary cell whose homogenized stiffness approaches ``target``, by SIMP + MMA.

    Stages: MMA on the filtered density (``betas[0] = 0``: no projection), then short restarts with a
    tanh Heaviside projection of growing sharpness ``betas[1:]`` that drive the grey density to 0/1
    while keeping the properties on target; then the physical density is thresholded at 0.5 and
    mirrored. Without the projection stages the binary cells miss their targets by twice as much
    (median max-norm error 0.11 instead of 0.05 on sampled targets): thresholding a SIMP grey
    density (a 0.5 pixel is worth 1/8 of a solid one at penal 3) stiffens the cell.

    Parameters
    ----------
    target : array (4,)
        Target (C11, C12, C22, C33) in the units of ``material.E``.
    rng : numpy.random.Generator
        Source of the random initial design (the only randomness); may be None when ``x0`` is given.
    material : Material
        Database material; its ``penal`` and ``E_void`` are replaced by ``penal`` and ``e_void``
        during the optimization, and the final binary cell is homogenized with it unchanged.
    resolution : int
        Cell side in pixels (even); the design variables are the (resolution/2)^2 quarter densities.
    filter_radius : float
        Radius (pixels) of the linear cone density filter, applied on the mirrored periodic cell.
    max_iter : int
        Objective evaluations of MMA, all stages together (each costs one quarter solve, ~6 ms).
    betas : sequence of float
        Projection sharpness of each stage (0 = none). Each stage restarts MMA from the last design.
    stage_iters : sequence of int, optional
        Evaluations per stage; default: 60 % of ``max_iter`` for the first, the rest shared equally.
    penal, e_void : float
        SIMP exponent and relative void modulus used during the optimization.
    xtol : float
        Absolute tolerance on the design variables (nlopt ``xtol_abs``) that ends a stage early.
    rho_init : float
        Initial curvature bound of nlopt's MMA (``rho_init``, nlopt's default 1). The objective's
        gradient is O(1e-3) per pixel, so with the default the first MMA steps are ~1e-3 and
        ``xtol`` ends the stage after two evaluations on some starts (nlopt issue #65); 1e-3 lets
        MMA move from the start.
    x0 : array (resolution/2, resolution/2), optional
        Initial quarter design; default `initial_design` drawn from ``rng``.

    Returns
    -------
    SeedResult
    """
    import nlopt

    t = _check_target(target)
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 4 or resolution % 2:
        raise InvalidValueError(f"resolution: expected an even integer >= 4, got {resolution!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise InvalidValueError(f"max_iter: expected a positive integer, got {max_iter!r}")
    betas = tuple(float(b) for b in betas)
    if not betas or any(b < 0 or not np.isfinite(b) for b in betas):
        raise InvalidValueError(f"betas: expected at least one finite non-negative value, got {betas!r}")
    if stage_iters is None:
        first = max(1, round(0.6 * max_iter)) if len(betas) > 1 else max_iter
        rest, k = max_iter - first, max(len(betas) - 1, 1)
        stage_iters = [first] + [rest // k + (i < rest % k) for i in range(len(betas) - 1)]
    stage_iters = [int(s) for s in stage_iters]
    if len(stage_iters) != len(betas) or any(s < 0 for s in stage_iters):
        raise InvalidValueError(f"stage_iters: expected {len(betas)} non-negative counts, got {stage_iters!r}")
    q = resolution // 2
    kernel = hat_kernel(filter_radius)
    simp = dataclasses.replace(material, penal=penal, E_void=e_void)
    scale = float(_reference(material)[0])
    if x0 is None:
        if not isinstance(rng, np.random.Generator):
            raise InvalidTypeError(f"rng: expected a numpy.random.Generator, got {describe(rng)}")
        x = initial_design(rng, q)
    else:
        x = np.asarray(x0, dtype=float)
        if x.shape != (q, q) or not np.all(np.isfinite(x)):
            raise InvalidValueError(f"x0: expected a finite array of shape ({q}, {q}), got {describe(x0)}")
        x = np.clip(x, 0.0, 1.0)

    history: list[float] = []
    best: dict = {}

    def make_objective(beta):
        def objective(xv, grad):
            value, g = seed_objective(xv.reshape(q, q), t, simp, kernel, beta, scale)
            history.append(value)
            if value < best["value"]:
                best["value"], best["x"] = value, xv.reshape(q, q).copy()
            if grad.size:
                grad[:] = g.ravel()
            return value

        return objective

    # One cell per solve cannot use the solver's cell-parallel threads; pinning this thread to one
    # avoids their hand-off cost (6 ms instead of 30 ms per evaluation, measured on 2 cores).
    import numba

    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        for beta, n_eval in zip(betas, stage_iters):
            if n_eval == 0:
                continue
            opt = nlopt.opt(nlopt.LD_MMA, q * q)
            opt.set_lower_bounds(np.zeros(q * q))
            opt.set_upper_bounds(np.ones(q * q))
            opt.set_min_objective(make_objective(beta))
            opt.set_maxeval(n_eval)
            opt.set_xtol_abs(xtol)
            opt.set_param("rho_init", rho_init)
            best.update(value=np.inf, x=x)
            try:
                opt.optimize(x.ravel())
            except nlopt.RoundoffLimited:  # the best design met so far is still valid
                pass
            x = best["x"]  # the stage's best design (projection changed the objective: no cross-stage best)
        rho, _ = physical_density(x, kernel, betas[-1])
    finally:
        numba.set_num_threads(threads)

    cell = mirror_quarter(rho >= 0.5)
    props = properties_of(homogenize(cell, material))
    return SeedResult(cell=cell, density=rho, target=t, properties=props, error=float(np.max(np.abs(props - t)) / scale),
                      iterations=len(history), history=np.asarray(history))


def optimize_seeds(targets, seeds, material: Material = Material(), **kwargs) -> list[SeedResult]:
    """`optimize_seed` for each target (n, 4) with ``np.random.default_rng(seeds[i])``.

    Each call is independent (a plain loop: this is what one dask task runs on a chunk), and the
    result of a (target, seed) pair does not depend on the chunk it is in.
    """
    t = np.asarray(targets, dtype=float)
    s = np.asarray(seeds)
    if t.ndim != 2 or t.shape[1] != 4:
        raise InvalidValueError(f"targets: expected an array of shape (n, 4), got {describe(targets)}")
    if s.shape != (len(t),) or not np.issubdtype(s.dtype, np.integer):
        raise InvalidValueError(f"seeds: expected {len(t)} integers, got {describe(seeds)}")
    out = []
    for target, seed in zip(t, s):
        res = optimize_seed(target, np.random.default_rng(int(seed)), material, **kwargs)
        res.seed = int(seed)
        out.append(res)
    return out
