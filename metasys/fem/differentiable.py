"""Differentiable homogenization for JAX: ``jax.grad`` / ``jax.vjp`` through an adjoint.

The forward solve runs the NumPy multifrontal solver through ``jax.pure_callback``; the
derivative is not obtained by differentiating solver iterations but from the adjoint identity of
the periodic problem. Because the fluctuation minimizes the cell energy, the sensitivity of
``C_kl = sum_e E_e (u_e^k)^T k0 u_e^l`` to an element modulus is just the explicit term
``dC_kl / dE_e = (u_e^k)^T k0 u_e^l`` (the problem is self-adjoint), so one forward solve gives the
whole gradient.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ..material import Material
from .homogenization import _element_displacements, _element_matrices, _node_fluctuations


def _forward(moduli: np.ndarray, material: Material):
    """C (..., 3, 3) and dC/dE (..., ny, nx, 3, 3) for element moduli (..., ny, nx)."""
    moduli = np.asarray(moduli, dtype=np.float64)
    batch, (ny, nx) = moduli.shape[:-2], moduli.shape[-2:]
    flat = moduli.reshape(-1, ny, nx)
    ke, u0, _, _ = _element_matrices(ny, nx, material)
    u = _element_displacements(_node_fluctuations(flat, flat, material), np.arange(ny), np.arange(nx), u0)
    sens = np.matmul(np.swapaxes(u, -1, -2), ke @ u)
    c = np.einsum("nyx,nyxkl->nkl", flat, sens)
    c = 0.5 * (c + np.swapaxes(c, 1, 2))
    return c.reshape(batch + (3, 3)), sens.reshape(batch + (ny, nx, 3, 3))


def _callback(moduli, material):
    shapes = (
        jax.ShapeDtypeStruct(moduli.shape[:-2] + (3, 3), moduli.dtype),
        jax.ShapeDtypeStruct(moduli.shape + (3, 3), moduli.dtype),
    )

    def host(m):
        c, s = _forward(m, material)
        return c.astype(m.dtype), s.astype(m.dtype)

    return jax.pure_callback(host, shapes, moduli, vmap_method="expand_dims")


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _stiffness_from_moduli(moduli, material):
    return _callback(moduli, material)[0]


def _fwd(moduli, material):
    c, sens = _callback(moduli, material)
    return c, sens


def _bwd(material, sens, cotangent):
    return (jnp.einsum("...kl,...yxkl->...yx", cotangent, sens),)


_stiffness_from_moduli.defvjp(_fwd, _bwd)


def homogenize_jax(density, material: Material = Material()):
    """Homogenized stiffness as a differentiable JAX function of the pixel densities.

    Parameters
    ----------
    density : JAX or NumPy array (ny, nx) or (..., ny, nx)
        Densities in [0, 1], row 0 at the bottom. Float64 is recommended
        (``jax.config.update("jax_enable_x64", True)``); float32 inputs are solved in float64 on
        the host and cast back.
    material : Material
        Base material and density interpolation (``rho**penal``).

    Returns
    -------
    C : JAX array (..., 3, 3)
        Same values as `metasys.fem.homogenize`; works under ``jax.grad``, ``jax.vjp``,
        ``jax.jit`` and ``jax.vmap``.
    """
    density = jnp.asarray(density)
    if not jnp.issubdtype(density.dtype, jnp.floating):
        density = density.astype(jnp.result_type(float))
    return _stiffness_from_moduli(material.modulus(density), material)
