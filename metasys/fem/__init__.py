"""Finite-element core: periodic homogenization, macroscale and full-scale structure solves."""

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
