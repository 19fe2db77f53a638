"""Compatible aperiodic assembly: MRF over candidate sets solved by dual decomposition (VAE paper Sec. 5.1, Eq. 16-17).

- `mrf_from_candidates` builds the MRF (node cost ``||p - p_target||_inf``, edge cost
  ``theta_G + weight * theta_M``) as an `MRFModel` (arrays; ``to_pgmpy()`` for pgmpy);
- `solve_mrf` minimizes it by dual decomposition into chains;
- `assemble` places the chosen cells and reports compatibility statistics;
- `read_uai`, `read_opengm`, `write_opengm` move models to and from other tools.
"""

from .assembly import Assembly, assemble, count_components, place_cells
from .compatibility import TractionCache, boundary_lines, grid_edges, mrf_from_candidates, theta_g, theta_m, traction_profiles
from .formats import read_opengm, read_uai, read_uai_assignment, write_opengm
from .model import MRFModel, mplp_map
from .solver import MRFResult, energy, solve_mrf

__all__ = ["Assembly", "MRFModel", "MRFResult", "TractionCache", "assemble", "boundary_lines", "count_components", "energy",
           "grid_edges", "mplp_map", "mrf_from_candidates", "place_cells", "read_opengm", "read_uai", "read_uai_assignment",
           "solve_mrf", "theta_g", "theta_m", "traction_profiles", "write_opengm"]
