"""The stiffness objective of noise-input optimization (paper Eq. 29) as an explicit chain of VJPs (paper Sec. 2.3).

``w -> x`` (:class:`~metasys.diffusion.chain.DDIMChain`: DDIM, upsampling, optional mirror; JAX, one compiled step)
``-> rho = P_gamma(x)`` (tanh projection, Eq. 24) ``-> C`` (periodic homogenization, NumPy, float64) ``-> loss``
(the user's JAX loss, jitted and vmapped). The homogenization's adjoint is the explicit term
``dC/dE_e = u_e^T k0 u_e`` (self-adjoint problem), so one forward solve gives the gradient too.

Why not one jitted ``value_and_grad`` with the solve in a ``pure_callback``: see :mod:`metasys.diffusion.chain`
(compile time); in addition the gradient here is lazy, so trial points rejected by the line search cost only
the forward pass.
"""

from __future__ import annotations

import numpy as np

from ..material import Material
from .chain import DDIMChain


class StiffnessObjective:
    """Loss of ``n`` noise inputs against ``n`` targets, and its gradient, for a projection slope ``gamma``.

    Parameters
    ----------
    model : DiffusionModel
    material : Material     homogenization material (its ``penal`` is the interpolation of the projected densities)
    steps : int             DDIM steps
    symmetric : bool        mirror the lower-left quarter of the upsampled image
    loss_fn : JAX function ``(C (3, 3), target (3, 3)) -> scalar``
    targets : (n, 3, 3)     second argument of ``loss_fn`` per design
    """

    def __init__(self, model, material: Material, steps: int, symmetric: bool, loss_fn, targets, shape=(50, 50)):
        from .polish import _loss_functions

        self.chain = DDIMChain(model, steps, symmetric, shape)
        self.material = material
        self.loss_grad = _loss_functions(loss_fn)
        self.targets = np.asarray(targets, np.float32)
        self.size = model.image_size

    def evaluate(self, w, gamma: float) -> dict:
        """Forward pass at noise inputs ``w`` (n, s, s) or (n, s*s).

        Returns a dict: ``x`` upsampled images (n, ny, nx), ``rho`` projected densities, ``C`` (n, 3, 3), ``loss`` (n,).
        The residuals for :meth:`gradient` are kept.
        """
        import jax.numpy as jnp

        from ..fem.differentiable import _forward

        n = len(self.targets)
        x = self.chain.forward(np.reshape(w, (n, self.size, self.size))).astype(np.float64)
        th = np.tanh(gamma * x)
        rho = 0.5 * (th + 1.0)
        c, sens = _forward(self.material.modulus(rho), self.material)
        f, dc = self.loss_grad(jnp.asarray(c, jnp.float32), jnp.asarray(self.targets))
        self._last = (gamma, th, rho, sens, np.asarray(dc, np.float64))
        return {"x": x, "rho": rho, "C": c, "loss": np.asarray(f, np.float64)}

    def gradient(self) -> np.ndarray:
        """d loss / d w (n, s*s) at the last :meth:`evaluate` point (float64)."""
        gamma, th, rho, sens, dc = self._last
        g_rho = np.einsum("nkl,nyxkl->nyx", dc, sens) * self.material.modulus_derivative(rho)
        g_x = g_rho * 0.5 * gamma * (1.0 - th**2)
        return self.chain.backward(g_x).astype(np.float64).reshape(len(rho), -1)

    def fg(self, gamma: float):
        """``fg(w) -> (loss (n,), gradient thunk)`` for :func:`~metasys.diffusion.generate.batched_bfgs`."""

        def fg(w):
            return self.evaluate(w, gamma)["loss"], self.gradient

        return fg
