"""Noise-input optimization (paper Sec. 2.2-2.3, 3.1.2): ``generate_cells`` and the candidate generator hook.

The design variable is the noise input ``w`` (n, 32, 32) of the deterministic DDIM generator (eta = 0,
10 steps). The chain ``w -> DDIM -> x_0 (32x32) -> linear upsampling to 50x50 -> [quarter mirror] ->
tanh projection (Eq. 24) -> homogenization (adjoint VJP) -> C -> loss`` is differentiated end to end by
JAX. A batched BFGS (one dense inverse-Hessian per sample, Armijo backtracking) minimizes the loss in
stages of increasing projection sharpness gamma, each warm-started from the previous one.

Upsampling happens before the projection so the 50x50 densities are as sharp as gamma makes them;
the final binary cell is ``upsampled x_0 > 0`` (the gamma -> infinity limit), and its stiffness is
recomputed with :func:`metasys.homogenize`.
"""

from __future__ import annotations

import time
from functools import lru_cache

import numpy as np

from ..errors import InvalidTypeError, InvalidValueError, describe
from ..material import Material
from .cells import GeneratedCells, as_targets, binarization

DEFAULT_GAMMAS = (5.0, 10.0, 20.0, 100.0)
SHARPENED_GAMMAS = DEFAULT_GAMMAS + (300.0, 1000.0)
"""The paper's stages and two sharper ones: the final binary cell then matches the optimized design. Measured with
the shipped weights: paper targets (seed 1) binary loss C_ort 0.37 -> 0.076, C_tet 0.19 -> 0.0064 (+1-4 s); ten
interior database targets, best of 3 noise inputs: 8/10 -> 10/10 targets with every component within 2%."""


BFGS_OPTIONS = {"interpolate": True, "warm_hessian": True}
"""Line-search and continuation options of the stiffness designs' BFGS (see :func:`batched_bfgs`): quadratic
backtracking, and each gamma stage starting from the previous stage's inverse Hessian instead of the identity (the
map from noise to image is the same in every stage). Measured on C_ort / C_tet seed 1 and a target of our own
(6 stages): 251 / 185 / 350 evaluations -> 206 / 103 / 332, binary loss 0.0097 / 0.0066 / 0.0064 -> 0.0070 /
0.0044 / 0.0079, B 0.998-0.999 either way."""


@lru_cache(maxsize=16)
def default_loss(scale: float):
    """Sum of squared differences of C to the target (paper Eq. 29), C measured in units of ``scale``."""
    import jax.numpy as jnp

    def loss(c, target):
        return jnp.sum(((c - target) / scale) ** 2)

    return loss


def _make_pipeline(model, material: Material, steps: int, symmetric: bool, loss_fn, shape=(50, 50)):
    """``(w, params, gamma, targets) -> ((sum loss, (losses (n,), density)), grad)`` and ``images(params, w)``.

    A functional view of :class:`~metasys.diffusion.objective.StiffnessObjective` (tests, benchmarks); the
    compiled DDIM step is cached on the model, so repeated calls reuse the compilation. ``params`` must be the
    model's.
    """
    from .chain import DDIMChain
    from .objective import StiffnessObjective

    def value_and_grad(w, params, gamma, targets):
        if params is not model.params:
            raise InvalidValueError("_make_pipeline: params must be the model's own parameters")
        obj = StiffnessObjective(model, material, steps, symmetric, loss_fn, np.asarray(targets), shape)
        out = obj.evaluate(np.asarray(w), float(gamma))
        return (out["loss"].sum(), (out["loss"], out["rho"])), obj.gradient().reshape(np.shape(w))

    return value_and_grad, DDIMChain(model, steps, symmetric, shape).images


def batched_bfgs(fg, w0: np.ndarray, max_iter: int = 100, tol: float = 1e-2, max_backtracks: int = 12,
                 c1: float = 1e-4, first_step: float = 1.0, max_stall: int = 3, record=None, interpolate: bool = False,
                 state: dict | None = None):
    """Minimize n independent objectives at once with BFGS (dense inverse Hessian per sample).

    ``fg(w (n, d)) -> (f (n,), g (n, d))`` evaluates all samples in one call; ``g`` may be a function of no
    arguments that returns the gradient at that ``w`` (called at once or never, before the next ``fg`` call):
    then line-search trials that no sample accepts cost only the values. Samples stop on
    ``f < tol``, after ``max_iter`` iterations, when the line search finds no decrease, or after
    ``max_stall`` iterations in a row without a relative decrease of 1e-9. Armijo
    backtracking from the full quasi-Newton step; the first step has length ``first_step`` (2-norm);
    pairs with non-positive curvature are skipped. Returns (w, f, iterations (n,)).

    ``interpolate``: a rejected step is shortened to the minimizer of the quadratic through f(0), f'(0) and the
    trial value, kept in [0.1, 0.5] times the step (Nocedal & Wright 3.5), instead of halved. ``state``: a dict
    that receives the inverse Hessians (``"h"`` (n, d, d), ``"fresh"`` (n,)) at the end; passed again (same n, d),
    the next call starts from them instead of the identity (warm start of a continuation stage).
    """
    w = np.array(w0, dtype=np.float64)
    n, d = w.shape
    f, g = fg(w)
    g = g() if callable(g) else g
    if record is not None:
        record(f.copy())
    if state is not None and np.shape(state.get("h")) == (n, d, d):
        h, fresh = state["h"], state["fresh"].copy()
    else:
        h, fresh = np.broadcast_to(np.eye(d), (n, d, d)).copy(), np.ones(n, bool)
    iters = np.zeros(n, int)
    active = (f >= tol) & (iters < max_iter)
    stall = np.zeros(n, int)
    while active.any():
        p = -np.einsum("nij,nj->ni", h, g)
        gp = np.einsum("ni,ni->n", g, p)
        bad = gp >= 0                                         # not a descent direction: reset to steepest descent
        if bad.any():
            h[bad] = np.eye(d)
            p[bad], gp[bad], fresh[bad] = -g[bad], -np.einsum("ni,ni->n", g[bad], g[bad]), True
        alpha = np.where(fresh, first_step / np.maximum(np.linalg.norm(p, axis=1), 1e-30), 1.0)
        pending = active.copy()
        w_new, f_new, g_new = w.copy(), f.copy(), g.copy()
        for _ in range(max_backtracks):
            trial = np.where(pending[:, None], w + alpha[:, None] * p, w)
            ft, gt = fg(trial)
            ok = pending & np.isfinite(ft) & (ft <= f + c1 * alpha * gp)
            if ok.any():                                      # a lazy gradient is computed only where a trial is accepted
                gt = gt() if callable(gt) else gt
                w_new[ok], f_new[ok], g_new[ok] = trial[ok], ft[ok], gt[ok]
            pending &= ~ok
            if not pending.any():
                break
            shrink = 0.5
            if interpolate:
                with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                    q = -gp * alpha / (2.0 * (ft - f - gp * alpha))        # quadratic minimizer / alpha
                shrink = np.where(np.isfinite(q), np.clip(q, 0.1, 0.5), 0.5)
            alpha = np.where(pending, shrink * alpha, alpha)
        failed = pending                                      # no decrease found: converged as far as it goes
        moved = active & ~failed
        s, y = w_new - w, g_new - g
        sy = np.einsum("ni,ni->n", s, y)
        upd = moved & (sy > 1e-12 * np.linalg.norm(s, axis=1) * np.linalg.norm(y, axis=1))
        for i in np.flatnonzero(upd):
            if fresh[i]:                                      # scale the initial inverse Hessian (Nocedal & Wright 6.20)
                h[i] = np.eye(d) * (sy[i] / (y[i] @ y[i]))
                fresh[i] = False
            rho = 1.0 / sy[i]
            hy = h[i] @ y[i]
            h[i] += (rho * rho * (y[i] @ hy) + rho) * np.outer(s[i], s[i]) - rho * (np.outer(hy, s[i]) + np.outer(s[i], hy))
        progress = f - f_new > 1e-9 * np.maximum(np.abs(f), 1e-30)
        stall = np.where(moved & ~progress, stall + 1, 0)
        w, f, g = w_new, f_new, g_new
        iters += moved
        if record is not None:
            record(f.copy())
        active = moved & (f >= tol) & (iters < max_iter) & (stall < max_stall)
    if state is not None:
        state["h"], state["fresh"] = h, fresh
    return w, f, iters


_WRAPPED = {}


def _wrap_loss(loss):
    """``loss(C)`` as ``f(C, target)``; the same wrapper object for the same ``loss`` (keeps compilations cached)."""
    key = id(loss)
    if key not in _WRAPPED or _WRAPPED[key][0] is not loss:
        _WRAPPED[key] = (loss, lambda c, _t: loss(c))
    return _WRAPPED[key][1]


def _check_int(name, value, low=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidTypeError(f"{name}: expected an integer, got {describe(value)}")
    if value < low:
        raise InvalidValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _resolve_model(model):
    from .model import DiffusionModel

    if model is None:
        return DiffusionModel.default()
    if isinstance(model, DiffusionModel):
        return model
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        return DiffusionModel.open(model)               # a directory, or a shipped prior's name ("digits")
    raise InvalidTypeError(f"model: expected a DiffusionModel, a model directory, 'default', 'digits' or None, "
                           f"got {describe(model)}")


def _losses64(loss_fn, stiffness, targets) -> np.ndarray:
    """The reported losses of the final cells, ``loss_fn(C, target)`` per cell in float64: the float32 values the
    optimization runs on differ from them in the fourth digit when the loss is small (1e-3)."""
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(True):
        return np.asarray([float(loss_fn(jnp.asarray(c, jnp.float64), jnp.asarray(t, jnp.float64)))
                           for c, t in zip(stiffness, targets)])


def generate_cells(target=None, n: int = 1, material: Material = Material(), loss=None, seed: int = 0, method: str = "noise",
                   model=None, *, steps: int | None = None, gammas=DEFAULT_GAMMAS, tol: float = 1e-2, max_iter: int = 100,
                   symmetric: bool = False, loss_scale: float | None = None, noise=None, progress: bool = False,
                   response=None, penal: float | None = None, polish: int = 100, polish_width: int = 24,
                   **guided_options) -> GeneratedCells:
    """Generate ``n`` binary 50x50 cells whose homogenized stiffness (or another response) matches ``target``.

    Parameters
    ----------
    target : (3, 3) stiffness, (4,) property vector (C11, C12, C22, C33), or one per sample ((n, 3, 3) / (n, 4))
    n : number of designs, optimized together (vectorized) from different noise inputs
    material : base material of the homogenization (e.g. ``Material.two_phase(1, 100)``)
    loss : optional differentiable JAX function ``loss(C) -> scalar`` of one (3, 3) stiffness; it replaces
        the default sum of squared differences to ``target`` (``target`` may then be None)
    seed : seed of the initial noise inputs (``numpy.random.default_rng(seed)``)
    method : ``"noise"`` (noise-input optimization, DDIM eta = 0) or ``"guided"`` (loss-guided DPS sampling,
        :func:`metasys.diffusion.guided.guided_sample`; extra keyword arguments go there)
    model : DiffusionModel, model directory, or None for the shipped weights
    steps : DDIM steps (default 10 for "noise", 100 for "guided")
    gammas : projection sharpness per stage (default: the paper's 5, 10, 20, 100). At gamma = 100 a few
        percent of the pixels are still gray, and the binary cell can miss the target by far more than the
        relaxed design does; ``SHARPENED_GAMMAS`` adds stages at 300 and 1000 (used by
        :func:`candidate_generator`)
    tol, max_iter : per-stage stop: loss < tol or max_iter BFGS iterations
    symmetric : mirror the lower-left quarter of the upsampled image (orthotropic, doubly symmetric cells)
    loss_scale : unit of C in the default loss; default ``material.E / 100`` so that the loss is the paper's
        Eq. 29 for a stiff phase of E = 100 and means the same relative accuracy for any material scale
    noise : optional initial noise inputs (n, 32, 32) instead of seeded ones
    penal : SIMP exponent of the projected densities during the optimization (the final binary cells do not
        depend on it). Default: 3 for a material with an (almost) empty void phase (``E_void < 1e-3``, the
        database material), else ``material.penal`` (1: the paper's linear two-phase interpolation, Eq. 23).
        With linear interpolation and empty void, the few gray pixels left at gamma = 100 act as cheap
        links that the binary cell loses: on three interior database targets (shipped weights at step
        1000) the relaxed loss reached ~0.01 either way, but the worst relative error of the binary cells
        fell from 109% to 13% with penal = 3.
    response : optional differentiable response of the projected 50x50 density instead of the homogenized C,
        e.g. :class:`metasys.diffusion.hyperelastic.HyperelasticTension` (any object with ``jax_fn()`` returning a
        ``jax.custom_vjp`` function ``density -> tuple of arrays``, and ``responses(density)`` returning the
        same tuple in NumPy); ``loss(*outputs) -> scalar`` is then required and ``target`` is ignored. The
        responses of the final binary cells are in ``GeneratedCells.responses``.
    polish, polish_width : at most ``polish`` greedy pixel flips of each thresholded cell that lower the
        loss of its exact binary stiffness, ``polish_width`` candidate flips homogenized per step
        (`metasys.diffusion.polish.polish_cells`; mirror orbits for ``symmetric``, validity kept for an
        empty void phase); stops at ``loss < tol``. 0 gives the paper's method alone: the thresholded
        design. Noise mode with the stiffness loss only (not ``response=`` or ``method="guided"``).

    Returns
    -------
    GeneratedCells
    """
    from ..fem import homogenize

    t0 = time.time()
    n = _check_int("n", n)
    if not isinstance(material, Material):
        raise InvalidTypeError(f"material: expected a metasys.Material, got {describe(material)}")
    if method not in ("noise", "guided"):
        raise InvalidValueError(f"method must be 'noise' or 'guided', got {method!r}")
    if loss is not None and not callable(loss):
        raise InvalidTypeError(f"loss: expected a function of C (3, 3) returning a scalar, got {describe(loss)}")
    targets = np.zeros((n, 3, 3)) if (loss is not None and target is None) else as_targets(target, n)
    scale = float(loss_scale) if loss_scale is not None else material.E / 100.0
    if not scale > 0:
        raise InvalidValueError(f"loss_scale must be > 0, got {loss_scale!r}")
    loss_fn = default_loss(scale) if loss is None else _wrap_loss(loss)
    model = _resolve_model(model)
    if method == "guided":
        from .guided import guided_sample

        return guided_sample(model, loss_fn, targets, n=n, material=material, seed=seed, steps=steps or 100,
                             symmetric=symmetric, **guided_options)
    if guided_options:
        raise InvalidTypeError(f"generate_cells: unexpected keyword arguments {sorted(guided_options)} for method='noise'")
    steps = _check_int("steps", 10 if steps is None else steps)
    max_iter = _check_int("max_iter", max_iter, low=0)
    polish, polish_width = _check_int("polish", polish, low=0), _check_int("polish_width", polish_width)
    gammas = [float(g) for g in np.atleast_1d(gammas)]
    if not gammas or min(gammas) <= 0:
        raise InvalidValueError(f"gammas: expected positive projection slopes, got {gammas!r}")
    size = model.image_size
    w0 = model.noise(n, seed) if noise is None else np.asarray(noise, np.float32)
    if w0.shape != (n, size, size):
        raise InvalidValueError(f"noise: expected shape ({n}, {size}, {size}), got {w0.shape}")

    if response is not None:
        if loss is None:
            raise InvalidValueError("loss: a function loss(*outputs) of the response outputs is needed with response=")
        if not (hasattr(response, "jax_fn") and hasattr(response, "responses")):
            raise InvalidTypeError(f"response: expected an object with jax_fn() and responses(density), got {describe(response)}")
        return _generate_for_response(model, response, loss, w0, n, material, steps, symmetric, gammas, tol, max_iter,
                                      progress, t0)
    if penal is None:
        penal = 3.0 if material.E_void < 1e-3 else material.penal
    from dataclasses import replace

    opt_material = replace(material, penal=float(penal))
    from .objective import StiffnessObjective

    objective = StiffnessObjective(model, opt_material, steps, symmetric, loss_fn, targets)
    bfgs_state = {}
    history = []
    w = w0.reshape(n, -1).astype(np.float64)
    from ..progress import progress_bar

    with progress_bar("noise optimization", total=len(gammas), enabled=progress) as advance:
        for gamma in gammas:
            ts = time.time()
            losses_per_iter = []
            w, f, iters = batched_bfgs(objective.fg(gamma), w, max_iter=max_iter, tol=tol, record=losses_per_iter.append,
                                       interpolate=BFGS_OPTIONS["interpolate"],
                                       state=bfgs_state if BFGS_OPTIONS["warm_hessian"] else None)
            history.append({"gamma": gamma, "iterations": iters.tolist(), "loss": [x.tolist() for x in losses_per_iter],
                            "final_loss": f.tolist(), "time_s": round(time.time() - ts, 3)})
            advance(1)
    w = w.reshape(n, size, size).astype(np.float32)
    last = objective.evaluate(w, gammas[-1])
    relaxed, rho, x = last["loss"], last["rho"], last["x"]
    cells = x > 0.0
    stiffness = homogenize(cells, material)
    thresholded = _losses64(loss_fn, stiffness, targets)
    final, flips = thresholded, np.zeros(n, int)
    if polish:
        from .polish import polish_cells

        cells, stiffness, _, flips = polish_cells(cells, targets, loss_fn, material, max_flips=polish,
                                                  width=polish_width, tol=tol)
        final = _losses64(loss_fn, stiffness, targets)
    return GeneratedCells(cells=cells, stiffness=stiffness, loss=final, binarization=binarization(np.asarray(rho)),
                          relaxed_loss=np.asarray(relaxed, float), density=np.asarray(rho), noise=w, history=history,
                          target=None if target is None else targets, method="noise", wall_time_s=time.time() - t0,
                          material=material, flips=flips, thresholded_loss=thresholded)


def _image_functions(model, steps: int, symmetric: bool, shape=(50, 50)):
    """``images(params, w) -> x (n, *shape)`` and its VJP ``images_vjp(params, w, ct) -> dw`` (NumPy float32).

    Both run :class:`~metasys.diffusion.chain.DDIMChain`: one compiled DDIM step, cached on the model.
    """
    from .chain import DDIMChain

    chain = DDIMChain(model, steps, symmetric, shape)
    return chain.images, chain.images_vjp


def _generate_for_response(model, response, loss, w0, n, material, steps, symmetric, gammas, tol, max_iter, progress, t0):
    """Noise-input optimization of ``loss(*response(projected density))``: an explicit chain of VJPs.

    ``w -> x`` (DDIM + upsampling, JAX, jitted) ``-> rho = P_gamma(x)`` ``-> outputs`` (the response's
    ``custom_vjp``, e.g. a Newton solve with an adjoint) ``-> loss``; the gradient is pulled back through
    each link in turn (paper Sec. 2.3).
    """
    import jax
    import jax.numpy as jnp

    from ..fem import homogenize
    from ..progress import progress_bar

    images, images_vjp = _image_functions(model, steps, symmetric)
    fn = response.jax_fn()

    def scalar_loss(rho):
        out = fn(rho)
        return loss(*out) if isinstance(out, tuple) else loss(out)

    loss_and_grad = jax.value_and_grad(scalar_loss)
    size = model.image_size
    history = []
    w = w0.reshape(n, -1).astype(np.float64)
    last_rho = {}
    with progress_bar("noise optimization", total=len(gammas), enabled=progress) as advance:
        for gamma in gammas:
            ts = time.time()
            losses_per_iter = []

            def fg(xw, gamma=gamma):
                wj = jnp.asarray(xw.reshape(n, size, size), jnp.float32)
                x = np.asarray(images(model.params, wj), np.float64)
                th = np.tanh(gamma * x)
                rho = 0.5 * (th + 1.0)
                f = np.empty(n)
                g_x = np.empty_like(x)
                for i in range(n):
                    try:
                        val, g_rho = loss_and_grad(jnp.asarray(rho[i]))
                        f[i], g_x[i] = float(val), np.asarray(g_rho, np.float64) * 0.5 * gamma * (1.0 - th[i] ** 2)
                    except InvalidValueError:              # e.g. Newton failure: reject the trial point
                        f[i], g_x[i] = np.inf, 0.0
                last_rho[gamma] = rho
                g = images_vjp(model.params, wj, jnp.asarray(g_x, jnp.float32))
                return f, np.asarray(g, np.float64).reshape(n, -1)

            w, f, iters = batched_bfgs(fg, w, max_iter=max_iter, tol=tol, record=losses_per_iter.append)
            history.append({"gamma": gamma, "iterations": iters.tolist(), "loss": [v.tolist() for v in losses_per_iter],
                            "final_loss": f.tolist(), "time_s": round(time.time() - ts, 3)})
            advance(1)
    w = w.reshape(n, size, size).astype(np.float32)
    x = np.asarray(images(model.params, jnp.asarray(w)), np.float64)
    rho = 0.5 * (np.tanh(gammas[-1] * x) + 1.0)
    relaxed = np.array([float(scalar_loss(jnp.asarray(r))) for r in rho])
    cells = x > 0.0
    outs = [response.responses(c.astype(np.float64)) for c in cells]
    outs = [o if isinstance(o, tuple) else (o,) for o in outs]
    final = np.array([float(loss(*(jnp.asarray(v) for v in o))) for o in outs])
    responses = tuple(np.stack([o[k] for o in outs]) for k in range(len(outs[0])))
    return GeneratedCells(cells=cells, stiffness=homogenize(cells, material), loss=final, binarization=binarization(rho),
                          relaxed_loss=relaxed, density=rho, noise=w, history=history, target=None, method="noise",
                          wall_time_s=time.time() - t0, material=material, responses=responses)


def candidate_generator(model=None, *, max_targets: int | None = 8, max_per_target: int | None = 2, **options):
    """Generator hook for :func:`metasys.selection.candidates.diverse_candidates` (and ``metasys.design``).

    Returns ``generator(targets (m, 4), n_per_target, seed) -> bool cells (m, n_per_target, 50, 50)``:
    each target ``p = (C11, C12, C22, C33)`` is the orthotropic C ``[[C11, C12, 0], [C12, C22, 0], [0, 0, C33]]``;
    the designs are optimized in one vectorized :func:`generate_cells` call. ``options`` go to
    :func:`generate_cells` (defaults here: the database material ``Material()``, ``symmetric=True`` so
    generated cells are doubly mirror-symmetric like database cells, and ``gammas=SHARPENED_GAMMAS`` because
    the binary cells are what the candidates are judged by).

    The cost of one call grows with the number of designs (about 0.06 s per design and BFGS evaluation on a
    2-core CPU), so it is bounded: at most ``max_per_target`` distinct designs per target (the
    ``n_per_target`` slots are filled by repeating them), and at most ``max_targets`` optimized targets
    (more uncovered targets are grouped by k-means on their property vectors; each group's member nearest to
    the group mean is optimized and its designs serve the whole group). ``None`` removes a bound. The last
    result is kept on ``generator.last_result`` (a :class:`GeneratedCells`, stiffness and loss included) and
    the target of each row on ``generator.last_assignment`` (index into ``last_result`` targets per input row).
    """
    if max_targets is not None:
        max_targets = _check_int("max_targets", max_targets)
    if max_per_target is not None:
        max_per_target = _check_int("max_per_target", max_per_target)
    opts = {"material": Material(), "symmetric": True, "gammas": SHARPENED_GAMMAS}
    opts.update(options)
    resolved = {}

    def generator(targets, n_per_target: int = 1, seed: int = 0) -> np.ndarray:
        p = np.asarray(targets, dtype=float)
        if p.ndim != 2 or p.shape[1] != 4:
            raise InvalidValueError(f"targets: expected property vectors (m, 4), got {describe(targets)}")
        k = _check_int("n_per_target", n_per_target)
        m = len(p)
        if m == 0:
            return np.zeros((0, k, 50, 50), bool)
        if "model" not in resolved:
            resolved["model"] = _resolve_model(model)
        reps, assign = _representatives(p, max_targets, seed)
        per = k if max_per_target is None else min(k, max_per_target)
        result = generate_cells(np.repeat(p[reps], per, axis=0), n=len(reps) * per, seed=seed, model=resolved["model"],
                                **opts)
        generator.last_result = result
        generator.last_assignment = assign
        cells = result.cells.reshape(len(reps), per, *result.cells.shape[1:])[assign]
        return cells[:, np.arange(k) % per]

    generator.last_result = None
    generator.last_assignment = None
    return generator


def default_generator(**options):
    """:func:`candidate_generator` over the shipped weights, or None when ``databases/diffusion`` is missing.

    ``metasys.design`` uses it for uncovered targets unless told not to; the weights load on the first call.
    """
    from .model import default_model_path

    path = default_model_path()
    if not ((path / "model.json").exists() and (path / "weights.msgpack").exists()):
        return None
    return candidate_generator(None, **options)


def _representatives(p: np.ndarray, max_targets: int | None, seed: int):
    """(indices of the targets to optimize (r,), group of each target (m,) in 0..r-1)."""
    m = len(p)
    if max_targets is None or m <= max_targets:
        return np.arange(m), np.arange(m)
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=max_targets, n_init=1, random_state=seed).fit(p)
    labels = km.labels_
    groups = np.unique(labels)
    reps = np.array([np.flatnonzero(labels == g)[np.argmin(np.abs(p[labels == g] - km.cluster_centers_[g]).max(axis=1))]
                     for g in groups])
    remap = np.full(labels.max() + 1, -1)
    remap[groups] = np.arange(len(groups))
    return reps, remap[labels]


def append_generated(db, generated, iteration: int = 0, parent=None) -> np.ndarray:
    """Append generated cells to a writable :class:`~metasys.Database` with provenance ``"generated"``.

    ``generated`` is a :class:`GeneratedCells` or a bool array (k, 50, 50) (or (m, k, 50, 50)). The stiffness
    of a :class:`GeneratedCells` is reused when its cells were homogenized with the database material.
    Returns the database indices of the cells that were new (duplicates are skipped).
    """
    stiffness = None
    if isinstance(generated, GeneratedCells):
        cells = generated.cells
        stiffness = generated.stiffness
        if generated.material is None or generated.material != db.material:
            stiffness = None
    else:
        cells = np.asarray(generated)
        if cells.ndim == 4:
            cells = cells.reshape(-1, *cells.shape[2:])
    return db.append(cells, source="generated", parent=parent, iteration=iteration, stiffness=stiffness)
