"""Periodic homogenization assembled by jax-fem: an independent cross-check of `metasys.fem.homogenize`.

jax-fem builds the global stiffness of the pixel cell from its own QUAD4 element (basix shape functions,
2 x 2 Gauss rule, Jacobian by forward-mode differentiation of the weak form); metasys only adds the
periodicity and the sparse solve. jax-fem's ``solver`` module needs petsc4py, which metasys does not
depend on, so only ``jax_fem.problem.Problem`` and ``jax_fem.generate_mesh`` are used here.

Mesh layout (jax-fem's ``rectangle_mesh``): node ``(ix, iy)`` at ``(ix / nx, iy / ny)`` has index
``ix * (ny + 1) + iy`` and element ``(ix, iy)`` (pixel ``cell[iy, ix]``) has index ``ix * ny + iy``;
element nodes run counter-clockwise from the lower-left corner. Degrees of freedom are
``[u_x, u_y]`` per node, node after node.
"""

from __future__ import annotations

import contextlib
import logging
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from ..errors import InvalidCellError
from ..material import Material
from .homogenization import as_density

# jax-fem prints an ASCII-art banner on import and jax_fem.fe resets NumPy's global print options
# (precision 5, no summarization); keep both side effects out of the caller's process.
_print_options = np.get_printoptions()
with contextlib.redirect_stdout(None):
    from jax_fem import logger as _jaxfem_logger
    from jax_fem.generate_mesh import Mesh, rectangle_mesh
    from jax_fem.problem import Problem
np.set_printoptions(**_print_options)

__all__ = ["assemble_jaxfem", "homogenize_jaxfem"]


@contextlib.contextmanager
def _quiet_jaxfem():
    """Silence jax-fem's DEBUG/INFO log lines (one per assembly) for the duration of a call."""
    level = _jaxfem_logger.level
    _jaxfem_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        _jaxfem_logger.setLevel(level)


class _PixelElasticity(Problem):
    """Linear elasticity with a per-quadrature-point modulus and constitutive matrix.

    ``internal_vars = [modulus (num_cells, num_quads), unit_d (num_cells, num_quads, 3, 3)]``: both
    are data rather than closure constants, so one jit-compiled Problem per resolution serves every
    cell and every material.
    """

    def get_tensor_map(self):
        def stress(u_grad, modulus, unit_d):
            # u_grad (2, 2) = du_i/dx_j -> Voigt strain with engineering shear -> Cauchy stress (2, 2)
            strain = jnp.array([u_grad[0, 0], u_grad[1, 1], u_grad[0, 1] + u_grad[1, 0]])
            s = modulus * unit_d @ strain
            return jnp.array([[s[0], s[2]], [s[2], s[1]]])

        return stress

    def set_params(self, params):
        """``params = (moduli (num_cells,), unit_d (3, 3))``: constant over each element's quadrature points."""
        moduli, unit_d = params
        shape = (self.num_cells, self.fes[0].num_quads)
        self.internal_vars = [np.broadcast_to(np.asarray(moduli, float)[:, None], shape),
                              np.broadcast_to(np.asarray(unit_d, float), shape + (3, 3))]


@lru_cache(maxsize=4)
def _problem(ny: int, nx: int) -> _PixelElasticity:
    """jax-fem Problem on the unit square with nx x ny QUAD4 elements (cached per resolution)."""
    mesh = rectangle_mesh(nx, ny, 1.0, 1.0)
    with _quiet_jaxfem():
        return _PixelElasticity(Mesh(mesh.points, mesh.cells_dict["quad"], ele_type="QUAD4"),
                                vec=2, dim=2, ele_type="QUAD4")


@lru_cache(maxsize=4)
def _periodic_operators(ny: int, nx: int) -> tuple[sp.csr_array, np.ndarray]:
    """Prolongation P (2 (nx+1)(ny+1), 2 nx ny - 2) and affine fields U0 (2 (nx+1)(ny+1), 3).

    P copies the periodic unknowns to all nodes: node (ix, iy) takes the values of torus node
    (ix mod nx, iy mod ny); torus node 0 (the corners) is fixed to remove the rigid translations.
    U0's columns are ``u = eps . x`` for the unit strains e11, e22, g12 with the symmetric shear
    representative ``u = (e11 x + g12 y / 2, e22 y + g12 x / 2)``.
    """
    ix, iy = np.meshgrid(np.arange(nx + 1), np.arange(ny + 1), indexing="ij")  # node order of rectangle_mesh
    torus = ((ix % nx) * ny + iy % ny).ravel()
    rows = np.arange(2 * torus.size)
    cols = (2 * torus[:, None] + np.arange(2)).ravel() - 2
    keep = cols >= 0
    p = sp.csr_array((np.ones(keep.sum()), (rows[keep], cols[keep])), shape=(rows.size, 2 * nx * ny - 2))
    x, y = ix.ravel() / nx, iy.ravel() / ny
    u0 = np.zeros((torus.size, 2, 3))
    u0[:, 0, 0] = x
    u0[:, 1, 1] = y
    u0[:, 0, 2] = y / 2.0
    u0[:, 1, 2] = x / 2.0
    return p, u0.reshape(-1, 3)


def assemble_jaxfem(cell, material: Material = Material()) -> sp.csr_array:
    """Global stiffness of a pixel cell on the unit square, assembled by jax-fem (no boundary conditions).

    Parameters
    ----------
    cell : array (ny, nx)
        Densities in [0, 1]; row 0 is the bottom, column = x.
    material : Material
        Pixel modulus ``material.modulus(cell)`` times ``material.unit_constitutive()``.

    Returns
    -------
    K : scipy CSR array (2 (nx+1)(ny+1), 2 (nx+1)(ny+1))
        Singular (rigid modes), in jax-fem's node order (see the module docstring).
    """
    rho = as_density(cell, "cell")
    if rho.shape[0] != 1:
        raise InvalidCellError(f"cell: expected one cell of shape (ny, nx), got shape {np.shape(cell)}")
    return _assemble(rho[0], material)


def _assemble(rho: np.ndarray, material: Material) -> sp.csr_array:
    # jax defaults to float32, which would cap the agreement with the float64 metasys kernel near 1e-7.
    # The switch is process-wide and part of jit's cache key: setting it before every assembly is cheap
    # and keeps the cached Problem's kernels in float64 even if a caller turned it off in between.
    jax.config.update("jax_enable_x64", True)
    ny, nx = rho.shape
    problem = _problem(ny, nx)
    problem.set_params((material.modulus(rho).T.ravel(), material.unit_constitutive()))
    zero = [np.zeros((problem.fes[0].num_total_nodes, 2))]
    with _quiet_jaxfem():
        # The problem is linear, so the Newton tangent at u = 0 is the stiffness; newton_update stores
        # its COO triplets in problem.I, problem.J, problem.V (duplicates are summed by the conversion).
        problem.newton_update(zero)
    n = problem.num_total_dofs_all_vars
    return sp.csr_array((problem.V, (problem.I, problem.J)), shape=(n, n))


def homogenize_jaxfem(cells, material: Material = Material()) -> np.ndarray:
    """Homogenized stiffness under periodic boundary conditions, with jax-fem's assembly.

    Same model and conventions as `metasys.fem.homogenize` (one Q4 element per pixel, cell of
    side 1, Voigt with engineering shear), solved independently: K from `assemble_jaxfem`,
    periodicity by a prolongation P, ``P^T K P w = -P^T K u0`` per unit macro strain by a sparse LU,
    ``C_ij = (u0_i + P w_i)^T K (u0_j + P w_j)``. Meant for cross-checks and benchmarks, not speed.

    Parameters
    ----------
    cells : array (ny, nx) or (N, ny, nx)
        Densities in [0, 1]; row 0 is the bottom of the cell.
    material : Material
        Base material and density interpolation.

    Returns
    -------
    C : array (3, 3) for one cell or (N, 3, 3)
        Not symmetrized, so its asymmetry measures round-off.
    """
    single = np.ndim(cells) == 2
    rho = as_density(cells)
    p, u0 = _periodic_operators(*rho.shape[1:])
    out = np.empty((len(rho), 3, 3))
    for k, density in enumerate(rho):
        stiffness = _assemble(density, material)
        # The reduced matrix is symmetric: a minimum-degree ordering on A^T + A fills in about a third
        # less than SuperLU's default COLAMD and factorizes about 40% faster on 50 x 50 cells.
        lu = splu((p.T @ stiffness @ p).tocsc(), permc_spec="MMD_AT_PLUS_A")
        w = lu.solve(-(p.T @ (stiffness @ u0)))
        u = u0 + p @ w
        out[k] = u.T @ (stiffness @ u)
    return out[0] if single else out
