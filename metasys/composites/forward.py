"""Bulk modulus of a batch of generated fields, by dimension (the one place 2D and 3D callers reach the FE model).

The dataset builder and `k_theta` hold batches of fields ``(n, *grid)``; ``grid`` is (64, 64) in 2D and
(32, 32, 32) in 3D. In 2D a batch is 3-D and in 3D it is 4-D, so the batch is never ambiguous (a single 3D field
(32, 32, 32) would read as 32 2D fields).
"""

from __future__ import annotations

import inspect

import numpy as np

from ..errors import InvalidValueError, MetasysError
from .microstructure import check_dim


class ForwardModelUnavailable(MetasysError, NotImplementedError):
    """The bulk modulus of 3D fields needs the voxel FE model, and this installation does not provide it."""


def batch_bulk_modulus(E, nu, dim: int = 2) -> np.ndarray:
    """K (n,) [GPa] of a batch of (E [GPa], nu) fields shaped (n, ny, nx) (``dim=2``) or (n, nz, ny, nx) (``dim=3``).

    Raises
    ------
    InvalidValueError
        If E is not a batch of ``dim``-dimensional fields.
    ForwardModelUnavailable
        If ``dim=3`` and `metasys.composites.homogenize.bulk_modulus` has no ``dim`` (the voxel model) yet.
    """
    from .homogenize import bulk_modulus

    dim = check_dim(dim)
    E, nu = np.asarray(E, dtype=float), np.asarray(nu, dtype=float)
    if E.ndim != dim + 1:
        raise InvalidValueError(f"E: expected a batch of {dim}D fields, shape (n{', nz' if dim == 3 else ''}, ny, nx), "
                                f"got shape {E.shape}")
    if dim == 2:
        return np.asarray(bulk_modulus(E, nu), dtype=float).reshape(len(E))
    if "dim" not in inspect.signature(bulk_modulus).parameters:
        raise ForwardModelUnavailable(f"E: the bulk modulus of 3D fields {E.shape[1:]} needs the voxel FE model "
                                      "(bulk_modulus(..., dim=3), issue 23), which this installation lacks; build 3D "
                                      "datasets with --no-k / compute_k=False")
    return np.asarray(bulk_modulus(E, nu, dim=3), dtype=float).reshape(len(E))
