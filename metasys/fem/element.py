"""Bilinear four-node (Q4) rectangular element, the single element type of metasys.

Local node order: 0 = (0, 0), 1 = (hx, 0), 2 = (hx, hy), 3 = (0, hy); local degrees of freedom
``[u0x, u0y, u1x, u1y, u2x, u2y, u3x, u3y]``. Strains are Voigt with engineering shear
``[e11, e22, g12]``. The 2 x 2 Gauss rule integrates the rectangle's stiffness exactly.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

NODE_OFFSETS = np.array([[0, 0], [1, 0], [1, 1], [0, 1]])
"""(4, 2) integer (x, y) offsets of the local nodes from the element's lower-left node."""

_GAUSS = np.array([-1.0, 1.0]) / np.sqrt(3.0)


def strain_displacement(hx: float, hy: float, xi: float, eta: float) -> np.ndarray:
    """B matrix (3, 8) at the reference point (xi, eta) in [-1, 1]^2 of an hx-by-hy element."""
    sx = np.array([-1.0, 1.0, 1.0, -1.0])
    sy = np.array([-1.0, -1.0, 1.0, 1.0])
    dndx = sx * (1.0 + sy * eta) / (2.0 * hx)
    dndy = sy * (1.0 + sx * xi) / (2.0 * hy)
    b = np.zeros((3, 8))
    b[0, 0::2] = dndx
    b[1, 1::2] = dndy
    b[2, 0::2] = dndy
    b[2, 1::2] = dndx
    return b


@lru_cache(maxsize=32)
def _gauss_b(hx: float, hy: float) -> np.ndarray:
    return np.stack([strain_displacement(hx, hy, xi, eta) for eta in _GAUSS for xi in _GAUSS])


def element_stiffness(constitutive: np.ndarray, hx: float = 1.0, hy: float = 1.0) -> np.ndarray:
    """Stiffness (8, 8) of an hx-by-hy Q4 element with constitutive matrix (3, 3)."""
    b = _gauss_b(float(hx), float(hy))
    weight = hx * hy / 4.0
    return weight * np.einsum("gia,ij,gjb->ab", b, np.asarray(constitutive, dtype=float), b)


PROPERTY_NAMES = ("C11", "C12", "C22", "C33")


def orthotropic_constitutive(p) -> np.ndarray:
    """Constitutive matrices (..., 3, 3) from property vectors (..., 4) = (C11, C12, C22, C33)."""
    p = np.asarray(p, dtype=float)
    c = np.zeros(p.shape[:-1] + (3, 3))
    c[..., 0, 0] = p[..., 0]
    c[..., 0, 1] = c[..., 1, 0] = p[..., 1]
    c[..., 1, 1] = p[..., 2]
    c[..., 2, 2] = p[..., 3]
    return c


def properties_of(constitutive) -> np.ndarray:
    """Property vectors (..., 4) = (C11, C12, C22, C33) of constitutive matrices (..., 3, 3)."""
    c = np.asarray(constitutive)
    return np.stack([c[..., 0, 0], c[..., 0, 1], c[..., 1, 1], c[..., 2, 2]], axis=-1)


@lru_cache(maxsize=32)
def orthotropic_basis(hx: float = 1.0, hy: float = 1.0) -> np.ndarray:
    """Element stiffness basis (4, 8, 8): ``Ke(p) = sum_q p[q] * basis[q]`` for p = (C11, C12, C22, C33)."""
    basis = np.stack([element_stiffness(orthotropic_constitutive(np.eye(4)[q]), hx, hy) for q in range(4)])
    basis.setflags(write=False)
    return basis


def affine_displacements(hx: float, hy: float) -> np.ndarray:
    """Local nodal displacements (8, 3) of the three unit macro strains e11, e22, g12.

    Column k is ``u = eps_k . x`` at the element's nodes with the symmetric representative
    ``u = (e11 x + g12 y / 2, e22 y + g12 x / 2)``.
    """
    xy = NODE_OFFSETS * np.array([hx, hy])
    u = np.zeros((4, 2, 3))
    u[:, 0, 0] = xy[:, 0]
    u[:, 1, 1] = xy[:, 1]
    u[:, 0, 2] = xy[:, 1] / 2.0
    u[:, 1, 2] = xy[:, 0] / 2.0
    return u.reshape(8, 3)
