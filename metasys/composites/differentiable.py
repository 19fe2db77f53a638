"""`bulk_modulus` as a differentiable JAX function of 2D or 3D fields (for loss-guided sampling).

`bulk_modulus_jax_fn(dim)` returns the ``jax.custom_vjp`` function for ``dim``-dimensional fields: the value and the
exact adjoint gradient come from the NumPy/SciPy solvers (`metasys.composites.homogenize.bulk_modulus_and_gradient`,
plane stress Q4 pixels in 2D, HEX8 voxels in 3D) through ``jax.pure_callback``; the backward pass returns the stored
gradient scaled by the cotangent, so one solve per sample serves both directions. `bulk_modulus_jax` is the 2D one.
"""

from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from .homogenize import bulk_modulus_and_gradient


@lru_cache(maxsize=2)
def bulk_modulus_jax_fn(dim: int = 2):
    """K (...,) of fields E, nu (..., *grid) with ``len(grid) == dim``, differentiable under ``jax.grad`` / ``jax.vjp``.

    Inputs must be concrete-valued floats at run time (E > 0, 0 < nu < 0.5); float32 inputs are solved in float64
    and cast back.
    """
    if dim not in (2, 3):
        from ..errors import InvalidValueError

        raise InvalidValueError(f"dim: expected 2 or 3, got {dim!r}")

    def host(e, nu):
        k, ge, gn = bulk_modulus_and_gradient(np.asarray(e, dtype=np.float64), np.asarray(nu, dtype=np.float64),
                                              dim=dim)
        dtype = np.asarray(e).dtype
        return np.asarray(k, dtype=dtype), ge.astype(dtype), gn.astype(dtype)

    def callback(e, nu):
        shapes = (jax.ShapeDtypeStruct(e.shape[:-dim], e.dtype), jax.ShapeDtypeStruct(e.shape, e.dtype),
                  jax.ShapeDtypeStruct(e.shape, e.dtype))
        return jax.pure_callback(host, shapes, e, nu, vmap_method="expand_dims")

    @jax.custom_vjp
    def bulk_modulus_jax(E, nu):
        return callback(jnp.asarray(E), jnp.asarray(nu))[0]

    def fwd(E, nu):
        k, ge, gn = callback(jnp.asarray(E), jnp.asarray(nu))
        return k, (ge, gn)

    def bwd(saved, cotangent):
        ge, gn = saved
        c = jnp.asarray(cotangent).reshape(jnp.shape(cotangent) + (1,) * dim)
        return c * ge, c * gn

    bulk_modulus_jax.defvjp(fwd, bwd)
    return bulk_modulus_jax


bulk_modulus_jax = bulk_modulus_jax_fn(2)
"""Bulk modulus K (...,) of fields E, nu (..., ny, nx), differentiable under ``jax.grad`` / ``jax.vjp``.

Same definition and units as `metasys.composites.bulk_modulus`; inputs must be concrete-valued floats at run time
(E > 0, 0 < nu < 0.5). Float32 inputs are solved in float64 and cast back."""
