"""Trilinear eight-node hexahedral (HEX8) voxel element, the 3D element of metasys.

Conventions
-----------
Voxel arrays are indexed ``cell[z, y, x]`` (x = last axis). The element is the unit cube
``[0, 1]^3`` (one voxel, lengths in voxel units). Local node ``a`` sits at ``NODE_OFFSETS[a] = (dx, dy, dz)``
(jax-fem's HEX8 order: bottom face counter-clockwise from the origin, then the top face); local degrees
of freedom are ``[u0x, u0y, u0z, u1x, ...]`` (24). Strains are Voigt with engineering shear,
``[e11, e22, e33, g23, g13, g12]``. The 2 x 2 x 2 Gauss rule integrates the cube's stiffness exactly.

An isotropic stiffness is ``lam * K_LAMBDA + mu * K_MU`` (Lame parameters), so that an element's
stiffness is linear in its two moduli: the assembly and the adjoint gradient use the two fixed
24 x 24 matrices `LAME_BASIS`.
"""

from __future__ import annotations

import numpy as np

NODE_OFFSETS = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]])
"""(8, 3) integer (dx, dy, dz) offsets of the local nodes from the element's lowest corner."""

VOIGT_3D = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
"""Tensor index pairs of the six Voigt components (11, 22, 33, 23, 13, 12)."""


def isotropic_constitutive_3d(E: float = 1.0, nu: float = 0.3) -> np.ndarray:
    """Constitutive matrix (6, 6) of an isotropic solid, Voigt (11, 22, 33, 23, 13, 12), engineering shear."""
    lam, mu = lame(E, nu)
    return lam * _C_LAMBDA + mu * _C_MU


def lame(E, nu):
    """Lame parameters ``(lambda, mu)`` of Young's modulus and Poisson's ratio (arrays broadcast)."""
    return E * nu / ((1.0 + nu) * (1.0 - 2.0 * nu)), E / (2.0 * (1.0 + nu))


def lame_derivatives(E, nu):
    """``((dlam/dE, dlam/dnu), (dmu/dE, dmu/dnu))`` (arrays broadcast), for the chain rule of the gradients."""
    den = (1.0 + nu) * (1.0 - 2.0 * nu)
    dlam_de = nu / den
    dlam_dnu = E * (1.0 + 2.0 * nu**2) / den**2
    dmu_de = 1.0 / (2.0 * (1.0 + nu))
    dmu_dnu = -E / (2.0 * (1.0 + nu) ** 2)
    return (dlam_de, dlam_dnu), (dmu_de, dmu_dnu)


_C_LAMBDA = np.zeros((6, 6))
_C_LAMBDA[:3, :3] = 1.0
_C_MU = np.diag([2.0, 2.0, 2.0, 1.0, 1.0, 1.0])


def strain_displacement_3d(point) -> np.ndarray:
    """B matrix (6, 24) of the unit voxel at the point ``(x, y, z)`` in ``[0, 1]^3``."""
    p = np.asarray(point, dtype=float)
    # N_a = prod_c (x_c if offset_ac else 1 - x_c): factor and its derivative per node and axis
    f = np.where(NODE_OFFSETS == 1, p, 1.0 - p)  # (8, 3)
    df = np.where(NODE_OFFSETS == 1, 1.0, -1.0)
    grad = np.stack([df[:, c] * np.prod(np.delete(f, c, axis=1), axis=1) for c in range(3)], axis=1)  # (8, 3)
    b = np.zeros((6, 8, 3))
    for row, (i, j) in enumerate(VOIGT_3D):
        b[row, :, i] += grad[:, j]
        if i != j:
            b[row, :, j] += grad[:, i]
    return b.reshape(6, 24)


def _gauss_b() -> np.ndarray:
    g = (1.0 + np.array([-1.0, 1.0]) / np.sqrt(3.0)) / 2.0
    return np.stack([strain_displacement_3d((x, y, z)) for z in g for y in g for x in g])  # (8, 6, 24)


def element_stiffness_3d(constitutive) -> np.ndarray:
    """Stiffness (24, 24) of the unit voxel with a constitutive matrix (6, 6); weight 1/8 per Gauss point."""
    b = _gauss_b()
    return np.einsum("gia,ij,gjb->ab", b, np.asarray(constitutive, dtype=float), b) / 8.0


LAME_BASIS = np.stack([element_stiffness_3d(_C_LAMBDA), element_stiffness_3d(_C_MU)])
"""(2, 24, 24): the unit voxel's stiffness is ``lam * LAME_BASIS[0] + mu * LAME_BASIS[1]``."""
LAME_BASIS.setflags(write=False)

CENTRE_B = strain_displacement_3d((0.5, 0.5, 0.5))
"""(6, 24) B matrix at the voxel centre: the voxel's average strain (exact for the trilinear element)."""


def affine_displacements_3d() -> np.ndarray:
    """Local nodal displacements (24, 6) of the six unit macro strains (Voigt order), unit voxel.

    Column k is ``u = eps_k . x`` at the nodes with the symmetric shear representative, e.g. for g23:
    ``u_y = z / 2``, ``u_z = y / 2``.
    """
    u = np.zeros((8, 3, 6))
    for k, (i, j) in enumerate(VOIGT_3D):
        if i == j:
            u[:, i, k] = NODE_OFFSETS[:, i]
        else:
            u[:, i, k] = NODE_OFFSETS[:, j] / 2.0
            u[:, j, k] = NODE_OFFSETS[:, i] / 2.0
    return u.reshape(24, 6)
