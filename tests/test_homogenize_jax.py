"""The differentiable JAX path: same values as NumPy, adjoint gradient checked by finite differences."""

import jax
import jax.numpy as jnp
import numpy as np

from metasys import Material, homogenize
from metasys.fem import homogenize_jax

jax.config.update("jax_enable_x64", True)


def test_values_match_numpy(rng):
    rho = rng.uniform(0.0, 1.0, (12, 14))
    m = Material(penal=3.0)
    np.testing.assert_allclose(np.asarray(homogenize_jax(rho, m)), homogenize(rho, m), rtol=1e-12, atol=1e-14)


def test_gradient_matches_finite_differences(rng):
    m = Material(penal=3.0, E_void=1e-4)
    rho = rng.uniform(0.1, 1.0, (10, 10))
    weights = jnp.asarray(rng.normal(size=(3, 3)))

    def loss(r):
        return jnp.sum(weights * homogenize_jax(r, m)) + jnp.sum((homogenize_jax(r, m) - 0.1) ** 2)

    grad = np.asarray(jax.grad(loss)(jnp.asarray(rho)))
    for _ in range(3):
        d = rng.normal(size=rho.shape)
        h = 1e-6
        fd = (loss(rho + h * d) - loss(rho - h * d)) / (2 * h)
        np.testing.assert_allclose(np.sum(grad * d), fd, rtol=1e-6)


def test_jit_and_vmap(rng):
    rho = jnp.asarray(rng.uniform(0.2, 1.0, (3, 8, 8)))
    c = jax.jit(jax.vmap(homogenize_jax))(rho)
    np.testing.assert_allclose(np.asarray(c), homogenize(np.asarray(rho)), rtol=1e-12, atol=1e-14)
    assert jax.jacrev(lambda r: homogenize_jax(r)[0, 0])(rho[0]).shape == (8, 8)
