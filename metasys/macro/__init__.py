"""Macroscale stage: design problems (grid, boundary conditions, targets), the per-element property
optimization of VAE paper Sec. 5.1 (MMA, Eq. 8-15) and its plots.

- `Problem`, `problems.bridge` / `smiley` / `graded`, `load_problem`: problems as data;
- `optimize_properties`: target stiffness per element (`PropertyObjective` + `mma_with_restarts`, run settings
  from `macro_settings` / `resolve_settings` unless given);
- `metasys.macro.plots`: property maps, deformed macro mesh, convergence history.
"""

from . import problems
from .optimization import (
    MacroResult,
    MMARun,
    PropertyObjective,
    candidate_starts,
    macro_settings,
    mma_with_restarts,
    optimize_properties,
    resolve_settings,
    rrmse,
)
from .problems import Problem, load_problem

__all__ = ["MMARun", "MacroResult", "Problem", "PropertyObjective", "candidate_starts", "load_problem", "macro_settings",
           "mma_with_restarts", "optimize_properties", "problems", "resolve_settings", "rrmse"]
