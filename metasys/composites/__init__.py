"""Particle-matrix composite inverse design (the loss-guided diffusion paper's problem).

- `materials`: the material table (E, nu, rho), its 10 x 10 x 10 chunks and the normalized space;
  `recipe`: how the shipped table is made;
- `microstructure`: random non-overlapping circles on a 64 x 64 grid, or spheres on a 32^3 voxel grid with
  ``dim=3`` (`sample_microstructure`); `forward`: the bulk modulus of a batch of 2D or 3D fields;
- `dataset`: HDF5 datasets of such microstructures (``metasys composites dataset``);
- `homogenize`: bulk modulus under affine boundary displacements, with its adjoint gradient (`bulk_modulus`);
- `backproject`: from a (generated) material image back to table materials, radius and volume fraction;
- `metrics`: eps_r, frac, cov and the target bulk moduli;
- `prior` / `training`: the unconditional diffusion prior over (E, nu, rho) images and its training;
- `guided`: loss-guided sampling with the FEM gradient (J_1, J_2);
- `design`: `inverse_design` (guided sampling, backprojection, K_theta, frac/cov); `result`: its `DesignResult`;
- `baseline`: the Bayesian-optimization baseline; `plots`: sample grids, the K histogram, 3D mid-slices and
  renders (voxel exports: `metasys.export3d`).

The modules that need JAX (`inverse_design`, `load_prior`, ...) are imported on first use.
"""

from .backproject import Backprojection, backproject, k_theta
from .homogenize import bulk_modulus, bulk_modulus_and_gradient
from .materials import MaterialTable, denormalize, load_table, normalize
from .metrics import cov, frac, relative_error, targets_from
from .microstructure import particle_count, sample_microstructure

_LAZY = {"inverse_design": "design", "DesignResult": "result", "evaluate_images": "design", "guided_sample": "guided",
         "load_prior": "prior", "untrained_prior": "prior", "Prior": "prior", "train_prior": "training"}


def __getattr__(name):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Backprojection", "DesignResult", "Prior", "evaluate_images", "guided_sample", "inverse_design", "load_prior",
           "train_prior", "untrained_prior", "MaterialTable", "backproject", "bulk_modulus", "bulk_modulus_and_gradient", "cov",
           "denormalize", "frac", "k_theta", "load_table", "normalize", "particle_count", "relative_error",
           "sample_microstructure", "targets_from"]
