"""Finite-element core: periodic homogenization (pixel and voxel cells), macroscale and full-scale structure solves."""

from .boundary import Prescribed
from .full_scale import FullScaleResult, solve_full_scale
from .homogenization import (
    CellFields,
    boundary_tractions,
    homogenize,
    homogenize_fields,
    homogenize_quarter_gradient,
    mirror_quarter,
)
from .macro import MacroModel, MacroSolution, solve_macro
from .voxel import homogenize_voxel_fields, homogenize_voxels, homogenize_voxels_gradient
from .voxel_affine import affine_bulk_modulus_3d

__all__ = [
    "CellFields",
    "FullScaleResult",
    "MacroModel",
    "MacroSolution",
    "Prescribed",
    "boundary_tractions",
    "homogenize",
    "homogenize_fields",
    "homogenize_jax",
    "homogenize_quarter_gradient",
    "homogenize_voxel_fields",
    "homogenize_voxels",
    "homogenize_voxels_gradient",
    "affine_bulk_modulus_3d",
    "mirror_quarter",
    "solve_full_scale",
    "solve_macro",
]


def __getattr__(name):
    # JAX is imported only when the differentiable path is used: it adds a second to start-up.
    if name == "homogenize_jax":
        from .differentiable import homogenize_jax

        return homogenize_jax
    raise AttributeError(f"module 'metasys.fem' has no attribute {name!r}")
