"""Periodic voxel homogenization assembled by jax-fem (HEX8): an independent cross-check of `homogenize_voxels`.

jax-fem builds the global stiffness of the voxel cell from its own HEX8 element (basix shape functions,
2 x 2 x 2 Gauss rule, Jacobian by forward-mode differentiation of the weak form ``sigma = lam tr(eps) I +
2 mu eps``); metasys adds only the periodicity (a prolongation) and a sparse LU solve, as in the 2D
`metasys.fem.jaxfem_bridge` (whose import also silences jax-fem's banner and restores NumPy's print options).

Voxels are unit cubes (metasys's convention), so the mesh is the box ``[0, nx] x [0, ny] x [0, nz]`` and C is
the energy per unit volume. Mesh layout (jax-fem's ``box_mesh``): node ``(ix, iy, iz)`` at ``(ix, iy, iz)`` has index
``(ix * (ny + 1) + iy) * (nz + 1) + iz`` and element ``(ix, iy, iz)`` (voxel ``cell[iz, iy, ix]``) has index
``(ix * ny + iy) * nz + iz``.
"""

from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from ..errors import InvalidCellError
from .jaxfem_bridge import Problem, _quiet_jaxfem
from .voxel import as_voxels
from .voxel_element import VOIGT_3D, lame

__all__ = ["assemble_jaxfem_hex", "homogenize_voxels_jaxfem"]


class _VoxelElasticity(Problem):
    """Isotropic linear elasticity with per-element Lame parameters as internal variables (num_cells, num_quads)."""

    def get_tensor_map(self):
        def stress(u_grad, lam, mu):
            eps = 0.5 * (u_grad + u_grad.T)
            return lam * jnp.trace(eps) * jnp.eye(3) + 2.0 * mu * eps

        return stress

    def set_params(self, params):
        lam, mu = params
        shape = (self.num_cells, self.fes[0].num_quads)
        self.internal_vars = [np.broadcast_to(np.asarray(x, float)[:, None], shape) for x in (lam, mu)]


@lru_cache(maxsize=4)
def _problem(nz: int, ny: int, nx: int) -> _VoxelElasticity:
    from jax_fem.generate_mesh import Mesh, box_mesh

    mesh = box_mesh(nx, ny, nz, float(nx), float(ny), float(nz))
    with _quiet_jaxfem():
        return _VoxelElasticity(Mesh(mesh.points, mesh.cells_dict["hexahedron"], ele_type="HEX8"),
                                vec=3, dim=3, ele_type="HEX8")


def _to_mesh_order(field: np.ndarray) -> np.ndarray:
    """Voxel field (nz, ny, nx) -> jax-fem element order ``(ix * ny + iy) * nz + iz``."""
    return np.transpose(field, (2, 1, 0)).ravel()


def assemble_jaxfem_hex(E, nu) -> sp.csr_array:
    """Global stiffness of a voxel (E, nu) field on the unit cube, assembled by jax-fem (no boundary conditions).

    Parameters
    ----------
    E, nu : arrays (nz, ny, nx)
        Young's modulus and Poisson's ratio of every voxel.

    Returns
    -------
    K : scipy CSR array (3 n_points, 3 n_points), singular (rigid modes), in jax-fem's node order
        (unit-cube voxels).
    """
    jax.config.update("jax_enable_x64", True)  # float64 kernels (see jaxfem_bridge._assemble)
    e = as_voxels(E, "E", unit_interval=False)
    v = as_voxels(nu, "nu", unit_interval=False)
    if len(e) != 1 or v.shape != e.shape:
        raise InvalidCellError(f"E, nu: expected two fields of one shape (nz, ny, nx), got {np.shape(E)} and {np.shape(nu)}")
    problem = _problem(*e.shape[1:])
    lam, mu = lame(e[0], v[0])
    problem.set_params((_to_mesh_order(lam), _to_mesh_order(mu)))
    with _quiet_jaxfem():
        problem.newton_update([np.zeros((problem.fes[0].num_total_nodes, 3))])  # linear: tangent = stiffness
    n = problem.num_total_dofs_all_vars
    return sp.csr_array((problem.V, (problem.I, problem.J)), shape=(n, n))


@lru_cache(maxsize=4)
def _periodic_operators(nz: int, ny: int, nx: int):
    """Prolongation P (3 n_points, 3 n_voxels - 3) to the torus nodes (node 0 pinned) and affine fields (3 n_points, 6)."""
    ix, iy, iz = np.meshgrid(np.arange(nx + 1), np.arange(ny + 1), np.arange(nz + 1), indexing="ij")
    torus = (((iz % nz) * ny + iy % ny) * nx + ix % nx).ravel()
    rows = np.arange(3 * torus.size)
    cols = (3 * torus[:, None] + np.arange(3)).ravel() - 3
    keep = cols >= 0
    p = sp.csr_array((np.ones(keep.sum()), (rows[keep], cols[keep])), shape=(rows.size, 3 * nx * ny * nz - 3))
    x = np.stack([ix.ravel(), iy.ravel(), iz.ravel()], axis=1).astype(float)  # voxel units
    u0 = np.zeros((torus.size, 3, 6))
    for k, (i, j) in enumerate(VOIGT_3D):
        if i == j:
            u0[:, i, k] = x[:, i]
        else:
            u0[:, i, k] = x[:, j] / 2.0
            u0[:, j, k] = x[:, i] / 2.0
    return p, u0.reshape(-1, 6)


def homogenize_voxels_jaxfem(E, nu) -> np.ndarray:
    """Homogenized (6, 6) stiffness of one voxel (E, nu) field with jax-fem's HEX8 assembly.

    Same model and conventions as `metasys.fem.homogenize_voxel_fields` (unit-cube voxels, Voigt order
    (11, 22, 33, 23, 13, 12), engineering shear), solved independently: ``P^T K P w = -P^T K u0`` by a
    sparse LU, ``C = (u0 + P w)^T K (u0 + P w) / (nx ny nz)``. Not symmetrized. Meant for cross-checks, not speed.
    """
    k = assemble_jaxfem_hex(E, nu)
    p, u0 = _periodic_operators(*np.shape(E))
    w = splu((p.T @ k @ p).tocsc(), permc_spec="MMD_AT_PLUS_A").solve(-(p.T @ (k @ u0)))
    u = u0 + p @ w
    return u.T @ (k @ u) / np.size(E)
