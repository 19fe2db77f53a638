"""Backprojection (the loss-guided paper, Sec. 5.3 and appendix B): from a relaxed material image to a design.

Steps, for an image (3, ny, nx) of (E, nu, rho) per pixel, or (3, nz, ny, nx) per voxel (the same steps in 3D:
spheres instead of circles, face voxels instead of edge pixels):

1. fit a 2-component Gaussian mixture with spherical covariances (scikit-learn) to the pixels in the
   normalized space [-1, 1]^3; its means are the two material estimates, every pixel gets the label
   of its most probable component (a single material if all pixels agree);
2. for each of the two labellings "label 1 / label 0 are the particles": skip it if more than half of
   the edge pixels are particles; skeletonize the particle mask (scikit-image, Lee et al. 1994; 2D and 3D) and take
   each skeleton pixel's distance to the nearest matrix pixel (outside the sample counts as matrix);
   drop skeleton pixels closer than `MIN_DISTANCE` to the matrix, skip the labelling if one lies
   farther than `MAX_RADIUS`; then remove every skeleton pixel j that lies within ``d_i`` of a pixel i
   with ``d_i > d_j``. The survivors are circle centres and their distances the radii;
3. keep the labelling with the lower variance of radii; the radius is the median of its radii
   (the pixel distance plus `RADIUS_OFFSET` [dim]);
   the volume fraction is the share of particle pixels;
4. the nearest table materials (normalized space) of the two estimates.

`k_theta` then averages the bulk modulus over n = 10 microstructures re-sampled with the stochastic
particle count rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidValueError, SolverError, describe
from .materials import MaterialTable, normalize
from .microstructure import RESOLUTIONS

MIN_DISTANCE = 1.5
"""Skeleton pixels closer than this (pixels) to the matrix are spurs, not centres."""
RADIUS_OFFSETS = {2: 0.35, 3: 0.6}
"""Pixels (voxels) added to a centre's distance to the matrix to estimate the radius, by dimension. 2D: the skeleton
pixel nearest the true centre lies up to 0.7 pixel off it, so its distance to the first matrix pixel underestimates
the radius by about 0.35 pixel on average (calibrated on generated samples: mean error below 0.05 pixel). 3D: the
median skeleton distance of 32^3 samples falls 0.60 voxel short of the radius (standard deviation 0.15 over 40
samples of seed 11; the nearest matrix voxel centre lies beyond the sphere, but the skeleton voxel lies off-centre
in three directions and necks between touching spheres add short-distance points)."""
RADIUS_OFFSET = RADIUS_OFFSETS[2]
MAX_FRACTIONS = {2: 0.55, 3: 0.5}
"""`k_theta` counts designs with a larger volume fraction as unplaceable, by dimension (the datasets' largest: 0.5 in
2D, 0.45 in 3D; 0.6 with 100 circles is not placed in minutes, nor 22 spheres of diameter 0.35 at 0.5)."""
MAX_FRACTION = MAX_FRACTIONS[2]
MAX_COUNTS = {2: 150, 3: 400}
"""`k_theta` counts designs needing more particles as unplaceable, by dimension (the datasets' largest counts: 28 in
2D, 255 in 3D, which the 3D relaxation places in 0.1 s)."""
MAX_PARTICLES = MAX_COUNTS[2]
MAX_RADIUS = 0.3
"""A labelling whose skeleton lies farther than this fraction of the side from the matrix is no set of particles."""


@dataclass(frozen=True)
class Backprojection:
    """A design recovered from an image.

    ``matrix`` / ``particle``: indices into the material table; ``radius``: fraction of the side (NaN
    without particles); ``volume_fraction``: share of particle pixels; ``matrix_estimate`` /
    ``particle_estimate`` (3,): the mixture means in physical units; ``distance`` (d_m): summed
    normalized distances of the estimates to their table materials; ``variance`` (V_m): summed
    variances of the mixture components; ``centers`` (k, dim): detected centres (x, y[, z]) as fractions of the
    side; ``detected``: False when neither labelling passed the checks (the minority label is then
    taken as the particles and the radius from its connected components); ``dim``: 2 or 3.
    """

    matrix: int
    particle: int
    radius: float
    volume_fraction: float
    matrix_estimate: np.ndarray
    particle_estimate: np.ndarray
    distance: float
    variance: float
    centers: np.ndarray
    detected: bool
    dim: int = 2


def _surface(mask: np.ndarray) -> np.ndarray:
    """Values of the mask on the grid's boundary: edge pixels (2D) or face voxels (3D), each once."""
    inner = np.zeros(mask.shape, dtype=bool)
    inner[(slice(1, -1),) * mask.ndim] = True
    return mask[~inner]


def _particles(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Centres (k, ndim) in grid index order and grid radii (k,) of the circles/spheres in a particle mask, or None
    to skip this labelling."""
    from scipy.ndimage import distance_transform_edt
    from skimage.morphology import skeletonize

    if _surface(mask).mean() > 0.5 or not mask.any():
        return None
    # outside the sample counts as matrix: pad by one matrix layer before measuring distances
    dist = distance_transform_edt(np.pad(mask, 1))[(slice(1, -1),) * mask.ndim]
    skel = skeletonize(mask)
    pts = np.argwhere(skel)
    d = dist[skel]
    keep = d >= MIN_DISTANCE
    pts, d = pts[keep], d[keep]
    if len(d) == 0 or d.max() > MAX_RADIUS * max(mask.shape):
        return None
    order = np.argsort(-d, kind="stable")
    pts, d = pts[order], d[order]
    alive = np.ones(len(d), dtype=bool)
    # one distance row at a time: a 3D skeleton can hold thousands of points (a full matrix would be 100s of MB)
    for i in range(len(d)):
        if alive[i]:
            gap = np.linalg.norm(pts[i] - pts, axis=-1)
            alive[(gap < d[i]) & (d < d[i])] = False
            alive[i + 1:][(gap[i + 1:] < d[i]) & (d[i + 1:] == d[i])] = False
    return pts[alive], d[alive]


def _check_image(image) -> np.ndarray:
    try:
        img = np.asarray(image, dtype=float)
    except (TypeError, ValueError):  # ragged or non-numeric input: report it as the shape error below
        img = None
    if img is None or img.ndim not in (3, 4) or img.shape[0] != 3 or min(img.shape[1:]) < 4 or not np.all(np.isfinite(img)):
        raise InvalidValueError(f"image: expected a finite material image (3, ny, nx) or (3, nz, ny, nx) with at least "
                                f"4 points per side, got {describe(image)}")
    return img


def backproject(image, table: MaterialTable, *, normalized: bool = False, seed: int = 0) -> Backprojection:
    """Recover (matrix, particle, radius, volume fraction) from a material image (module docstring).

    Parameters
    ----------
    image : array (3, ny, nx) or (3, nz, ny, nx)
        (E [GPa], nu, rho [g/cm^3]) per pixel or voxel, or the normalized values with ``normalized=True``.
    table : MaterialTable
        The available materials.
    seed : int
        Seed of the mixture fit's initialization.
    """
    from sklearn.mixture import GaussianMixture

    img = _check_image(image)
    dim = img.ndim - 1
    x = (img if normalized else np.moveaxis(normalize(np.moveaxis(img, 0, -1)), -1, 0)).reshape(3, -1).T
    shape = img.shape[1:]
    if np.ptp(x, axis=0).max() < 1e-9:  # a single material
        means, labels, variance = x[:1].repeat(2, 0), np.zeros(len(x), dtype=int), 0.0
    else:
        gmm = GaussianMixture(2, covariance_type="spherical", random_state=seed, n_init=1).fit(x)
        means, labels, variance = gmm.means_, gmm.predict(x), float(gmm.covariances_.sum())
    masks = [labels.reshape(shape) == k for k in (0, 1)]
    found = []
    for k in (0, 1):
        particles = _particles(masks[k]) if masks[k].any() and not masks[k].all() else None
        if particles is not None:
            found.append((float(np.var(particles[1])), k, particles))
    detected = bool(found)
    if detected:
        _, k, (pts, radii) = min(found, key=lambda t: t[0])
        radius_px = float(np.median(radii)) + RADIUS_OFFSETS[dim]
        centers = (pts[:, ::-1] + 0.5) / np.array(shape[::-1])  # grid index order (z,) y, x -> (x, y[, z])
    else:
        from scipy.ndimage import label as components

        k = int(masks[1].sum() < masks[0].sum()) if masks[1].any() else 0
        n_parts = components(masks[k])[1] if masks[k].any() and not masks[k].all() else 0
        # radius of the equal circles/spheres holding the particle pixels: pi r^2 = area or 4/3 pi r^3 = volume
        per_part = masks[k].sum() / n_parts if n_parts else 0.0
        radius_px = (float(np.sqrt(per_part / np.pi)) if dim == 2 else float(np.cbrt(per_part * 3.0 / (4.0 * np.pi)))) \
            if n_parts else float("nan")
        centers = np.zeros((0, dim))
    vf = float(masks[k].mean()) if not masks[k].all() else 0.0
    if vf == 0.0:
        radius_px = float("nan")
    idx, dist = table.nearest(means, normalized=True)
    from .materials import denormalize

    return Backprojection(matrix=int(idx[1 - k]), particle=int(idx[k]), radius=radius_px / max(shape),
                          volume_fraction=vf, matrix_estimate=denormalize(means[1 - k]),
                          particle_estimate=denormalize(means[k]), distance=float(dist.sum()), variance=variance,
                          centers=centers, detected=detected, dim=dim)


def k_theta(result: Backprojection, table: MaterialTable, *, n: int = 10, seed: int = 0) -> float:
    """Bulk modulus of a backprojected design, averaged over ``n`` re-sampled microstructures.

    Each microstructure draws its particle count with the stochastic rule (`particle_count` with a
    generator) and random positions (generator ``[seed, i]``), in the dimension of ``result`` (64 x 64 pixels or
    32^3 voxels). NaN if the particles cannot be placed
    (a radius or volume fraction beyond what random placement can pack), and without trying when the volume
    fraction exceeds `MAX_FRACTIONS` or the expected count `MAX_COUNTS` (generated images can backproject to
    one-pixel particles; placing hundreds of them takes minutes).
    """
    from .forward import batch_bulk_modulus
    from .microstructure import particle_measure, sample_microstructure

    dim, res = result.dim, RESOLUTIONS[result.dim]
    matrix, particle = table.values[result.matrix], table.values[result.particle]
    if result.volume_fraction == 0.0 or not np.isfinite(result.radius):
        grid = (1,) + (res,) * dim
        return float(batch_bulk_modulus(np.full(grid, matrix[0]), np.full(grid, matrix[1]), dim)[0])
    radius = float(np.clip(result.radius, 1.0 / res, 0.45))
    if result.volume_fraction > MAX_FRACTIONS[dim] or result.volume_fraction / particle_measure(radius, dim) > MAX_COUNTS[dim]:
        return float("nan")
    try:
        fields = [sample_microstructure(matrix, particle, radius, result.volume_fraction, [seed, i], dim=dim)
                  for i in range(n)]
    except SolverError:
        return float("nan")
    e = np.stack([f[0] for f in fields])
    v = np.stack([f[1] for f in fields])
    return float(np.mean(batch_bulk_modulus(e, v, dim)))
