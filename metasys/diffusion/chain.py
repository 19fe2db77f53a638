"""The deterministic DDIM generator ``w -> x`` and its VJP as a chain of one compiled step (noise-input optimization).

Why a chain and not one jitted function: ``jax.jit(jax.vjp(ddim_sample(..., unroll=True)))`` compiles ten copies of
the U-Net and of its transpose; on the 2-core machine that took 57 s (load 8) before the first design could start,
and ``unroll=False`` makes XLA's while-loop transpose 4-8x slower per evaluation on CPU. Here one DDIM step (U-Net +
update, Eq. 11 with eta = 0) is compiled once with the time step and the schedule coefficients as traced
arguments, so the same executable serves all steps (and all step counts): about 20 s of compilation, and per
evaluation the same arithmetic as the unrolled function (measured 116 ms vs 95 ms CPU time for 10 steps, one
16-channel design). The forward pass keeps each step's VJP residuals (``jax.vjp`` returns them as a pytree that
can leave ``jit``), so the gradient costs only the backward half and is computed only when asked: line-search
trials that the Armijo test rejects never pay for it.
"""

from __future__ import annotations

import numpy as np


def _step_functions(model):
    """Jitted ``fwd(params, x, t, ab_t, ab_prev) -> (x_prev, vjp)`` and ``bwd(vjp, ct) -> ct_x`` (cached on the model)."""
    key = ("ddim_step_vjp",)
    if key not in model._jit_cache:
        import jax
        import jax.numpy as jnp

        from .schedule import ddim_update

        def step(params, x, t, ab_t, ab_prev):
            eps = model.eps_fn(params)(x, jnp.full((x.shape[0],), t, jnp.int32))
            return ddim_update(x, eps, ab_t, ab_prev)[0]

        fwd = jax.jit(lambda params, x, t, a, ap: jax.vjp(lambda xx: step(params, xx, t, a, ap), x))
        bwd = jax.jit(lambda vjp, ct: vjp(ct)[0])
        model._jit_cache[key] = (fwd, bwd)
    return model._jit_cache[key]


def _upsample_functions(shape: tuple, symmetric: bool):
    """Jitted linear map ``x0 (n, s, s) -> x (n, *shape)`` (resize, then quarter mirror) and its transpose."""
    key = (tuple(shape), bool(symmetric))
    if key not in _UPSAMPLE:
        import jax

        from .cells import mirror_quarter_jax
        from .preprocess import resize

        def up(x0):
            x = resize(x0, shape)
            return mirror_quarter_jax(x) if symmetric else x

        # the map is linear, so its VJP does not depend on the point: transpose at zeros of the input's shape
        _UPSAMPLE[key] = (jax.jit(up), jax.jit(lambda x0, ct: jax.vjp(up, x0)[1](ct)[0]))
    return _UPSAMPLE[key]


_UPSAMPLE = {}


class DDIMChain:
    """``w (n, s, s) -> x (n, *shape)``: DDIM (eta = 0, ``steps`` steps), linear upsampling, optional quarter mirror.

    ``forward(w)`` returns ``x`` (NumPy float32) and keeps the residuals of that point; ``backward(ct)`` pulls a
    cotangent ``ct`` (n, *shape) on ``x`` back to ``dw`` (n, s, s) at the last forward point. Memory: the residuals
    of one point, about 5 MB per design and DDIM step (16 channels, 32 x 32).
    """

    def __init__(self, model, steps: int, symmetric: bool = False, shape=(50, 50)):
        from .schedule import ddim_coefficients

        self.model = model
        self.fwd, self.bwd = _step_functions(model)
        self.up, self.up_vjp = _upsample_functions(tuple(shape), symmetric)
        ts, ab_t, ab_prev = ddim_coefficients(model.schedule, steps)
        self.coefficients = [(np.int32(t), np.float32(a), np.float32(ap)) for t, a, ap in zip(ts, ab_t, ab_prev)]
        self._vjps = None
        self._x0 = None

    def forward(self, w, params=None) -> np.ndarray:
        import jax.numpy as jnp

        params = self.model.params if params is None else params
        x = jnp.asarray(w, jnp.float32)
        vjps = []
        for t, a, ap in self.coefficients:
            x, vjp = self.fwd(params, x, t, a, ap)
            vjps.append(vjp)
        self._vjps, self._x0 = vjps, x
        return np.asarray(self.up(x))

    def backward(self, ct) -> np.ndarray:
        import jax.numpy as jnp

        if self._vjps is None:
            raise RuntimeError("DDIMChain.backward needs a forward pass first")
        g = self.up_vjp(self._x0, jnp.asarray(ct, jnp.float32))
        for vjp in reversed(self._vjps):
            g = self.bwd(vjp, g)
        return np.asarray(g)

    def images(self, params, w) -> np.ndarray:
        """``images(params, w) -> x`` (the signature of the former jitted image function)."""
        return self.forward(w, params)

    def images_vjp(self, params, w, ct) -> np.ndarray:
        """``images_vjp(params, w, ct) -> dw``: forward at ``w``, then the pull-back of ``ct``."""
        self.forward(w, params)
        return self.backward(ct)
