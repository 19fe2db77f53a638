"""Elasto-plastic response of a cell (noise-optimization paper, Sec. 3.4): perfect J2 plasticity in uniaxial tension.

The cell is the unit square, one bilinear QUAD4 element per pixel (``field[r, c]``, row 0 at the bottom), 2 x 2
Gauss points per element. Each pixel has its own Young's modulus ``E`` and yield stress ``sigma0`` (Poisson's ratio
``nu`` everywhere); for a design they are the linear interpolation (paper Eq. 23) of the two base materials
E0 = 1e3 / sigma0 = 30 (density 0) and E1 = 1e5 / sigma0 = 300 (density 1), each from its own density field.

**Plane strain.** The paper states a small-strain perfect J2 model (its Eq. 37: trial stress, deviator, von Mises
``sqrt(3/2 s:s)``, radial return) on a 2D mesh without naming the 2D idealization. The J2 return is a statement
about the full 3 x 3 stress: its deviator and von Mises measure include ``sigma_zz``. Plane strain
(``eps_zz = 0``, ``sigma_zz`` from the return mapping) keeps Eq. 37 exactly as written, as a closed-form radial
return per Gauss point, and gives the consistent (symmetric) tangent by differentiation; plane stress
(``sigma_zz = 0``) would need a nested local iteration for the unknown ``eps_zz`` and is not a radial return any
more. So the model is plane strain, with the strain, stress and plastic strain stored as 3 x 3 tensors.
Consequences for a homogeneous cell in this test (``sigma_xx = 0``, ``eps_zz = 0``): the elastic slope of the
averaged stress is ``E / (1 - nu^2)`` (1.0989e5 for E1), first yield at ``s_yy = sigma0 / sqrt(1 - nu + nu^2)``
(1.125 sigma0 for nu = 0.3), and the curve then rises slowly to the plateau ``2 / sqrt(3) sigma0`` (1.1547
sigma0; plastic flow with ``d eps_zz^p = 0`` means ``s_zz = 0``); see :func:`uniaxial_closed_form`.

**Return mapping** (paper Eq. 37), per Gauss point at load step k, with the plastic strain ``eps_p^(k-1)`` as the
carried state (equivalent to the paper's ``(eps^(k-1), sigma^(k-1))`` since
``sigma^(k-1) + C:(eps^k - eps^(k-1)) = C:(eps^k - eps_p^(k-1))``)::

    sigma_trial = C : (eps^k - eps_p^(k-1)),   s = dev(sigma_trial),   q = sqrt(3/2 s:s)
    sigma^k     = sigma_trial - (s / q) <q - sigma0>_+
    eps_p^k     = eps_p^(k-1) + (s / q) <q - sigma0>_+ / (2 G)

**Boundary conditions** (paper Fig. 11): bottom edge ``u_y = 0``, bottom-left corner ``u_x = 0``, top edge
``u_y = d`` for each prescribed displacement ``d`` (paper: 5e-4 .. 1e-2 in 20 steps), sides free. Any finite
sequence of ``d`` is a load history (unloading included). The response per step is the averaged stress
``s_yy = int sigma_yy dA`` (cell area 1; equal to the top reaction at equilibrium), paper Eq. 38.

**Solver.** The weak form is a :class:`jax_fem.problem.Problem` (``get_tensor_map`` is the return-mapped stress
with internal variables ``E, sigma0, eps_p`` per Gauss point); its jitted element kernel and Jacobian assemble the
residual and the consistent tangent. jax-fem's own solver needs petsc4py, so metasys runs Newton (SciPy sparse LU,
backtracking on the residual norm) per load step.

**Adjoint** (path-dependent): with ``R(u_k, z_(k-1), theta) = 0`` (equilibrium at step k, ``z`` = plastic strains,
``theta`` = the per-pixel ``E`` and ``sigma0``), the state update ``z_k = g(u_k, z_(k-1), theta)`` and the response
``J = sum_k c_k s_k(u_k, z_(k-1), theta)``, reverse accumulation over the steps k = N..1 with ``zbar_N = 0``::

    ubar_k      = c_k ds_k/du + zbar_k dg/du             (one jax.vjp)
    K_k^T lam_k = ubar_k                                  (free dofs, the LU of the converged tangent)
    thetabar   += c_k ds_k/dtheta + zbar_k dg/dtheta - lam_k dR/dtheta
    zbar_(k-1)  = c_k ds_k/dz + zbar_k dg/dz - lam_k dR/dz

so the gradient flows back through the whole plastic history. Tests check it against central differences.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ..errors import InvalidTypeError, InvalidValueError, describe
from .hyperelastic import NewtonError, _jaxfem, _quiet

__all__ = ["PAPER_DISPLACEMENTS", "PAPER_GROUPS", "PlasticDesign", "PlasticTension", "design_plastic", "j2_return",
           "paper_plastic_curves", "parametric_curve", "plastic_loss", "plastic_state", "plastic_tension_curve",
           "uniaxial_closed_form"]

E_SOFT, E_STIFF = 1e3, 1e5
SIGMA0_SOFT, SIGMA0_STIFF = 30.0, 300.0
PAPER_DISPLACEMENTS = 5e-4 * np.arange(1, 21)
"""The paper's load steps: top displacements 5e-4, 1e-3, ..., 1e-2 (20 steps)."""

PAPER_GROUPS = {
    1: {"E": 4.8e4, "eps_y": 2.7e-3, "sigma_inf": 220.0, "A": (4.0, 1.0, 85.4), "kappa": (1000.0, 88.0, 88.0)},
    2: {"E": 6.8e4, "eps_y": 2.8e-3, "sigma_inf": 250.0, "A": (12.0, 1.0, 46.6), "kappa": (1000.0, 87.0, 87.0)},
    3: {"E": 8.2e4, "eps_y": 2.8e-3, "sigma_inf": 280.0, "A": (18.0, 1.0, 31.4), "kappa": (1000.0, 63.0, 63.0)},
}
"""Paper Table 1: parameters of Eq. 39 for the three target curves of the two-field design (Fig. 15)."""


# --- material point --------------------------------------------------------------------------------------------

def _strain3(u_grad):
    """Plane-strain 3 x 3 small strain of a 2 x 2 displacement gradient (JAX)."""
    import jax.numpy as jnp

    eps = 0.5 * (u_grad + u_grad.T)
    return jnp.zeros((3, 3), dtype=u_grad.dtype).at[:2, :2].set(eps)


def j2_return(eps, eps_p, modulus, sigma0, nu):
    """Radial return of perfect J2 plasticity (paper Eq. 37) at one point (JAX, vmappable).

    Parameters
    ----------
    eps : (3, 3) total strain at this step; eps_p : (3, 3) plastic strain of the previous step
    modulus, sigma0 : Young's modulus and yield stress (stress units); nu : Poisson's ratio

    Returns (sigma (3, 3), eps_p_new (3, 3)); ``sqrt(3/2 dev(sigma):dev(sigma)) <= sigma0`` with equality on plastic
    steps.
    """
    import jax.numpy as jnp

    mu = modulus / (2.0 * (1.0 + nu))
    lam = modulus * nu / ((1.0 + nu) * (1.0 - 2.0 * nu))
    eye = jnp.eye(3, dtype=eps.dtype)
    ee = eps - eps_p
    trial = lam * jnp.trace(ee) * eye + 2.0 * mu * ee
    s = trial - jnp.trace(trial) / 3.0 * eye
    q2 = 1.5 * jnp.sum(s * s)
    positive = q2 > 0.0
    q = jnp.sqrt(jnp.where(positive, q2, 1.0))            # safe square root: no NaN gradient at s = 0
    excess = jnp.where(positive, jnp.maximum(q - sigma0, 0.0), 0.0)
    flow = s / q * excess
    return trial - flow, eps_p + flow / (2.0 * mu)


def uniaxial_closed_form(strain, modulus, sigma0, nu=0.3):
    """Uniaxial plane-strain tension of one homogeneous material (``sigma_xx = 0``, ``eps_zz = 0``), continuous loading.

    Elastic: ``s_yy = E / (1 - nu^2) eps`` (with ``sigma_zz = nu s_yy``) up to first yield at
    ``s_y = sigma0 / sqrt(1 - nu + nu^2)``. Plastic: the principal stresses ``(0, s, t)`` (``t = sigma_zz``) stay on
    the von Mises ellipse ``s^2 - s t + t^2 = sigma0^2``, written ``s = sigma0 (cos th + sin th / sqrt 3)``,
    ``t = sigma0 (cos th - sin th / sqrt 3)``; ``eps_zz = 0`` with the flow rule ``d eps_p = d lam dev(sigma)`` fixes
    ``d lam`` and hence ``d eps_yy / d th`` in closed form, and ``eps(th)`` is one quadrature from first yield
    (``tan th = sqrt 3 (1 - nu) / (1 + nu)``) towards ``th = pi / 6``: the plateau ``s = 2 / sqrt(3) sigma0``
    (``s_zz = 0``), reached only as ``eps -> infinity`` (tabulated to ``th - pi/6 = 1e-9 (th_y - pi/6)``, about 20
    yield strains, then the plateau).

    Returns ``(s_yy (same shape as strain, odd in strain), dict(slope, first_yield, plateau, yield_strain))``.
    """
    from scipy.integrate import cumulative_simpson

    strain = np.asarray(strain, dtype=float)
    r3 = np.sqrt(3.0)
    slope = modulus / (1.0 - nu**2)
    first = sigma0 / np.sqrt(1.0 - nu + nu**2)
    plateau = 2.0 / r3 * sigma0
    eps_y = first / slope

    def deps(th):
        c, s = np.cos(th), np.sin(th)
        sig, tau = sigma0 * (c + s / r3), sigma0 * (c - s / r3)
        dsig, dtau = sigma0 * (-s + c / r3), sigma0 * (-s - c / r3)
        dlam = -3.0 * (dtau - nu * dsig) / (modulus * (2.0 * tau - sig))      # from d eps_zz = 0
        return (dsig - nu * dtau) / modulus + dlam * (2.0 * sig - tau) / 3.0

    th_y = np.arctan(r3 * (1.0 - nu) / (1.0 + nu))
    # th decreases from th_y to pi/6, where eps grows like -log(th - pi/6): integrate in z = -log10((th - pi/6) / gap),
    # where the integrand is smooth (cumulative Simpson on 20001 points)
    gap = th_y - np.pi / 6.0
    z = np.linspace(0.0, 9.0, 20001)
    ths = np.pi / 6.0 + gap * 10.0 ** (-z)
    eps = eps_y + cumulative_simpson(deps(ths) * (-np.log(10.0)) * gap * 10.0 ** (-z), x=z, initial=0.0)
    sig = sigma0 * (np.cos(ths) + np.sin(ths) / r3)
    x = np.abs(strain)
    s_yy = np.where(x <= eps_y, slope * x, np.interp(x, eps, sig, right=plateau))
    return s_yy * np.sign(strain), {"slope": slope, "first_yield": first, "plateau": plateau, "yield_strain": eps_y}


# --- jax-fem problem and the jitted pieces -------------------------------------------------------------------

@lru_cache(maxsize=4)
def _problem(ny: int, nx: int, nu: float):
    """jax-fem Problem of the J2 pixel cell; internal variables per Gauss point: E, sigma0 (cells, quads) and the
    plastic strain (cells, quads, 3, 3)."""
    _, Mesh, rectangle_mesh, Problem = _jaxfem()

    class J2Pixels(Problem):
        def custom_init(self, poisson):
            self.poisson = poisson

        def get_tensor_map(self):
            def stress(u_grad, modulus, sigma0, eps_p):
                sigma, _ = j2_return(_strain3(u_grad), eps_p, modulus, sigma0, self.poisson)
                return sigma[:2, :2]

            return stress

    mesh = rectangle_mesh(nx, ny, 1.0, 1.0)
    with _quiet():
        return J2Pixels(Mesh(mesh.points, mesh.cells_dict["quad"], ele_type="QUAD4"), vec=2, dim=2, ele_type="QUAD4",
                        additional_info=(float(nu),))


@dataclass
class _Setup:
    ny: int
    nx: int
    nu: float
    problem: object
    free: np.ndarray          # free dofs (node-major [u_x, u_y])
    top_y: np.ndarray         # u_y dofs of the top edge (prescribed d)
    n_quads: int
    kff_pattern: tuple        # (indices, indptr, scatter index of V entries kept, kept mask) of K_ff in CSC
    newton_vars: object = field(repr=False)   # (u, ep, E, s0) -> (R (nodes, 2), element tangents (cells, 8, 8))
    jaxfem_newton_vars: object = field(repr=False)   # the same by jax-fem's kernel (per-element jacfwd; tests)
    residual: object = field(repr=False)      # (u, ep, E, s0) -> R (nodes, 2) by jax-fem's compute_residual_vars
    update: object = field(repr=False)        # (u, ep, E, s0) -> (ep_new, s_yy average)
    out_vjp: object = field(repr=False)       # (u, ep, E, s0, zbar, c) -> (ubar, zbar', Ebar, s0bar)
    res_vjp: object = field(repr=False)       # (u, ep, E, s0, lam) -> (zbar', Ebar, s0bar) of lam . R
    stresses: object = field(repr=False)      # (u, ep, E, s0) -> sigma (cells, quads, 3, 3)


@lru_cache(maxsize=4)
def _setup(ny: int, nx: int, nu: float) -> _Setup:
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    problem = _problem(ny, nx, nu)
    fe = problem.fes[0]
    n_nodes = fe.num_total_nodes
    ix, iy = np.meshgrid(np.arange(nx + 1), np.arange(ny + 1), indexing="ij")   # rectangle_mesh node order
    ix, iy = ix.ravel(), iy.ravel()
    bottom, top = np.flatnonzero(iy == 0), np.flatnonzero(iy == ny)
    corner = np.flatnonzero((ix == 0) & (iy == 0))
    fixed = np.unique(np.concatenate([2 * bottom + 1, 2 * top + 1, 2 * corner]))
    free = np.setdiff1d(np.arange(2 * n_nodes), fixed)
    nf = len(free)
    pos = np.full(2 * n_nodes, -1)
    pos[free] = np.arange(nf)
    rows, cols = pos[np.asarray(problem.I)], pos[np.asarray(problem.J)]
    keep = (rows >= 0) & (cols >= 0)
    keys, scatter = np.unique(cols[keep].astype(np.int64) * nf + rows[keep], return_inverse=True)
    indices = (keys % nf).astype(np.int32)
    indptr = np.searchsorted(keys // nf, np.arange(nf + 1)).astype(np.int32)

    cells = jnp.asarray(fe.cells)
    nc, nq = fe.num_cells, fe.num_quads
    shape_grads = jnp.asarray(fe.shape_grads)                 # (cells, quads, 4, 2)
    jxw = jnp.asarray(fe.JxW)                                  # (cells, quads)
    args = [jnp.asarray(a) for a in (problem.physical_quad_points, problem.shape_grads, problem.JxW,
                                      problem.v_grads_JxW)]
    point = jax.vmap(jax.vmap(j2_return, (0, 0, None, None, None)), (0, 0, 0, 0, None))

    def per_quad(E, s0):
        return jnp.broadcast_to(E[:, None], (nc, nq)), jnp.broadcast_to(s0[:, None], (nc, nq))

    def stresses_and_state(u, ep, E, s0):
        grads = jnp.einsum("cav,cqad->cqvd", u[cells], shape_grads)
        eps = jax.vmap(jax.vmap(_strain3))(grads)
        return point(eps, ep, E, s0, nu)

    def update(u, ep, E, s0):
        sigma, ep_new = stresses_and_state(u, ep, E, s0)
        return ep_new, jnp.sum(sigma[..., 1, 1] * jxw)

    def residual(u, ep, E, s0):
        eq, sq = per_quad(E, s0)
        return problem.compute_residual_vars([u], [eq, sq, ep], [])[0]

    def stress2(grad, eps_p, modulus, sigma0):
        sigma, _ = j2_return(_strain3(grad), eps_p, modulus, sigma0, nu)
        return sigma[:2, :2]

    def point_tangent(grad, eps_p, modulus, sigma0):
        sigma, lin = jax.linearize(lambda g: stress2(g, eps_p, modulus, sigma0), grad)
        return sigma, jax.vmap(lin)(jnp.eye(4, dtype=grad.dtype).reshape(4, 2, 2)).reshape(2, 2, 2, 2)

    def newton_vars(u, ep, E, s0):
        eq, sq = per_quad(E, s0)
        grads = jnp.einsum("cav,cqad->cqvd", u[cells], shape_grads)
        sigma, tangent = jax.vmap(jax.vmap(point_tangent))(grads, ep, eq, sq)    # tangent[j, l, i, k] = dP_ik/dg_jl
        k_el = jnp.einsum("cqak,cqjlik,cqbl,cq->caibj", shape_grads, tangent, shape_grads, jxw).reshape(nc, 8, 8)
        f_el = jnp.einsum("cqak,cqik,cq->cai", shape_grads, sigma, jxw)
        return jnp.zeros((n_nodes, 2), u.dtype).at[cells].add(f_el), k_el

    def jaxfem_newton_vars(u, ep, E, s0):
        eq, sq = per_quad(E, s0)
        val, jac = problem.kernel_jac(u[cells].reshape(nc, -1), *args, eq, sq, ep)
        return problem.compute_residual_vars_helper(val, [])[0], jac

    def out_vjp(u, ep, E, s0, zbar, c):
        _, pull = jax.vjp(update, u, ep, E, s0)
        return pull((zbar, c))

    def res_vjp(u, ep, E, s0, lam):
        _, pull = jax.vjp(lambda a, b, d: residual(u, a, b, d), ep, E, s0)
        return pull(lam)

    return _Setup(ny, nx, float(nu), problem, free, 2 * top + 1, nq, (indices, indptr, scatter, keep),
                  jax.jit(newton_vars), jax.jit(jaxfem_newton_vars), jax.jit(residual), jax.jit(update),
                  jax.jit(out_vjp), jax.jit(res_vjp),
                  jax.jit(lambda u, ep, E, s0: stresses_and_state(u, ep, E, s0)[0]))


def _pixel_order(field2d) -> np.ndarray:
    """(ny, nx) pixel array -> jax-fem element order (element (ix, iy) = index ix * ny + iy)."""
    return np.asarray(field2d, dtype=np.float64).T.reshape(-1)


def _from_pixel_order(v, shape) -> np.ndarray:
    return np.asarray(v, dtype=np.float64).reshape(shape[1], shape[0]).T


# --- the incremental solve ---------------------------------------------------------------------------------------

@dataclass
class _History:
    curve: np.ndarray                 # averaged s_yy at every solved step (sub-steps included)
    report: np.ndarray                # indices of the reported steps
    states: list                      # per step: (u (nodes, 2), eps_p before the step)
    factors: list                     # per step: LU of the converged K_ff (adjoint) or None
    setup: _Setup
    newton_iterations: int
    final_eps_p: np.ndarray


def _check_field(name, value, shape=None):
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidTypeError(f"{name}: expected a numeric array (H, W), got {describe(value)}") from None
    if arr.ndim != 2 or min(arr.shape) < 1:
        raise InvalidValueError(f"{name}: expected an array (H, W), got shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise InvalidValueError(f"{name}: expected shape {shape} (the other field's), got {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise InvalidValueError(f"{name}: expected positive finite values, got min {np.nanmin(arr):g}")
    return arr


def _check_displacements(displacements):
    try:
        d = np.asarray(displacements, dtype=float).ravel()
    except (TypeError, ValueError):
        raise InvalidTypeError(f"displacements: expected a sequence of numbers, got {describe(displacements)}") from None
    if d.size == 0 or not np.all(np.isfinite(d)):
        raise InvalidValueError(f"displacements: expected a non-empty sequence of finite numbers, got {displacements!r}")
    return d


def _check_nu(nu):
    if not isinstance(nu, (int, float, np.floating)) or not -1.0 < float(nu) < 0.5:
        raise InvalidValueError(f"nu: expected a Poisson's ratio in (-1, 0.5), got {nu!r}")
    return float(nu)


MAX_BISECTIONS = 4
"""A load increment whose Newton solve fails is split in two, recursively, down to 1/16 of it (the sub-steps join the
history, so the adjoint follows them). Found with the digit prior at 32 x 32: the initial noise of one single-field start
gave a cell whose Newton solve failed at the paper's first increment, so that design had loss inf and never started."""


def _solve_history(E, sigma0, displacements, nu, substeps=1, tol=1e-10, max_newton=25, factor=False) -> _History:
    """Load history of the cell with per-pixel ``E``, ``sigma0`` (ny, nx) at top displacements ``displacements``.

    Every increment is split into ``substeps`` equal steps, and a step whose Newton solve fails is halved
    (`MAX_BISECTIONS`); ``report`` indexes the steps that end at ``displacements``.
    """
    import jax.numpy as jnp
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    ny, nx = E.shape
    s = _setup(ny, nx, nu)
    ej, sj = jnp.asarray(_pixel_order(E)), jnp.asarray(_pixel_order(sigma0))
    n_nodes = (nx + 1) * (ny + 1)
    indices, indptr, scatter, keep = s.kff_pattern
    nf = len(s.free)
    loads = []                                    # (top displacement, reported?)
    d_prev = 0.0
    for d in displacements:
        for k in range(1, substeps + 1):
            loads.append((d_prev + (d - d_prev) * k / substeps, k == substeps))
        d_prev = d
    u = np.zeros((n_nodes, 2))
    y_nodes = np.tile(np.arange(ny + 1) / ny, nx + 1)     # rectangle_mesh node order: index ix * (ny + 1) + iy
    ep = jnp.zeros((ny * nx, s.n_quads, 3, 3))
    prev = None                                   # (d, u) of the step before: secant predictor
    d_last = 0.0
    curve, report, states, factors = [], [], [], []
    iterations = 0

    def kff(jac):
        data = np.bincount(scatter, weights=np.asarray(jac).reshape(-1)[keep], minlength=len(indices))
        return sp.csc_matrix((data, indices, indptr), shape=(nf, nf))

    def step_to(d, depth=0):
        """Solve the step to top displacement ``d``; an increment whose Newton fails is halved (up to 2^-MAX_BISECTIONS)."""
        nonlocal u, ep, prev, d_last, iterations
        if prev is None:                          # first step: the homogeneous elastic column u_y = d y
            guess = np.zeros_like(u)
            guess[:, 1] = d * y_nodes
        else:
            guess = u.copy()
            if prev[0] != d_last:                 # secant predictor from the last two steps
                guess += (d - d_last) / (d_last - prev[0]) * (u - prev[1])
        guess.reshape(-1)[s.top_y] = d
        try:
            u_new, lu, its = _newton(s, guess, ep, ej, sj, kff, splu, tol, max_newton, factor, d)
        except NewtonError:
            if depth == MAX_BISECTIONS:
                raise
            step_to(0.5 * (d_last + d), depth + 1)
            step_to(d, depth + 1)
            return
        prev, d_last, u = (d_last, u), d, u_new
        iterations += its
        states.append((u, ep))
        factors.append(lu)
        ep, s_avg = s.update(jnp.asarray(u), ep, ej, sj)
        curve.append(float(s_avg))

    with _quiet():
        for d, reported in loads:
            step_to(d)
            if reported:
                report.append(len(curve) - 1)
    return _History(np.asarray(curve), np.asarray(report), states, factors, s, iterations, np.asarray(ep))


def _newton(s, u, ep, ej, sj, kff, splu, tol, max_newton, factor, d):
    import jax.numpy as jnp

    free = s.free

    def assemble(x):
        res, jac = s.newton_vars(jnp.asarray(x), ep, ej, sj)
        return np.asarray(res).reshape(-1), jac

    res, jac = assemble(u)
    norm = np.linalg.norm(res[free])
    for it in range(max_newton + 1):
        scale = max(1.0, abs(float(res[s.top_y].sum())))
        if norm <= tol * scale:
            return u, (_factor(kff(jac), splu) if factor else None), it
        if it == max_newton:
            break
        try:
            du = _factor(kff(jac), splu).solve(-res[free])
        except RuntimeError:                           # singular tangent
            break
        step = 1.0
        for _ in range(12):
            trial = u.copy()
            trial.reshape(-1)[free] += step * du
            res_t, jac_t = assemble(trial)
            norm_t = np.linalg.norm(res_t[free])
            if np.isfinite(norm_t) and (norm_t < norm * (1.0 - 1e-4 * step) or norm_t <= tol * scale):
                break
            step *= 0.5
        else:
            break
        u, res, jac, norm = trial, res_t, jac_t, norm_t
    raise NewtonError(f"Newton did not converge at top displacement {d:g} (residual {norm:.3g} after "
                      f"{max_newton} iterations); use more substeps")


def _factor(k, splu):
    """Sparse LU of the (symmetric) tangent; SuperLU in symmetric mode (diagonal pivots first)."""
    return splu(k, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.1, options={"SymmetricMode": True})


def _curve_and_vjp(E, sigma0, displacements, nu, cot, substeps=1, tol=1e-10, max_newton=25):
    """Averaged stress per reported step (m,) and ``d(cot . curve)/dE``, ``d(cot . curve)/dsigma0`` (ny, nx).

    ``cot`` is a vector (m,) or a function ``curve -> cot`` (for a loss whose cotangent depends on the curve).
    """
    import jax.numpy as jnp

    h = _solve_history(E, sigma0, displacements, nu, substeps, tol, max_newton, factor=True)
    curve = h.curve[h.report]
    c = np.asarray(cot(curve) if callable(cot) else cot, dtype=np.float64).reshape(curve.shape)
    c_all = np.zeros(len(h.curve))
    c_all[h.report] = c
    s = h.setup
    ej, sj = jnp.asarray(_pixel_order(E)), jnp.asarray(_pixel_order(sigma0))
    zbar = jnp.zeros_like(jnp.asarray(h.final_eps_p))
    g_e, g_s = np.zeros(E.size), np.zeros(E.size)
    for k in range(len(h.curve) - 1, -1, -1):
        u, ep = h.states[k]
        uj = jnp.asarray(u)
        ubar, zb1, eb1, sb1 = s.out_vjp(uj, ep, ej, sj, zbar, jnp.float64(c_all[k]))
        rhs = np.asarray(ubar).reshape(-1)[s.free]
        lam = np.zeros(u.size)
        if np.any(rhs):
            lam[s.free] = h.factors[k].solve(rhs, trans="T")
        zb2, eb2, sb2 = s.res_vjp(uj, ep, ej, sj, jnp.asarray(lam.reshape(-1, 2)))
        zbar = zb1 - zb2
        g_e += np.asarray(eb1) - np.asarray(eb2)
        g_s += np.asarray(sb1) - np.asarray(sb2)
    return curve, _from_pixel_order(g_e, E.shape), _from_pixel_order(g_s, E.shape)


def plastic_tension_curve(E, sigma0, displacements=PAPER_DISPLACEMENTS, nu=0.3, *, substeps: int = 1,
                          tol: float = 1e-10, max_newton: int = 25) -> np.ndarray:
    """Averaged stress ``s_yy`` (stress units, cell area 1) per load step of a cell in uniaxial tension.

    Parameters
    ----------
    E, sigma0 : (H, W) per-pixel Young's modulus and yield stress (positive; ``field[r, c]``, row 0 at the bottom)
    displacements : (m,) top-edge displacements in order: the load history (paper: ``PAPER_DISPLACEMENTS``,
        5e-4 .. 1e-2); it may unload
    nu : Poisson's ratio of every pixel
    substeps : Newton sub-steps per increment (part of the load history; responses at ``displacements`` only)
    tol, max_newton : Newton stop ``||R_free|| <= tol * max(1, |top reaction|)``; iterations per step before the
        step is halved (`MAX_BISECTIONS` times at most, then :class:`~metasys.diffusion.hyperelastic.NewtonError`)

    Returns
    -------
    (m,) NumPy array. Plane strain, bottom ``u_y = 0``, corner ``u_x = 0`` (see the module docstring).
    """
    E = _check_field("E", E)
    sigma0 = _check_field("sigma0", sigma0, E.shape)
    d = _check_displacements(displacements)
    substeps = _check_int("substeps", substeps)
    h = _solve_history(E, sigma0, d, _check_nu(nu), substeps, float(tol), _check_int("max_newton", max_newton))
    return h.curve[h.report]


def plastic_state(E, sigma0, displacements=PAPER_DISPLACEMENTS, nu=0.3, *, substeps: int = 1,
                  tol: float = 1e-10) -> dict:
    """Gauss-point state after the last load step (for checks and plots).

    Returns a dict of ``stress`` (H, W, 4, 3, 3) (plane strain: ``stress[..., 2, 2] = sigma_zz``),
    ``plastic_strain`` (H, W, 4, 3, 3) after the last step, ``plastic_increment`` (H, W, 4, 3, 3) of the last step,
    and ``curve`` (m,) as :func:`plastic_tension_curve`. Pixel ``[r, c]``, its 4 Gauss points in jax-fem's order.
    """
    import jax.numpy as jnp

    E = _check_field("E", E)
    sigma0 = _check_field("sigma0", sigma0, E.shape)
    h = _solve_history(E, sigma0, _check_displacements(displacements), _check_nu(nu), _check_int("substeps", substeps),
                       float(tol))
    u, ep = h.states[-1]
    s = h.setup
    sig = s.stresses(jnp.asarray(u), ep, jnp.asarray(_pixel_order(E)), jnp.asarray(_pixel_order(sigma0)))
    ny, nx = E.shape

    def grid(a):
        return np.swapaxes(np.asarray(a, np.float64).reshape(nx, ny, *a.shape[1:]), 0, 1)

    return {"stress": grid(sig), "plastic_strain": grid(h.final_eps_p),
            "plastic_increment": grid(h.final_eps_p - np.asarray(ep)), "curve": h.curve[h.report]}


def _check_int(name, value, low=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidTypeError(f"{name}: expected an integer, got {describe(value)}")
    if value < low:
        raise InvalidValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


# --- targets ------------------------------------------------------------------------------------------------------

def parametric_curve(x, E, eps_y, sigma_inf, A, kappa):
    """Paper Eq. 39: ``E x`` for ``x <= eps_y``, else ``sigma_y + sum_i A_i (1 - exp(-kappa_i (x - eps_y)))``.

    ``sigma_y = E eps_y``; ``sigma_inf`` is the asymptote and must equal ``sigma_y + sum(A)`` within 1e-6 relative
    when given (the paper's parametrization ``{E, eps_y, sigma_inf, A_i, kappa_i}``); pass None to skip the check.
    Returns the stresses (same shape as ``x``).
    """
    x = np.asarray(x, dtype=float)
    A, kappa = np.atleast_1d(np.asarray(A, float)), np.atleast_1d(np.asarray(kappa, float))
    if A.shape != kappa.shape:
        raise InvalidValueError(f"A, kappa: expected the same length, got {A.shape} and {kappa.shape}")
    if not (E > 0 and eps_y > 0):
        raise InvalidValueError(f"E, eps_y: expected positive values, got E={E!r}, eps_y={eps_y!r}")
    sy = E * eps_y
    if sigma_inf is not None and not np.isclose(sy + A.sum(), sigma_inf, rtol=1e-6):
        raise InvalidValueError(f"sigma_inf: expected E * eps_y + sum(A) = {sy + A.sum():g}, got {sigma_inf!r}")
    tail = sy + np.sum(A * (1.0 - np.exp(-kappa * (x[..., None] - eps_y))), axis=-1)
    return np.where(x <= eps_y, E * x, tail)


def paper_plastic_curves(displacements=PAPER_DISPLACEMENTS) -> dict:
    """Target curves of paper Table 1 (Eq. 39) at ``displacements``: ``{group: stresses (m,)}`` for groups 1-3."""
    x = _check_displacements(displacements)
    return {g: parametric_curve(x, **p) for g, p in PAPER_GROUPS.items()}


def plastic_loss(target):
    """Paper Eq. 38: ``loss(curve) = mean((curve - target)^2)`` (stress units squared; JAX or NumPy arrays)."""
    t = np.asarray(target, dtype=np.float64)

    def loss(curve):
        return ((curve - t) ** 2).mean()

    return loss


# --- the response object ------------------------------------------------------------------------------------------

def _resize_np(arr, shape):
    arr = np.asarray(arr, dtype=np.float64)
    if arr.shape == tuple(shape):
        return arr
    from .preprocess import resize

    return np.asarray(resize(arr[None], tuple(shape))[0], dtype=np.float64)


def _phase_pair(name, value):
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InvalidTypeError(f"{name}: expected (soft, stiff) values, got {describe(value)}") from None
    if not 0 < lo <= hi or not np.isfinite(hi):
        raise InvalidValueError(f"{name}: expected 0 < soft <= stiff, got {value!r}")
    return lo, hi


class PlasticTension:
    """Averaged-stress curve of a cell in uniaxial tension (perfect J2 plasticity, plane strain), differentiable.

    Plane strain (not plane stress) because the paper's radial return (Eq. 37) acts on the full 3D deviator; in
    plane strain it stays a closed-form return per Gauss point with ``sigma_zz`` as an output (module docstring).

    Calling the object on densities (ny, nx) returns the curve (m,) (NumPy); :meth:`jax_fn` gives the
    ``jax.custom_vjp`` function ``density -> curve`` that :func:`metasys.diffusion.generate_cells` uses with
    ``response=``; the loss of paper Eq. 38 is :func:`plastic_loss` (``loss=plastic_loss(target)``).

    Parameters
    ----------
    field : "both", "E" or "sigma0"
        What the density designs. ``"both"``: a two-phase composite, the density interpolates E and sigma0 together
        (Eq. 23). ``"E"`` / ``"sigma0"``: that field only; the other is ``fixed`` (paper Fig. 13 / 14).
    fixed : density (h, w) in [0, 1] or a scalar of the field that is not designed (``field`` "E" or "sigma0");
        resized to the mesh if its shape differs
    displacements : top displacements of the load history (paper: ``PAPER_DISPLACEMENTS``)
    nu : Poisson's ratio
    E, sigma0 : (soft, stiff) values of the two base materials (paper: (1e3, 1e5) and (30, 300))
    resolution : (ny, nx) or None: FE mesh; densities of another shape are resized to it (linear, differentiable
        in :meth:`jax_fn`). The paper solves on the 32 x 32 image.
    substeps, tol, max_newton : as :func:`plastic_tension_curve`
    """

    def __init__(self, field: str = "both", fixed=None, displacements=PAPER_DISPLACEMENTS, nu: float = 0.3,
                 E=(E_SOFT, E_STIFF), sigma0=(SIGMA0_SOFT, SIGMA0_STIFF), resolution=None, substeps: int = 1,
                 tol: float = 1e-10, max_newton: int = 25):
        if field not in ("both", "E", "sigma0"):
            raise InvalidValueError(f"field: expected 'both', 'E' or 'sigma0', got {field!r}")
        if field != "both":
            if fixed is None:
                raise InvalidValueError(f"fixed: the density of the field held fixed is needed with field={field!r}")
            fx = np.asarray(fixed, dtype=np.float64)
            if fx.ndim not in (0, 2) or not np.all(np.isfinite(fx)) or fx.min() < 0 or fx.max() > 1:
                raise InvalidValueError(f"fixed: expected a density (h, w) or scalar in [0, 1], got {describe(fixed)}")
            fixed = fx
        self.field = field
        self.fixed = fixed
        self.displacements = _check_displacements(displacements)
        self.nu = _check_nu(nu)
        self.E = _phase_pair("E", E)
        self.sigma0 = _phase_pair("sigma0", sigma0)
        if resolution is not None:
            resolution = tuple(int(v) for v in np.broadcast_to(resolution, (2,)))
            if min(resolution) < 1:
                raise InvalidValueError(f"resolution: expected (ny, nx) >= 1, got {resolution!r}")
        self.resolution = resolution
        self.substeps = _check_int("substeps", substeps)
        self.tol = float(tol)
        self.max_newton = _check_int("max_newton", max_newton)

    def __repr__(self) -> str:
        return (f"PlasticTension(field={self.field!r}, E={self.E}, sigma0={self.sigma0}, nu={self.nu:g}, "
                f"displacements={len(self.displacements)} steps to {self.displacements[-1]:g})")

    def _densities(self, density):
        rho = np.asarray(density, dtype=np.float64)
        if rho.ndim != 2 or min(rho.shape) < 1:
            raise InvalidValueError(f"density: expected an array (ny, nx), got shape {rho.shape}")
        if self.field == "both":
            return rho, rho
        other = np.broadcast_to(self.fixed, rho.shape) if self.fixed.ndim == 0 else _resize_np(self.fixed, rho.shape)
        return (rho, other) if self.field == "E" else (other, rho)

    def fields(self, density):
        """(E (ny, nx), sigma0 (ny, nx)) of a density (ny, nx) (Eq. 23; the fixed field from ``fixed``)."""
        return self._physical(*self._densities(density))

    def _physical(self, rho_e, rho_s):
        return (self.E[0] + (self.E[1] - self.E[0]) * np.asarray(rho_e, np.float64),
                self.sigma0[0] + (self.sigma0[1] - self.sigma0[0]) * np.asarray(rho_s, np.float64))

    def fields_curve(self, rho_e, rho_s) -> np.ndarray:
        """Curve (m,) of an E density and a sigma0 density (ny, nx) each (no resizing)."""
        e, s = self._physical(rho_e, rho_s)
        h = _solve_history(e, s, self.displacements, self.nu, self.substeps, self.tol, self.max_newton)
        return h.curve[h.report]

    def _resized(self, density):
        rho = np.asarray(density, dtype=np.float64)
        return rho if self.resolution is None else _resize_np(rho, self.resolution)

    def responses(self, density) -> np.ndarray:
        """Averaged stress per load step (m,) of a density (ny, nx) (resized to ``resolution`` first)."""
        return self.fields_curve(*self._densities(self._resized(density)))

    __call__ = responses

    def value_and_vjp(self, density, cot):
        """Curve (m,) and ``d(cot . curve) / d density`` (ny, nx) by the path-dependent adjoint.

        ``density`` is taken on its own grid (``resolution`` is applied by :meth:`jax_fn`, not here); ``cot`` is a
        vector (m,) or a function ``curve -> cot``.
        """
        rho_e, rho_s = self._densities(density)
        curve, g_e, g_s = self.fields_value_and_vjp(rho_e, rho_s, cot)
        if self.field == "both":
            return curve, g_e + g_s
        return curve, (g_e if self.field == "E" else g_s)

    def fields_value_and_vjp(self, rho_e, rho_s, cot):
        """Curve (m,) and the gradients of ``cot . curve`` w.r.t. the E density and the sigma0 density (ny, nx) each."""
        e, s = self._physical(rho_e, rho_s)
        curve, g_e, g_s = _curve_and_vjp(e, s, self.displacements, self.nu, cot, self.substeps, self.tol,
                                         self.max_newton)
        return curve, g_e * (self.E[1] - self.E[0]), g_s * (self.sigma0[1] - self.sigma0[0])

    def jax_fn(self):
        """``f(density (ny, nx)) -> curve (m,)`` as a :func:`jax.custom_vjp` (call eagerly, not under jit)."""
        import jax
        import jax.numpy as jnp

        @jax.custom_vjp
        def core(density):
            return jnp.asarray(self.fields_curve(*self._densities(np.asarray(density))), density.dtype)

        def fwd(density):
            return core(density), np.asarray(density)

        def bwd(rho, cot):
            _, g = self.value_and_vjp(rho, np.asarray(cot))
            return (jnp.asarray(g, rho.dtype),)

        core.defvjp(fwd, bwd)
        if self.resolution is None:
            return core
        from .preprocess import resize

        def f(density):
            if tuple(density.shape) == self.resolution:
                return core(density)
            return core(resize(density[None], self.resolution)[0])

        return f

    def solid_curve(self, shape=(8, 8), phase: int = 1) -> np.ndarray:
        """Curve of a homogeneous cell of the stiff (``phase=1``) or soft (``phase=0``) material (both fields)."""
        e = np.full(shape, self.E[phase])
        s = np.full(shape, self.sigma0[phase])
        return plastic_tension_curve(e, s, self.displacements, self.nu, substeps=self.substeps, tol=self.tol)


# --- two-field design ---------------------------------------------------------------------------------------------

FIELDS = ("E", "sigma0")


@dataclass
class PlasticDesign:
    """Result of :func:`design_plastic` (n designs from n starts).

    Attributes
    ----------
    density : dict field -> (n, ny, nx)  projected densities on the FE grid at the last gamma (all fields)
    cells : dict field -> bool (n, ny, nx)  thresholded fields (``x_0 > 0``, the gamma -> infinity limit)
    curve : (n, m)            averaged stress per step of the projected design (last gamma)
    loss : (n,)               Eq. 38 of ``curve``
    binary_curve, binary_loss : the same for ``cells``
    binarization : dict field -> (n,)  B(tau = 1e-3) of each designed field's projected density
    noise : dict field -> (n, s, s)  optimized (designed fields) or given (fixed fields) noise inputs
    history : list of dict    per stage: gamma, fields, iterations (n,), loss per iteration, final_loss, time_s
    target, displacements : (m,) target curve and the top displacements
    wall_time_s : float
    """

    density: dict
    cells: dict
    curve: np.ndarray
    loss: np.ndarray
    binary_curve: np.ndarray
    binary_loss: np.ndarray
    binarization: dict
    noise: dict
    history: list
    target: np.ndarray
    displacements: np.ndarray
    fields: tuple = FIELDS
    wall_time_s: float = 0.0


def _as_noise(noise, model, n_hint, seed):
    size = model.image_size
    if noise is None:
        n = n_hint
        w = model.noise(2 * n, seed).reshape(2, n, size, size)
        return {"E": np.asarray(w[0], np.float32), "sigma0": np.asarray(w[1], np.float32)}, n
    if not isinstance(noise, dict) or set(noise) - set(FIELDS):
        raise InvalidTypeError(f"noise: expected a dict with keys among {FIELDS} of arrays (n, {size}, {size}), "
                               f"got {describe(noise)}")
    out, n = {}, None
    for k, v in noise.items():
        a = np.asarray(v, np.float32)
        a = a[None] if a.ndim == 2 else a
        if a.ndim != 3 or a.shape[1:] != (size, size) or not np.all(np.isfinite(a)):
            raise InvalidValueError(f"noise[{k!r}]: expected finite (n, {size}, {size}), got {describe(v)}")
        if n is not None and len(a) != n and min(len(a), n) != 1:
            raise InvalidValueError(f"noise[{k!r}]: expected {n} noise inputs like the other field, got {len(a)}")
        n = len(a) if n is None else max(n, len(a))
        out[k] = a
    rng_fill = model.noise(2 * n, seed).reshape(2, n, size, size)
    for i, k in enumerate(FIELDS):
        out[k] = np.broadcast_to(out[k], (n, size, size)).copy() if k in out else np.asarray(rng_fill[i], np.float32)
    return out, n


def design_plastic(target_curve, *, fields=FIELDS, model=None, seed: int = 0, n: int = 1, noise=None, fixed=None,
                   order: str = "joint", displacements=PAPER_DISPLACEMENTS, nu: float = 0.3, E=(E_SOFT, E_STIFF),
                   sigma0=(SIGMA0_SOFT, SIGMA0_STIFF), gammas=(10.0, 20.0, 100.0), tol: float = 0.5,
                   max_iter: int = 100, steps: int = 10, invert: bool = False, fixed_gamma: float | None = None,
                   substeps: int = 1, resolution=None, progress: bool = False, log=None) -> PlasticDesign:
    """Noise-input optimization of a Young's-modulus field and a yield-stress field for a target stress curve.

    Each field is the projected image of its own noise input (``w -> DDIM -> x_0 (s x s) -> P_gamma``, paper
    Eq. 24; ``1 - P_gamma`` with ``invert``, as the paper does for MNIST-style priors), interpolated between the
    base materials (Eq. 23); the FE mesh is the s x s image (the paper's 32 x 32) or ``resolution``. The loss is Eq. 38 against
    ``target_curve`` at ``displacements``; the gradient is the chain of VJPs (DDIM, projection, the path-dependent
    adjoint of :class:`PlasticTension`). Staged as :func:`metasys.diffusion.generate_cells`: one BFGS
    (:func:`~metasys.diffusion.generate.batched_bfgs`) per gamma, each warm-started from the last.

    Parameters
    ----------
    target_curve : (m,) target averaged stresses at ``displacements`` (e.g. ``paper_plastic_curves()[1]``)
    fields : the designed fields, a subset of ("E", "sigma0"); a field not designed is held fixed: its density
        from ``fixed[field]`` or else from its noise input projected at ``fixed_gamma`` (default: the last gamma)
    model : DiffusionModel, model directory, or None for the shipped weights
    seed, n : n starts; noise inputs not given are ``model.noise(2 n, seed)`` (E first, then sigma0)
    noise : optional dict field -> noise (n, s, s) or (s, s)
    fixed : optional dict field -> density (s, s) or (n, s, s) in [0, 1] for fields that are not designed
    order : "joint" (paper Fig. 15: all designed fields in one BFGS per gamma) or "alternate" (per gamma, one
        BFGS per field in turn, the other held at its current design)
    gammas, tol, max_iter : projection slopes per stage, per-stage loss tolerance and BFGS iterations
        (paper, two fields: (10, 20, 100), 0.5, 100; one field: (5, 10, 20, 100), 0.2, 50)
    steps : DDIM steps; nu, E, sigma0, substeps : the material model (:class:`PlasticTension`)
    resolution : FE mesh (ny, nx) or None (the image's s x s): the generated images are resized to it (linear,
        antialiased) before the projection; the densities, cells and ``fixed`` fields are on this grid
    log : optional ``log(str)`` called after every stage

    Returns
    -------
    PlasticDesign
    """
    import jax.numpy as jnp

    from ..progress import progress_bar
    from .cells import binarization
    from .generate import _image_functions, _resolve_model, batched_bfgs

    t0 = time.time()
    fields = tuple(fields) if not isinstance(fields, str) else (fields,)
    if not fields or any(f not in FIELDS for f in fields) or len(set(fields)) != len(fields):
        raise InvalidValueError(f"fields: expected a non-empty subset of {FIELDS}, got {fields!r}")
    if order not in ("joint", "alternate"):
        raise InvalidValueError(f"order: expected 'joint' or 'alternate', got {order!r}")
    d = _check_displacements(displacements)
    target = np.asarray(target_curve, dtype=np.float64).ravel()
    if target.shape != d.shape or not np.all(np.isfinite(target)):
        raise InvalidValueError(f"target_curve: expected {len(d)} finite values (one per displacement), "
                                f"got {describe(target_curve)}")
    gammas = [float(g) for g in np.atleast_1d(gammas)]
    if not gammas or min(gammas) <= 0:
        raise InvalidValueError(f"gammas: expected positive projection slopes, got {gammas!r}")
    max_iter = _check_int("max_iter", max_iter, low=0)
    steps = _check_int("steps", steps)
    n = _check_int("n", n)
    model = _resolve_model(model)
    size = model.image_size
    w_all, n = _as_noise(noise, model, n, seed)
    response = PlasticTension("both", displacements=d, nu=nu, E=E, sigma0=sigma0, substeps=substeps)
    if resolution is None:
        grid = (size, size)
    else:
        grid = tuple(int(v) for v in np.broadcast_to(resolution, (2,)))
        if min(grid) < 1:
            raise InvalidValueError(f"resolution: expected (ny, nx) >= 1, got {resolution!r}")
    images, images_vjp = _image_functions(model, steps, False, shape=grid)
    sign = -1.0 if invert else 1.0

    def project(x, gamma):
        th = np.tanh(gamma * x)
        return 0.5 * (1.0 + sign * th), th

    def image(w):
        return np.asarray(images(model.params, jnp.asarray(w, jnp.float32)), np.float64)

    fixed_rho = {}
    fixed = {} if fixed is None else dict(fixed)
    if set(fixed) - set(FIELDS):
        raise InvalidValueError(f"fixed: expected keys among {FIELDS}, got {sorted(fixed)}")
    for f in FIELDS:
        if f in fields:
            continue
        if f in fixed:
            r = np.asarray(fixed[f], np.float64)
            r = r[None] if r.ndim == 2 else r
            if r.ndim != 3 or r.shape[1:] != grid or r.min() < 0 or r.max() > 1:
                raise InvalidValueError(f"fixed[{f!r}]: expected a density {grid} in [0, 1], got {describe(fixed[f])}")
            fixed_rho[f] = np.broadcast_to(r, (n, *grid)).copy()
        else:
            fixed_rho[f] = project(image(w_all[f]), fixed_gamma or gammas[-1])[0]
    loss_np = plastic_loss(target)
    m = len(target)

    def evaluate(rhos, need_grad=True):
        """Loss (n,) and gradients w.r.t. each field's density (n, s, s) (inf on Newton failure)."""
        f = np.empty(n)
        grads = {k: np.zeros((n, *grid)) for k in FIELDS}
        curves = np.full((n, m), np.nan)
        for i in range(n):
            try:
                if need_grad:
                    c, ge, gs = response.fields_value_and_vjp(rhos["E"][i], rhos["sigma0"][i],
                                                              lambda cv: 2.0 * (cv - target) / m)
                    grads["E"][i], grads["sigma0"][i] = ge, gs
                else:
                    c = response.fields_curve(rhos["E"][i], rhos["sigma0"][i])
                f[i], curves[i] = loss_np(c), c
            except InvalidValueError:
                f[i] = np.inf
        return f, grads, curves

    history = []
    w_cur = {k: v.astype(np.float64) for k, v in w_all.items()}
    stages = [(g, fields) for g in gammas] if order == "joint" else [(g, (f,)) for g in gammas for f in fields]
    with progress_bar("plastic design", total=len(stages), enabled=progress) as advance:
        for gamma, active in stages:
            ts = time.time()
            record = []
            current = {f: project(image(w_cur[f]), gamma)[0] for f in fields if f not in active}

            def fg(wflat, gamma=gamma, active=active, current=current):
                parts = np.split(wflat, len(active), axis=1)
                rhos, dproj, ws = dict(fixed_rho), {}, {}
                rhos.update(current)
                for f_name, part in zip(active, parts):
                    ws[f_name] = part.reshape(n, size, size)
                    rho, th = project(image(ws[f_name]), gamma)
                    rhos[f_name], dproj[f_name] = rho, sign * 0.5 * gamma * (1.0 - th**2)
                vals, grads, _ = evaluate(rhos)
                gw = []
                for f_name in active:
                    g_x = grads[f_name] * dproj[f_name]
                    g_x[~np.isfinite(vals)] = 0.0
                    gw.append(np.asarray(images_vjp(model.params, jnp.asarray(ws[f_name], jnp.float32),
                                                    jnp.asarray(g_x, jnp.float32)), np.float64).reshape(n, -1))
                return vals, np.concatenate(gw, axis=1)

            w0 = np.concatenate([w_cur[f].reshape(n, -1) for f in active], axis=1)
            w_opt, fval, iters = batched_bfgs(fg, w0, max_iter=max_iter, tol=tol, record=record.append)
            for f_name, part in zip(active, np.split(w_opt, len(active), axis=1)):
                w_cur[f_name] = part.reshape(n, size, size)
            history.append({"gamma": gamma, "fields": list(active), "iterations": iters.tolist(),
                            "loss": [r.tolist() for r in record], "final_loss": fval.tolist(),
                            "time_s": round(time.time() - ts, 3)})
            if log is not None:
                log(f"gamma {gamma:g} fields {','.join(active)}: loss {np.round(fval, 4).tolist()} after "
                    f"{iters.tolist()} iterations, {time.time() - ts:.1f} s")
            advance(1)

    x_final = {f: image(w_cur[f]) for f in fields}
    density = dict(fixed_rho)
    density.update({f: project(x_final[f], gammas[-1])[0] for f in fields})
    cells = {f: (sign * x_final[f] > 0) for f in fields}
    cells.update({f: fixed_rho[f] > 0.5 for f in FIELDS if f not in fields})
    loss, _, curve = evaluate(density, need_grad=False)
    binary_loss, _, binary_curve = evaluate({f: cells[f].astype(np.float64) for f in FIELDS}, need_grad=False)
    return PlasticDesign(density=density, cells=cells, curve=curve, loss=loss, binary_curve=binary_curve,
                         binary_loss=binary_loss, binarization={f: binarization(density[f]) for f in fields},
                         noise={k: np.asarray(v, np.float32) for k, v in w_cur.items()}, history=history,
                         target=target, displacements=d, fields=fields, wall_time_s=time.time() - t0)

