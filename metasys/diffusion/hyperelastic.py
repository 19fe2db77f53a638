"""Hyperelastic response of a cell (noise-optimization paper, Sec. 3.3): neo-Hookean uniaxial tension.

The cell is the unit square, one bilinear QUAD4 element per pixel (``cell[r, c]``, row 0 at the bottom).
Each pixel is a compressible neo-Hookean solid (paper Eq. 33)

    W(F) = G/2 (J^(-2/3) I_1 - 3) + K/2 (J - 1)^2,  G = E / (2 (1 + nu)),  K = E / (3 (1 - 2 nu))

in plane strain (``F`` is embedded in 3 x 3 with ``F_33 = 1``), with the pixel modulus
``E = material.modulus(density)`` (for ``Material.two_phase(E0, E1)`` the linear interpolation of paper
Eq. 23) and ``nu = material.nu``. Bottom edge fixed (``u = 0``); top edge moved rigidly by
``(0, d)`` for each displacement ``d`` of ``displacements`` (paper: 0.1 .. 0.5); sides free.

The weak form is a :class:`jax_fem.problem.Problem` (``get_tensor_map`` returns the first
Piola-Kirchhoff stress ``dW/dF`` by ``jax.grad``), which assembles the residual and the tangent.
jax-fem's own solver needs petsc4py, so metasys solves the equilibrium itself: Newton with a sparse LU
(SciPy) and backtracking on the residual norm, continuation over sub-steps of the displacement.

Responses per applied displacement: the strain energy ``Pi(d) = int W dA`` and the top reaction
``F_y(d)``. Both are differentiable in the pixel densities by :func:`jax.custom_vjp` with an adjoint: for a
response ``J(u, E)`` at equilibrium ``R_f(u, E) = 0``, ``dJ/dE = dJ/dE|_u - lambda^T dR_f/dE`` with
``K_ff lambda = dJ/du_f`` (``K_ff`` symmetric); the products with ``dR/dE`` are ``jax.vjp`` of
jax-fem's ``compute_residual_vars``. For the energy ``dJ/du_f = R_f = 0`` and the adjoint vanishes, which
the tests use as a cross-check.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ..errors import InvalidValueError
from ..material import Material

__all__ = ["HyperelasticTension", "NewtonError", "neo_hookean_energy_density", "paper_energy_curves"]


class NewtonError(InvalidValueError):
    """The Newton solve of the hyperelastic cell did not converge."""


def _jaxfem():
    _print_options = np.get_printoptions()
    with contextlib.redirect_stdout(None):
        from jax_fem import logger
        from jax_fem.generate_mesh import Mesh, rectangle_mesh
        from jax_fem.problem import Problem
    np.set_printoptions(**_print_options)
    return logger, Mesh, rectangle_mesh, Problem


@contextlib.contextmanager
def _quiet():
    logger = _jaxfem()[0]
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def neo_hookean_energy_density(u_grad, modulus, nu):
    """``W`` (paper Eq. 33) of a 2 x 2 displacement gradient in plane strain (JAX)."""
    import jax.numpy as jnp

    f = jnp.eye(3).at[:2, :2].add(u_grad)
    j = jnp.linalg.det(f)
    i1 = jnp.sum(f * f)
    g = modulus / (2.0 * (1.0 + nu))
    k = modulus / (3.0 * (1.0 - 2.0 * nu))
    return 0.5 * g * (j ** (-2.0 / 3.0) * i1 - 3.0) + 0.5 * k * (j - 1.0) ** 2


@lru_cache(maxsize=4)
def _problem(ny: int, nx: int, nu: float):
    """jax-fem Problem of the neo-Hookean pixel cell (cached per resolution and Poisson's ratio)."""
    import jax

    _, Mesh, rectangle_mesh, Problem = _jaxfem()

    class NeoHookeanPixels(Problem):
        """Hyperelasticity with a per-quadrature-point Young's modulus (``internal_vars = [E (cells, quads)]``)."""

        def custom_init(self, poisson):
            self.poisson = poisson

        def get_tensor_map(self):
            grad_w = jax.grad(neo_hookean_energy_density)

            def first_pk(u_grad, modulus):
                return grad_w(u_grad, modulus, self.poisson)

            return first_pk

    mesh = rectangle_mesh(nx, ny, 1.0, 1.0)
    with _quiet():
        return NeoHookeanPixels(Mesh(mesh.points, mesh.cells_dict["quad"], ele_type="QUAD4"), vec=2, dim=2,
                                ele_type="QUAD4", additional_info=(float(nu),))


@dataclass
class _Setup:
    ny: int
    nx: int
    nu: float
    problem: object
    free: np.ndarray          # free dof indices (node-major [u_x, u_y])
    top_y: np.ndarray         # dofs u_y of the top edge
    fixed: np.ndarray
    energy_fn: object = field(repr=False)        # (u (nodes, 2), E (cells,)) -> Pi
    residual_fn: object = field(repr=False)      # (u, E) -> R (nodes, 2)
    response_grad: object = field(repr=False)    # (u, E, ce, cf) -> ((J, (Pi, F)), (dJ/du, dJ/dE))
    residual_vjp: object = field(repr=False)     # (u, E, lam) -> lam^T dR/dE


@lru_cache(maxsize=4)
def _setup(ny: int, nx: int, nu: float) -> _Setup:
    import jax
    import jax.numpy as jnp

    problem = _problem(ny, nx, nu)
    fe = problem.fes[0]
    n_nodes = fe.num_total_nodes
    ix, iy = np.meshgrid(np.arange(nx + 1), np.arange(ny + 1), indexing="ij")  # rectangle_mesh node order
    ix, iy = ix.ravel(), iy.ravel()
    bottom, top = np.flatnonzero(iy == 0), np.flatnonzero(iy == ny)
    fixed = np.sort(np.concatenate([2 * bottom, 2 * bottom + 1, 2 * top, 2 * top + 1]))
    free = np.setdiff1d(np.arange(2 * n_nodes), fixed)
    cells = jnp.asarray(fe.cells)
    shape_grads = jnp.asarray(fe.shape_grads)        # (cells, quads, nodes, dim)
    jxw = jnp.asarray(fe.JxW)                         # (cells, quads)
    nq = shape_grads.shape[1]

    def energy(u, moduli):
        cell_u = u[cells]                                                    # (cells, nodes, 2)
        grads = jnp.einsum("cav,cqad->cqvd", cell_u, shape_grads)           # (cells, quads, 2, 2)
        w = jax.vmap(jax.vmap(neo_hookean_energy_density, (0, None, None)), (0, 0, None))(grads, moduli, nu)
        return jnp.sum(w * jxw)

    def residual(u, moduli):
        return problem.compute_residual_vars([u], [jnp.broadcast_to(moduli[:, None], (len(moduli), nq))], [])[0]

    top_y = 2 * top + 1

    def response(u, moduli, ce, cf):
        pi = energy(u, moduli)
        force = jnp.sum(residual(u, moduli).reshape(-1)[top_y])
        return ce * pi + cf * force, (pi, force)

    def residual_vjp(u, moduli, lam):
        return jax.vjp(lambda q: residual(u, q), moduli)[1](lam)[0]

    return _Setup(ny, nx, float(nu), problem, free, top_y, fixed, jax.jit(energy), jax.jit(residual),
                  jax.jit(jax.value_and_grad(response, argnums=(0, 1), has_aux=True)), jax.jit(residual_vjp))


def _pixel_order(field2d: np.ndarray) -> np.ndarray:
    """(ny, nx) pixel array -> jax-fem element order (element (ix, iy) = index ix * ny + iy)."""
    return np.asarray(field2d).T.reshape(-1)


class HyperelasticTension:
    """Strain-energy (and reaction) curve of a cell under uniaxial tension, differentiable in its densities.

    Parameters
    ----------
    material : Material
        Pixel modulus ``material.modulus(density)`` and Poisson's ratio (paper: ``Material.two_phase(1, 100)``).
    displacements : sequence of float
        Top-edge displacements at which the responses are reported (paper: 0.1, 0.2, ..., 0.5).
    substeps : int
        Newton continuation sub-steps per reported displacement increment.
    tol : float
        Newton stops when ``||R_free|| <= tol * max(1, ||reaction||)``.
    max_newton : int
        Newton iterations per sub-step before :class:`NewtonError`.
    resolution : (ny, nx) or None
        FE mesh of the response: densities of another shape are first resized to it (linear, as
        :func:`metasys.diffusion.preprocess.resize`; differentiable in :meth:`jax_fn`). None: one element per
        pixel of the given density. The paper solves on the 32 x 32 image.

    Calling the object on densities (ny, nx) returns the energies (m,) (NumPy); :meth:`responses` returns
    energies and reactions; :meth:`jax_fn` gives the ``jax.custom_vjp`` function ``density -> (energy, force)``.
    """

    def __init__(self, material: Material = Material.two_phase(1.0, 100.0), displacements=(0.1, 0.2, 0.3, 0.4, 0.5),
                 substeps: int = 2, tol: float = 1e-8, max_newton: int = 30, resolution=None):
        if not isinstance(material, Material):
            raise InvalidValueError(f"material: expected a metasys.Material, got {material!r}")
        d = np.asarray(displacements, dtype=float).ravel()
        if d.size == 0 or not np.all(np.isfinite(d)) or np.any(np.diff(np.concatenate([[0.0], d])) <= 0):
            raise InvalidValueError(f"displacements: expected increasing positive values, got {displacements!r}")
        if int(substeps) != substeps or substeps < 1:
            raise InvalidValueError(f"substeps must be an integer >= 1, got {substeps!r}")
        self.material = material
        self.displacements = d
        self.substeps = int(substeps)
        self.tol = float(tol)
        self.max_newton = int(max_newton)
        if resolution is not None:
            resolution = tuple(int(v) for v in np.broadcast_to(resolution, (2,)))
            if min(resolution) < 1:
                raise InvalidValueError(f"resolution: expected (ny, nx) >= 1, got {resolution!r}")
        self.resolution = resolution
        self.newton_iterations = 0          # total Newton iterations of the last forward solve

    def __repr__(self) -> str:
        return (f"HyperelasticTension(E={self.material.E:g}, E_void={self.material.E_void:g}, nu={self.material.nu:g}, "
                f"displacements={self.displacements.tolist()})")

    # --- forward -------------------------------------------------------------------------------------
    def _solve(self, density: np.ndarray):
        """Equilibrium displacements (m, nodes, 2) and element moduli for densities (ny, nx)."""
        import jax
        import jax.numpy as jnp
        import scipy.sparse as sp
        from scipy.sparse.linalg import splu

        # Newton to 1e-8 needs float64 kernels (process-wide switch, as in metasys.fem.jaxfem_bridge)
        jax.config.update("jax_enable_x64", True)
        rho = np.asarray(density, dtype=np.float64)
        if rho.ndim != 2 or min(rho.shape) < 1:
            raise InvalidValueError(f"density: expected an array (ny, nx), got shape {rho.shape}")
        s = _setup(rho.shape[0], rho.shape[1], float(self.material.nu))
        problem = s.problem
        moduli = _pixel_order(np.asarray(self.material.modulus(rho), dtype=np.float64))
        nq = problem.fes[0].num_quads
        problem.internal_vars = [np.broadcast_to(moduli[:, None], (len(moduli), nq))]
        n_dof = problem.num_total_dofs_all_vars
        u = np.zeros(n_dof)
        states, factors = [], []
        d_prev, last = 0.0, (0.0, np.zeros(n_dof))
        self.newton_iterations = 0
        with _quiet():
            for d in self.displacements:
                for k in range(1, self.substeps + 1):
                    d_k = d_prev + (d - d_prev) * k / self.substeps
                    d_u = float(u[s.top_y[0]])
                    # linear extrapolation of the free dofs from the last two converged states (Newton start)
                    if d_u > last[0]:
                        guess = u + (d_k - d_u) / (d_u - last[0]) * (u - last[1])
                    else:
                        guess = u.copy()
                    guess[s.top_y] = d_k
                    last = (d_u, u)
                    u, lu = self._newton(s, guess, d_k, sp, splu, jnp)
                d_prev = d
                states.append(u.reshape(-1, 2).copy())
                factors.append(lu)
        return np.stack(states), moduli, factors, s

    def _newton(self, s, u, d_k, sp, splu, jnp):
        problem = s.problem
        n_dof = problem.num_total_dofs_all_vars
        free = s.free

        def assemble(x):
            res = np.asarray(problem.newton_update([jnp.asarray(x.reshape(-1, 2))])[0]).reshape(-1)
            k = sp.csr_array((problem.V, (problem.I, problem.J)), shape=(n_dof, n_dof))
            return res, k

        res, k = assemble(u)
        norm = np.linalg.norm(res[free])
        for it in range(self.max_newton + 1):
            scale = max(1.0, float(np.abs(res[s.top_y]).sum()))
            if norm <= self.tol * scale:
                kff = k[free][:, free].tocsc()
                return u, splu(kff, permc_spec="MMD_AT_PLUS_A")
            if it == self.max_newton:
                break
            kff = k[free][:, free].tocsc()
            try:
                du = splu(kff, permc_spec="MMD_AT_PLUS_A").solve(-res[free])
            except RuntimeError:                   # singular tangent
                break
            step = 1.0
            for _ in range(12):
                trial = u.copy()
                trial[free] += step * du
                res_t, k_t = assemble(trial)
                norm_t = np.linalg.norm(res_t[free])
                if np.isfinite(norm_t) and norm_t < norm * (1.0 - 1e-4 * step) or norm_t <= self.tol * scale:
                    break
                step *= 0.5
            else:
                break
            u, res, k, norm = trial, res_t, k_t, norm_t
            self.newton_iterations += 1
        raise NewtonError(f"Newton did not converge at top displacement {d_k:g} (residual {norm:.3g} after "
                          f"{self.max_newton} iterations); use more substeps")

    def _resized(self, density):
        rho = np.asarray(density, dtype=np.float64)
        if self.resolution is None or rho.shape == self.resolution:
            return rho
        from .preprocess import resize

        return np.asarray(resize(rho[None], self.resolution)[0], dtype=np.float64)

    def responses(self, density) -> tuple[np.ndarray, np.ndarray]:
        """(energies (m,), top reactions F_y (m,)) of densities (ny, nx) at ``displacements``."""
        import jax.numpy as jnp

        states, moduli, _, s = self._solve(self._resized(density))
        m = jnp.asarray(moduli)
        with _quiet():
            energies = np.array([float(s.energy_fn(jnp.asarray(u), m)) for u in states])
            forces = np.array([float(np.asarray(s.residual_fn(jnp.asarray(u), m)).reshape(-1)[s.top_y].sum())
                               for u in states])
        return energies, forces

    def __call__(self, density) -> np.ndarray:
        return self.responses(density)[0]

    # --- adjoint -------------------------------------------------------------------------------------
    def value_and_vjp(self, density, cot_energy=None, cot_force=None):
        """Responses and ``d(cot_energy . energy + cot_force . force) / d density`` (ny, nx) by the adjoint.

        ``density`` is taken on its own grid (``resolution`` is not applied here; :meth:`jax_fn` applies it).
        """
        import jax.numpy as jnp

        rho = np.asarray(density, dtype=np.float64)
        states, moduli, factors, s = self._solve(rho)
        m = len(states)
        ce = np.zeros(m) if cot_energy is None else np.asarray(cot_energy, float).reshape(m)
        cf = np.zeros(m) if cot_force is None else np.asarray(cot_force, float).reshape(m)
        mj = jnp.asarray(moduli)
        grad_moduli = np.zeros_like(moduli)
        energies, forces = np.zeros(m), np.zeros(m)
        for i, (u, lu) in enumerate(zip(states, factors)):
            uj = jnp.asarray(u)
            with _quiet():
                (_, (e_i, f_i)), (g_u, g_m) = s.response_grad(uj, mj, ce[i], cf[i])
            energies[i], forces[i] = float(e_i), float(f_i)
            grad = np.asarray(g_m, np.float64)
            rhs = np.asarray(g_u, np.float64).reshape(-1)[s.free]
            if np.any(rhs):
                lam = np.zeros(2 * len(u))
                lam[s.free] = lu.solve(rhs)                     # K_ff symmetric: K_ff^T lambda = dJ/du_f
                with _quiet():
                    grad = grad - np.asarray(s.residual_vjp(uj, mj, jnp.asarray(lam.reshape(-1, 2))), np.float64)
            grad_moduli += grad
        # chain rule through E(rho) and back to pixel order
        d_mod = _pixel_order(np.asarray(self.material.modulus_derivative(rho), dtype=np.float64))
        g = (grad_moduli * d_mod).reshape(rho.shape[1], rho.shape[0]).T
        return energies, forces, g

    def jax_fn(self):
        """``f(density (ny, nx)) -> (energy (m,), force (m,))`` as a :func:`jax.custom_vjp` (call eagerly, not under jit)."""
        import jax
        import jax.numpy as jnp

        @jax.custom_vjp
        def core(density):
            e, r = self.responses(np.asarray(density))
            return jnp.asarray(e, density.dtype), jnp.asarray(r, density.dtype)

        def fwd(density):
            return core(density), np.asarray(density)

        def bwd(rho, cot):
            ce, cf = cot
            _, _, g = self.value_and_vjp(rho, np.asarray(ce), np.asarray(cf))
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

    def solid_curve(self, shape=None, phase: int = 1) -> np.ndarray:
        """Energies of a homogeneous cell of the stiff (``phase=1``) or soft (``phase=0``) phase.

        ``shape`` defaults to ``resolution`` (or 50 x 50); the paper fits these curves by cubics (Sec. 3.3).
        """
        shape = shape or self.resolution or (50, 50)
        return self(np.full(shape, float(phase)))


def paper_energy_curves(x):
    """The paper's cubic fits (Sec. 3.3) of the strain energy of the stiff (E1 = 100) and soft (E0 = 1) solids."""
    x = np.asarray(x, dtype=float)
    p1 = -19.880 * x**3 + 51.245 * x**2 + 0.472 * x
    p0 = -0.199 * x**3 + 0.512 * x**2 + 0.005 * x
    return p1, p0
