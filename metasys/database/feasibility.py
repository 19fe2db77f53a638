"""Signed-distance feasibility field of a property cloud (VAE paper Sec. 5.1).

The cells of a database occupy a region of the 4-D property space (C11, C12, C22, C33). The
macro optimizer needs to know, for any property vector, how far it lies inside (positive) or
outside (negative) that region, with a gradient. As in the paper, the signed L2 distance to the
region's boundary is computed once on a Cartesian grid, its gradient by finite differences, and
both are interpolated afterwards.

The region is estimated from the points: grid nodes whose neighbourhood holds database cells,
closed morphologically and with holes filled, so that gaps smaller than the grid spacing between
points do not count as outside.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.interpolate import RegularGridInterpolator

from ..errors import InvalidValueError, describe


@dataclass
class FeasibilityField:
    """Signed distance (positive inside) on a regular grid over a box of the property space.

    Attributes
    ----------
    lower, upper : array (4,)
        Box of the grid in property units.
    distance : array (G, G, G, G)
        Signed distance in normalized units (each axis of the box scaled to [0, 1]).
    gradient : array (G, G, G, G, 4)
        Finite-difference gradient of ``distance`` w.r.t. the normalized coordinates.
    """

    lower: np.ndarray
    upper: np.ndarray
    distance: np.ndarray
    gradient: np.ndarray

    @classmethod
    def from_points(cls, points: np.ndarray, n_grid: int = 24, margin: float = 0.1) -> FeasibilityField:
        """Field of the region occupied by ``points`` (N, 4), on an ``n_grid``^4 grid."""
        points = np.asarray(points, dtype=float)
        if points.ndim != 2 or points.shape[1] != 4 or len(points) < 2:
            raise InvalidValueError(f"feasibility: expected at least two property vectors (N, 4), got {describe(points)}")
        lo, hi = points.min(axis=0), points.max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        lower, upper = lo - margin * span, hi + margin * span
        h = 1.0 / (n_grid - 1)
        idx = np.rint((points - lower) / (upper - lower) / h).astype(int)
        inside = np.zeros((n_grid,) * 4, bool)
        inside[tuple(idx.T)] = True
        inside = ndimage.binary_closing(inside, structure=ndimage.generate_binary_structure(4, 1), iterations=1)
        inside = ndimage.binary_fill_holes(inside)
        # Distances between grid nodes; the boundary lies half a spacing between inside and outside nodes.
        d_in = ndimage.distance_transform_edt(inside)
        d_out = ndimage.distance_transform_edt(~inside)
        distance = h * np.where(inside, d_in - 0.5, 0.5 - d_out)
        gradient = np.stack(np.gradient(distance, h), axis=-1)
        return cls(lower, upper, distance.astype(np.float32), gradient.astype(np.float32))

    def __post_init__(self):
        axes = tuple(np.linspace(0.0, 1.0, n) for n in self.distance.shape)
        self._d = RegularGridInterpolator(axes, self.distance.astype(float))
        self._g = RegularGridInterpolator(axes, self.gradient.astype(float))

    def __call__(self, p):
        """Signed distance (M,) and gradient (M, 4) w.r.t. property units at property vectors ``p`` (4,) or (M, 4).

        Outside the grid box the value continues linearly: the distance at the nearest box point
        minus the distance to it, so infeasible points always have a gradient pointing back in.
        """
        q = np.asarray(p, dtype=float)
        single = q.ndim == 1
        q = np.atleast_2d(q)
        if q.shape[-1] != 4:
            raise InvalidValueError(f"feasibility: expected property vectors (4,) or (M, 4), got {describe(p)}")
        scale = self.upper - self.lower
        x = (q - self.lower) / scale
        clamped = np.clip(x, 0.0, 1.0)
        offset = x - clamped
        away = np.linalg.norm(offset, axis=1)
        d = self._d(clamped) - away
        # Along clamped axes the grid value does not move with p; only the distance to the box does.
        g = np.where(offset != 0, 0.0, self._g(clamped))
        g = g - np.divide(offset, away[:, None], out=np.zeros_like(offset), where=away[:, None] > 0)
        g = g / scale
        return (float(d[0]), g[0]) if single else (d, g)

    def write(self, group) -> None:
        """Store in an h5py group."""
        group.attrs["lower"] = self.lower
        group.attrs["upper"] = self.upper
        group.attrs["units"] = "signed distance in properties normalized by (upper - lower); positive inside"
        group.create_dataset("distance", data=self.distance, compression="gzip", shuffle=True)
        group.create_dataset("gradient", data=self.gradient, compression="gzip", shuffle=True)

    @classmethod
    def read(cls, group) -> FeasibilityField:
        lower, upper = np.asarray(group.attrs["lower"]), np.asarray(group.attrs["upper"])
        return cls(lower, upper, group["distance"][()], group["gradient"][()])
