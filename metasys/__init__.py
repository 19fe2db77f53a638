"""metasys: design of multiscale mechanical metamaterial systems."""

from . import problems
from ._version import __version__
from .candidates import Candidates, diverse_candidates, diversity, greedy_candidates
from .database import Database
from .families import Family, Gradation, family_candidates, find_families, paper_gradation
from .fem import homogenize
from .latent.api import LatentModel
from .material import Material
from .mrf import MRFModel, MRFResult, assemble, mrf_from_candidates, solve_mrf
from .pipeline import Design, design
from .property_optimization import MacroResult, optimize_properties

__all__ = [
    "Candidates", "Database", "Design", "Family", "GeneratedCells", "Gradation", "LatentModel", "MRFModel", "MRFResult",
    "MacroResult", "Material", "assemble", "design", "diverse_candidates", "diversity", "family_candidates",
    "find_families", "generate_cells", "greedy_candidates", "homogenize", "mrf_from_candidates", "optimize_properties",
    "paper_gradation", "problems", "solve_mrf", "__version__"]


_LAZY = {"generate_cells": "metasys.diffusion", "GeneratedCells": "metasys.diffusion"}
"""Names whose modules load JAX and flax: imported on first use so that ``import metasys`` stays light
(``from metasys import *`` imports them)."""


def __getattr__(name):
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
