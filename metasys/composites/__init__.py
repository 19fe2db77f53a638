"""Particle-matrix composite inverse design (the loss-guided diffusion paper's problem).

- `materials`: the material table (E, nu, rho), its 10 x 10 x 10 chunks and the normalized space;
  `recipe`: how the shipped table is made;
- `microstructure`: random non-overlapping circles on a 64 x 64 grid (`sample_microstructure`);
- `dataset`: HDF5 datasets of such microstructures (``metasys composites dataset``);
- `homogenize`: bulk modulus under affine boundary displacements, with its adjoint gradient (`bulk_modulus`);
- `backproject`: from a (generated) material image back to table materials, radius and volume fraction;
- `metrics`: eps_r, frac, cov and the target bulk moduli.
"""

from .backproject import Backprojection, backproject, k_theta
from .homogenize import bulk_modulus, bulk_modulus_and_gradient
from .materials import MaterialTable, denormalize, load_table, normalize
from .metrics import cov, frac, relative_error, targets_from
from .microstructure import particle_count, sample_microstructure

__all__ = ["Backprojection", "MaterialTable", "backproject", "bulk_modulus", "bulk_modulus_and_gradient", "cov",
           "denormalize", "frac", "k_theta", "load_table", "normalize", "particle_count", "relative_error",
           "sample_microstructure", "targets_from"]
