"""metasys: design of multiscale mechanical metamaterial systems."""

import sys as _sys

from . import _moved
from ._version import __version__
from .database import Database
from .fem import homogenize
from .latent.api import LatentModel
from .macro import MacroResult, Problem, optimize_properties, problems
from .material import Material
from .mrf import MRFModel, MRFResult, assemble, mrf_from_candidates, solve_mrf
from .pipeline import Design, design
from .selection import (
    Candidates,
    Family,
    Gradation,
    diverse_candidates,
    diversity,
    family_candidates,
    find_families,
    greedy_candidates,
    paper_gradation,
)

# `metasys.problems` is public API (``metasys.problems.bridge()``): the module of the macro stage under its old name.
_sys.modules[__name__ + ".problems"] = problems
_moved.install()

__all__ = [
    "Candidates", "Database", "Design", "Family", "GeneratedCells", "Gradation", "LatentModel", "MRFModel", "MRFResult",
    "MacroResult", "Material", "Problem", "assemble", "design", "diverse_candidates", "diversity", "family_candidates",
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
