"""`bulk_modulus` as a differentiable JAX function (for loss-guided sampling).

The value and the exact adjoint gradient come from the NumPy/SciPy solver
(`metasys.composites.homogenize`) through ``jax.pure_callback``; ``jax.custom_vjp`` returns the
stored gradient scaled by the cotangent, so one factorization per sample serves both directions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .homogenize import bulk_modulus_and_gradient


def _host(e, nu):
    k, ge, gn = bulk_modulus_and_gradient(np.asarray(e, dtype=np.float64), np.asarray(nu, dtype=np.float64))
    dtype = np.asarray(e).dtype
    return np.asarray(k, dtype=dtype), ge.astype(dtype), gn.astype(dtype)


def _callback(e, nu):
    shapes = (jax.ShapeDtypeStruct(e.shape[:-2], e.dtype), jax.ShapeDtypeStruct(e.shape, e.dtype),
              jax.ShapeDtypeStruct(e.shape, e.dtype))
    return jax.pure_callback(_host, shapes, e, nu, vmap_method="expand_dims")


@jax.custom_vjp
def bulk_modulus_jax(E, nu):
    """Bulk modulus K (...,) of fields E, nu (..., ny, nx), differentiable under ``jax.grad`` / ``jax.vjp``.

    Same definition and units as `metasys.composites.bulk_modulus`; inputs must be concrete-valued
    floats at run time (E > 0, 0 < nu < 0.5). Float32 inputs are solved in float64 and cast back.
    """
    return _callback(jnp.asarray(E), jnp.asarray(nu))[0]


def _fwd(E, nu):
    k, ge, gn = _callback(jnp.asarray(E), jnp.asarray(nu))
    return k, (ge, gn)


def _bwd(saved, cotangent):
    ge, gn = saved
    c = jnp.asarray(cotangent)[..., None, None]
    return c * ge, c * gn


bulk_modulus_jax.defvjp(_fwd, _bwd)
