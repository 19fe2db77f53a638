"""Full-scale pixel structure solve: exact states, component removal, homogenization limit, errors."""

import numpy as np
import pytest
import scipy.sparse as sp

from metasys import Material, homogenize
from metasys.errors import InvalidCellError, InvalidTypeError, InvalidValueError, SolverError
from metasys.fem.boundary import Prescribed
from metasys.fem.element import NODE_OFFSETS, element_stiffness
from metasys.fem.full_scale import solve_full_scale

STRETCH = 0.3


def stretch(d=STRETCH):
    """Uniaxial stretch along x with free top and bottom edges."""
    return [Prescribed("left", "x", 0.0), Prescribed("right", "x", d), Prescribed((0, 0), "y", 0.0)]


def holed_block():
    """3 x 2 cells of 10 pixels, solid but for a 10 x 10 pixel hole."""
    block = np.ones((20, 30), dtype=bool)
    block[5:15, 10:20] = False
    return block


def frame_cross_cell():
    """Mirror-symmetric 50 x 50 cell: a frame with a central cross (64% solid, 4 square holes)."""
    y, x = np.mgrid[0:50, 0:50] + 0.5
    return (np.abs(x - 25) > 20) | (np.abs(y - 25) > 20) | (np.abs(x - 25) < 5) | (np.abs(y - 25) < 5)


@pytest.mark.parametrize("method", ["direct", "amg"])
def test_solid_block_under_stretch_is_uniform(method):
    width, cell_pixels = 3, 10
    nu = 0.3
    result = solve_full_scale(np.ones((20, 30), dtype=bool), stretch(), Material(nu=nu), cell_pixels, tol=1e-12, method=method)
    y, x = np.mgrid[0:21, 0:31] / cell_pixels
    expected = np.stack([STRETCH * x / width, -nu * STRETCH / width * y], axis=-1)
    np.testing.assert_allclose(result.displacement, expected, rtol=0, atol=1e-8)
    np.testing.assert_allclose(result.macro_displacement, expected[::cell_pixels, ::cell_pixels], rtol=0, atol=1e-8)
    assert result.n_components_removed == 0 and result.n_pixels_removed == 0
    assert result.n_dofs == 2 * 21 * 31 - 21 - 21 - 1  # left and right edges' u_x, one u_y
    assert set(result.timings) == {"assembly", "setup", "solve"}


def test_island_and_corner_hung_pixel_are_removed_without_changing_the_solution():
    base = holed_block()
    structure = base.copy()
    structure[8:11, 13:16] = True  # island of 9 pixels inside the hole
    structure[4:7, 19:22] = False  # notch at the hole's lower-right corner ...
    structure[5, 19] = False
    structure[4, 21] = True  # ... keep the pixel that carries the hinge
    base = structure.copy()
    base[8:11, 13:16] = False
    structure[5, 20] = True  # touches the body only at the lower-right pixel's corner: free to rotate
    reference = solve_full_scale(base, stretch(), cell_pixels=10)
    result = solve_full_scale(structure, stretch(), cell_pixels=10)
    assert (result.n_components_removed, result.n_pixels_removed) == (2, 10)
    assert reference.n_components_removed == 0
    np.testing.assert_array_equal(result.kept, reference.kept)
    np.testing.assert_allclose(result.displacement, reference.displacement, rtol=0, atol=1e-12)


def test_pixel_pinned_at_two_corners_is_kept():
    structure = holed_block()
    structure[5, 10:12] = False
    structure[4, 10] = False
    structure[5, 10] = True  # touches (4, 9) and (4, 11) at two distinct corner nodes: no mechanism
    structure[5, 9] = structure[6, 9] = False
    result = solve_full_scale(structure, stretch(), cell_pixels=10)
    assert result.kept[5, 10] and result.n_components_removed == 0
    assert np.all(np.isfinite(result.displacement[5:7, 10:12]))


def test_diagonal_chain_mechanism_falls_back_to_multigrid():
    """A straight diagonal chain of corner-joined pixels across the hole is a mechanism: its matrix is singular but
    consistent. The direct solve refuses it by name; ``auto`` solves it by multigrid CG like ``amg``."""
    structure = holed_block()
    structure[np.arange(5, 15), np.arange(10, 20)] = True
    conditions = [Prescribed("left", "x", 0.0), Prescribed("left", "y", 0.0), Prescribed("right", "x", 0.1)]
    with pytest.raises(SolverError, match="singular.*method='amg'"):
        solve_full_scale(structure, conditions, cell_pixels=10, method="direct")
    auto = solve_full_scale(structure, conditions, cell_pixels=10, method="auto")
    amg = solve_full_scale(structure, conditions, cell_pixels=10, method="amg")
    assert auto.iterations == amg.iterations > 0 and auto.kept[5:15, 10:20].sum() == 10
    np.testing.assert_allclose(auto.macro_displacement, amg.macro_displacement, rtol=0, atol=1e-12)


def test_stencil_assembly_matches_element_by_element_assembly():
    rng = np.random.default_rng(1)
    structure = rng.random((20, 30)) < 0.6  # ragged: islands and corner contacts
    structure[:, [0, -1]] = True
    conditions = [Prescribed("left", "x", 0.0), Prescribed("left", "y", 0.0), Prescribed("right", "x", 0.1)]
    material = Material(E=2.0, nu=0.3, plane="strain")
    result = solve_full_scale(structure, conditions, material, cell_pixels=10)
    assert result.n_components_removed > 0
    # Reference: COO assembly of every kept element, dense solve.
    ny, nx = structure.shape
    ke = element_stiffness(material.constitutive(), 0.1, 0.1)
    r, c = np.nonzero(result.kept)
    nodes = (r[:, None] + NODE_OFFSETS[:, 1]) * (nx + 1) + c[:, None] + NODE_OFFSETS[:, 0]
    dofs = (2 * nodes[:, :, None] + np.arange(2)).reshape(-1, 8)
    n = 2 * (ny + 1) * (nx + 1)
    k = sp.coo_array((np.broadcast_to(ke, (len(dofs), 8, 8)).ravel(), (np.repeat(dofs, 8, 1).ravel(), np.tile(dofs, 8).ravel())),
                     shape=(n, n)).toarray()
    u = np.zeros((ny + 1, nx + 1, 2))
    u[:, -1, 0] = 0.1
    fixed = np.zeros((ny + 1, nx + 1, 2), dtype=bool)
    fixed[:, 0, :] = fixed[:, -1, 0] = True
    used = np.zeros(n, dtype=bool)
    used[dofs.ravel()] = True
    free = used & ~fixed.ravel()
    u = u.ravel()
    u[free] = np.linalg.solve(k[np.ix_(free, free)], -k[np.ix_(free, ~free)] @ u[~free])
    assert result.n_dofs == free.sum()
    got = result.displacement.ravel()
    np.testing.assert_allclose(got[used], u[used], rtol=0, atol=1e-10)
    assert np.all(np.isnan(got[~used]))


def test_tiled_cell_matches_homogenized_uniform_strain():
    cell = frame_cross_cell()
    n, d = 10, 0.1
    c = homogenize(cell)
    result = solve_full_scale(np.tile(cell, (n, n)), stretch(d), tol=1e-6, method="amg")
    assert result.iterations > 0  # 0.6M unknowns: the multigrid path at scale (auto would factorize them)
    e11 = d / n
    e22 = -c[0, 1] / c[1, 1] * e11  # s22 = s12 = 0 with C13 = C23 = 0
    macro = result.macro_displacement
    np.testing.assert_allclose(macro[..., 0], np.tile(e11 * np.arange(n + 1), (n + 1, 1)), rtol=0, atol=1e-3 * d)
    assert abs(macro[-1, -1, 1] / (e22 * n) - 1) < 0.02
    # Away from the free top and bottom edges' boundary layers the strain is the homogenized one.
    interior = (macro[n - 1, -1, 1] - macro[1, -1, 1]) / (n - 2)
    assert abs(interior / e22 - 1) < 5e-3


def test_bad_structures_raise_helpful_errors():
    with pytest.raises(InvalidCellError, match="structure.*binary"):
        solve_full_scale(np.full((20, 30), 0.5), stretch(), cell_pixels=10)
    with pytest.raises(InvalidCellError, match=r"structure.*multiple of cell_pixels=10.*\(25, 30\)"):
        solve_full_scale(np.ones((25, 30), dtype=bool), stretch(), cell_pixels=10)
    with pytest.raises(InvalidCellError, match="2-D"):
        solve_full_scale(np.ones((2, 20, 30), dtype=bool), stretch(), cell_pixels=10)
    with pytest.raises(InvalidCellError, match="all-void"):
        solve_full_scale(np.zeros((20, 30), dtype=bool), stretch(), cell_pixels=10)
    with pytest.raises(InvalidTypeError, match="structure"):
        solve_full_scale("block", stretch(), cell_pixels=10)
    with pytest.raises(InvalidValueError, match="cell_pixels"):
        solve_full_scale(np.ones((20, 30), dtype=bool), stretch(), cell_pixels=0)
    with pytest.raises(InvalidTypeError, match="conditions"):
        solve_full_scale(np.ones((20, 30), dtype=bool), [("left", "x", 0.0)], cell_pixels=10)
    with pytest.raises(InvalidValueError, match=r"node \(4, 0\) lies outside"):
        solve_full_scale(np.ones((20, 30), dtype=bool), [Prescribed((4, 0), "y")], cell_pixels=10)


def test_uint8_structure_is_accepted():
    block = holed_block()
    a = solve_full_scale(block, stretch(), cell_pixels=10)
    b = solve_full_scale(block.astype(np.uint8), stretch(), cell_pixels=10)
    np.testing.assert_array_equal(a.displacement, b.displacement)


def test_part_free_to_slide_raises_solver_error():
    with pytest.raises(SolverError, match="y translation"):
        solve_full_scale(np.ones((20, 30), dtype=bool), [Prescribed("left", "x"), Prescribed("right", "x", 0.1)], cell_pixels=10)


def _reference_solve(structure, scale, conditions_fixed, cell_pixels):
    """Independent assembly with a per-pixel stiffness scale (ny, nx): global K from element_stiffness, Dirichlet by
    elimination, sparse direct solve. ``conditions_fixed``: {(node row, node col, component): value}."""
    ny, nx = structure.shape
    h = 1.0 / cell_pixels
    ke = element_stiffness(Material().constitutive(), h, h)
    rows, cols = np.nonzero(structure)
    nodes = np.stack([(rows + oy) * (nx + 1) + cols + ox for ox, oy in NODE_OFFSETS], axis=1)
    dofs = np.stack([2 * nodes, 2 * nodes + 1], axis=-1).reshape(len(rows), 8)
    values = scale[rows, cols][:, None, None] * ke
    n = 2 * (ny + 1) * (nx + 1)
    k = sp.coo_array((values.ravel(), (np.repeat(dofs, 8, axis=1).ravel(), np.tile(dofs, (1, 8)).ravel())),
                     shape=(n, n)).tocsr()
    active = np.zeros(n, bool)
    active[dofs.ravel()] = True
    u = np.zeros(n)
    fixed = np.zeros(n, bool)
    for (r, c, comp), value in conditions_fixed.items():
        dof = 2 * (r * (nx + 1) + c) + comp
        if active[dof]:
            fixed[dof], u[dof] = True, value
    free = active & ~fixed
    u[free] = sp.linalg.spsolve(k[free][:, free].tocsc(), -(k[free][:, fixed] @ u[fixed]))
    return u.reshape(ny + 1, nx + 1, 2)


@pytest.mark.parametrize("method", ["direct", "amg"])
def test_adjoint_sensitivity_matches_central_finite_differences(method):
    """dJ/ds of a quadratic form in the macro-node displacements against an independent solver's differences."""
    cp = 10
    structure = holed_block()
    structure[12:14, 3:7] = False                      # a second, off-centre slot: no symmetry to hide sign errors
    ny, nx = structure.shape
    fixed = {}
    for r in range(ny + 1):
        fixed[(r, 0, 0)], fixed[(r, nx, 0)] = 0.0, STRETCH
    fixed[(0, 0, 1)] = 0.0
    result = solve_full_scale(structure, stretch(), cell_pixels=cp, tol=1e-12, method=method, keep_solver=True)
    reference = _reference_solve(structure, np.ones(structure.shape), fixed, cp)
    np.testing.assert_allclose(result.macro_displacement, reference[::cp, ::cp], atol=1e-9)
    # J = sum_m w_m (u_m - t_m)^2 over the macro nodes' y components (the RRMSE's form)
    rng = np.random.default_rng(1)
    weights, target = rng.uniform(0.5, 2.0, (3, 4)), rng.normal(scale=0.05, size=(3, 4))

    def objective(u_fine):
        return float(np.sum(weights * (u_fine[::cp, ::cp, 1] - target) ** 2))

    gradient = np.zeros_like(result.macro_displacement)
    gradient[..., 1] = 2 * weights * (result.macro_displacement[..., 1] - target)
    sensitivity = result.sensitivity(gradient)
    assert sensitivity.shape == structure.shape
    eps = 1e-4  # truncation error ~eps^2; J's rounding dominates below ~1e-5
    for r, c in [(0, 0), (4, 12), (15, 25), (19, 29), (13, 8), (6, 2)]:
        scale = np.ones(structure.shape)
        scale[r, c] = 1 + eps
        up = objective(_reference_solve(structure, scale, fixed, cp))
        scale[r, c] = 1 - eps
        down = objective(_reference_solve(structure, scale, fixed, cp))
        assert sensitivity[r, c] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-12)


def test_amg_hierarchy_does_not_touch_numpys_global_random_state():
    state = np.random.get_state()
    a = solve_full_scale(holed_block(), stretch(), cell_pixels=10, method="amg", tol=1e-10)
    assert np.random.get_state()[1].tolist() == state[1].tolist()
    np.random.seed(123)
    b = solve_full_scale(holed_block(), stretch(), cell_pixels=10, method="amg", tol=1e-10)
    np.testing.assert_array_equal(a.displacement, b.displacement)


def test_sensitivity_needs_the_kept_solver():
    result = solve_full_scale(holed_block(), stretch(), cell_pixels=10)
    with pytest.raises(InvalidValueError, match="keep_solver"):
        result.sensitivity(np.zeros_like(result.macro_displacement))
