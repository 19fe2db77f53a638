"""Macroscale solves: closed-form response and adjoint sensitivities."""

import numpy as np
import pytest

from metasys.errors import InvalidValueError, SolverError
from metasys.fem import MacroModel, Prescribed, solve_macro

STRETCH = [Prescribed("left", "x", 0.0), Prescribed("right", "x", 0.12), Prescribed((0, 0), "y", 0.0)]


def test_uniform_orthotropic_block_uniaxial_stretch():
    w, h = 6, 3
    c11, c12, c22, c33 = 0.9, 0.25, 0.4, 0.15
    u = solve_macro(np.tile([c11, c12, c22, c33], (h, w, 1)), STRETCH).displacement
    e11 = 0.12 / w
    e22 = -c12 / c22 * e11  # s22 = 0 on the free top and bottom edges
    y, x = np.mgrid[0 : h + 1, 0 : w + 1]
    np.testing.assert_allclose(u[..., 0], e11 * x, atol=1e-12)
    np.testing.assert_allclose(u[..., 1], e22 * y, atol=1e-12)


def test_adjoint_gradient_matches_finite_differences(rng):
    w, h = 7, 4
    model = MacroModel(w, h, STRETCH)
    p = np.tile([1.0, 0.3, 0.6, 0.2], (h, w, 1)) * rng.uniform(0.6, 1.4, (h, w, 4))
    dofs = rng.choice(model.n_dofs, 15, replace=False)
    target = rng.normal(scale=0.02, size=15)
    weights = rng.uniform(0.5, 2.0, 15)
    value, grad, _ = model.least_squares(p, dofs, target, weights)
    assert value > 0
    for _ in range(3):
        d = rng.normal(size=p.shape)
        step = 1e-6
        fd = (model.least_squares(p + step * d, dofs, target, weights)[0]
              - model.least_squares(p - step * d, dofs, target, weights)[0]) / (2 * step)
        np.testing.assert_allclose(np.sum(grad * d), fd, rtol=1e-6)


def test_adjoint_gradient_of_a_general_quadratic_form(rng):
    model = MacroModel(5, 3, STRETCH)
    p = np.tile([1.0, 0.3, 0.6, 0.2], (3, 5, 1)) * rng.uniform(0.6, 1.4, (3, 5, 4))
    dofs = rng.choice(model.n_dofs, 6, replace=False)
    a = rng.normal(size=(6, 6))
    w = a @ a.T + np.eye(6)
    target = rng.normal(scale=0.02, size=6)
    value, grad, sol = model.least_squares(p, dofs, target, w)
    r = sol.vector[dofs] - target
    assert value == pytest.approx(r @ w @ r)
    d = rng.normal(size=p.shape)
    fd = (model.least_squares(p + 1e-6 * d, dofs, target, w)[0] - model.least_squares(p - 1e-6 * d, dofs, target, w)[0]) / 2e-6
    np.testing.assert_allclose(np.sum(grad * d), fd, rtol=1e-6)


def test_exact_target_gives_zero_objective():
    w, h = 4, 2
    model = MacroModel(w, h, STRETCH)
    p = np.tile([1.0, 0.3, 0.6, 0.2], (h, w, 1))
    u = model.solve(p).vector
    dofs = np.arange(model.n_dofs)
    value, grad, _ = model.least_squares(p, dofs, u[dofs])
    assert value == pytest.approx(0.0, abs=1e-24)
    assert np.abs(grad).max() < 1e-12


def test_errors():
    with pytest.raises(InvalidValueError, match="properties"):
        MacroModel(3, 2, STRETCH).solve(np.ones((3, 2, 4)))
    with pytest.raises(InvalidValueError, match="where"):
        Prescribed("middle", "x", 0.0)
    with pytest.raises(InvalidValueError, match="outside"):
        MacroModel(3, 2, [Prescribed((5, 0), "x")])
    with pytest.raises(SolverError):  # only u_x prescribed: rigid motion in y is free
        MacroModel(3, 2, [Prescribed("left", "x")]).solve(np.tile([1.0, 0.3, 0.6, 0.2], (2, 3, 1)))


@pytest.mark.parametrize("element, expected", [
    ([1.0, 0.8, 0.6, 0.2], "C12^2 < C11 C22"),    # C12^2 = 0.64 > C11 C22 = 0.6
    ([1.0, 0.6, 0.36, 0.2], "C12^2 < C11 C22"),   # semi-definite: C12^2 = C11 C22
    ([-1.0, 0.0, 0.6, 0.2], "C11 > 0"),
    ([1.0, 0.0, 0.0, 0.2], "C22 > 0 and C12^2 < C11 C22"),  # 0 < 0 fails too
    ([1.0, 0.3, 0.6, -0.01], "C33 > 0"),
])
def test_rejects_stiffness_that_is_not_positive_definite(element, expected):
    p = np.tile([1.0, 0.3, 0.6, 0.2], (2, 3, 1))
    p[1, 2] = element  # element (i, j) = (2, 1)
    model = MacroModel(3, 2, STRETCH)
    for call in (model.solve, model.stiffness, lambda q: model.least_squares(q, [3], [0.0])):
        with pytest.raises(InvalidValueError, match="properties: expected a positive definite") as info:
            call(p)
        message = str(info.value)
        assert f"breaks {expected}" in message and "element (i, j) = (2, 1)" in message and "1 element(s)" in message
        assert f"({element[0]:.6g}, {element[1]:.6g}, {element[2]:.6g}, {element[3]:.6g})" in message
    with pytest.raises(InvalidValueError, match="positive definite"):
        solve_macro(p, STRETCH)


def test_direct_assembly_matches_the_global_stiffness(rng):
    """The solve assembles the free-free block directly; it agrees with slicing the global matrix."""
    import scipy.sparse.linalg as spla

    w, h = 6, 4
    model = MacroModel(w, h, STRETCH)
    p = np.tile([1.0, 0.3, 0.6, 0.2], (h, w, 1)) * rng.uniform(0.7, 1.3, (h, w, 4))
    k = model.stiffness(p)
    free, fixed = model.free, model.fixed
    u = np.zeros(model.n_dofs)
    u[fixed] = model.fixed_values
    u[free] = spla.spsolve(k[free][:, free].tocsc(), -(k[free][:, fixed] @ model.fixed_values))
    np.testing.assert_allclose(model.solve(p).vector, u, rtol=0, atol=1e-13 * np.abs(u).max())
