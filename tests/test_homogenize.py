"""Physical and mathematical facts of periodic homogenization."""

import numpy as np
import pytest
from conftest import mirror

from metasys import Material, homogenize
from metasys.errors import InvalidCellError, InvalidTypeError, InvalidValueError, SolverError
from metasys.fem import boundary_tractions, homogenize_fields


@pytest.mark.parametrize("material", [Material(), Material(E=2.5, nu=0.3, plane="strain")])
def test_solid_cell_gives_base_material(material):
    np.testing.assert_allclose(homogenize(np.ones((50, 50), bool), material), material.constitutive(), atol=1e-10 * material.E)


def test_solid_rectangular_resolution():
    np.testing.assert_allclose(homogenize(np.ones((7, 12))), Material().constitutive(), atol=1e-10)


def test_symmetric_positive_definite(rng):
    cells = rng.random((5, 30, 26)) < 0.55
    c = homogenize(cells)
    np.testing.assert_allclose(c, np.swapaxes(c, 1, 2), atol=1e-12)
    assert np.all(np.linalg.eigvalsh(c) > 0)


def test_orthotropic_cells_have_no_shear_coupling(symmetric_cells):
    c = homogenize(symmetric_cells)
    assert np.abs(c[:, 0, 2]).max() < 1e-12 and np.abs(c[:, 1, 2]).max() < 1e-12


def test_rotation_swaps_c11_and_c22(rng):
    cell = rng.random((40, 40)) < 0.6
    c, r = homogenize(cell), homogenize(np.rot90(cell))
    np.testing.assert_allclose([r[0, 0], r[1, 1], r[0, 1], r[2, 2]], [c[1, 1], c[0, 0], c[0, 1], c[2, 2]], rtol=1e-9)
    np.testing.assert_allclose([r[0, 2], r[1, 2]], [-c[1, 2], -c[0, 2]], atol=1e-12)


def test_periodic_shift_invariance(rng):
    cell = rng.random((32, 36)) < 0.6
    shifted = np.roll(cell, (5, -11), axis=(0, 1))
    np.testing.assert_allclose(homogenize(shifted), homogenize(cell), rtol=1e-9, atol=1e-13)


def test_symmetric_fast_path_matches_general_solver(symmetric_cells):
    # A one-pixel periodic shift keeps C but breaks the mid-line symmetry, forcing the general solver.
    shifted = np.roll(symmetric_cells, 1, axis=2)
    np.testing.assert_allclose(homogenize(shifted), homogenize(symmetric_cells), rtol=1e-9, atol=1e-13)


def test_laminate_along_and_across_layers():
    f = 0.4
    cell = np.zeros((50, 50), bool)
    cell[:20] = True  # horizontal solid layer (along x) of volume fraction 0.4
    c = homogenize(cell)
    assert c[0, 0] == pytest.approx(f * 1.0, rel=1e-7)
    assert abs(c[1, 1]) < 1e-7 and abs(c[2, 2]) < 1e-7 and abs(c[0, 1]) < 1e-7


def test_voigt_and_reuss_bounds(rng):
    material = Material.two_phase(1.0, 100.0, nu=0.3)
    cells = rng.random((4, 20, 20))
    cells = (cells > 0.5).astype(float)
    c = homogenize(cells, material)
    d = material.unit_constitutive()
    for cell, ch in zip(cells, c):
        e = material.modulus(cell)
        voigt = e.mean() * d
        reuss = np.linalg.inv(np.mean(1.0 / e) * np.linalg.inv(d))
        assert np.linalg.eigvalsh(voigt - ch).min() > -1e-9
        assert np.linalg.eigvalsh(ch - reuss).min() > -1e-9


def test_grayscale_interpolation_uses_penal():
    # A uniform grey cell is a uniform material with the interpolated modulus.
    m = Material(penal=3.0)
    np.testing.assert_allclose(homogenize(np.full((10, 10), 0.5), m), m.modulus(0.5) * m.unit_constitutive(), rtol=1e-10)


def test_fields_are_consistent_with_c(symmetric_cells):
    f = homogenize_fields(symmetric_cells[:2])
    np.testing.assert_allclose(f.C, homogenize(symmetric_cells[:2]), rtol=1e-9, atol=1e-12)
    # Hill-Mandel: the mean stress under unit strain k is column k of C.
    np.testing.assert_allclose(f.stress.mean(axis=(2, 3)), np.swapaxes(f.C, 1, 2), rtol=1e-8, atol=1e-12)
    assert f.tractions["left"].shape == (2, 3, 50, 2) and f.tractions["top"].shape == (2, 3, 50, 2)


def test_quarter_fields_match_general_solver(symmetric_cells):
    """Fields of symmetric cells (mirrored quarter solves) equal those of the general periodic solve.

    A one-column periodic shift forces the general solver; shifting its fields back must give the
    same stresses, bottom/top traction profiles and (up to the ill-conditioned void nodes, where the
    ersatz modulus is 1e-9) fluctuations.
    """
    cells = symmetric_cells[:3]
    fast = homogenize_fields(cells)
    general = homogenize_fields(np.roll(cells, 1, axis=2))
    np.testing.assert_allclose(fast.stress, np.roll(general.stress, -1, axis=3), atol=1e-9)
    for edge in ("bottom", "top"):
        np.testing.assert_allclose(fast.tractions[edge], np.roll(general.tractions[edge], -1, axis=2), atol=1e-9)
    ref = np.roll(general.displacement, -1, axis=3)
    np.testing.assert_allclose(fast.displacement - fast.displacement[:, :, :1, :1], ref - ref[:, :, :1, :1], atol=1e-4)
    tractions = boundary_tractions(cells)
    for edge in ("left", "right", "bottom", "top"):
        np.testing.assert_allclose(tractions[edge], fast.tractions[edge], atol=1e-13)


def test_solid_cell_tractions_are_exact():
    d = Material().constitutive()
    t = homogenize_fields(np.ones((6, 8))).tractions
    np.testing.assert_allclose(t["right"][0, 0], np.tile([d[0, 0], 0.0], (6, 1)), atol=1e-12)
    np.testing.assert_allclose(t["left"][0, 0], np.tile([-d[0, 0], 0.0], (6, 1)), atol=1e-12)
    np.testing.assert_allclose(t["top"][0, 2], np.tile([d[2, 2], 0.0], (8, 1)), atol=1e-12)
    np.testing.assert_allclose(t["bottom"][0, 1], np.tile([0.0, -d[1, 1]], (8, 1)), atol=1e-12)


def test_single_and_batch_shapes(symmetric_cells):
    assert homogenize(symmetric_cells[0]).shape == (3, 3)
    assert homogenize(symmetric_cells).shape == (len(symmetric_cells), 3, 3)
    assert np.allclose(homogenize(mirror(symmetric_cells[:1, :25, :25]))[0], homogenize(symmetric_cells[0]))


@pytest.mark.parametrize("bad, error", [
    (np.ones(50), InvalidCellError),
    (np.ones((2, 3, 4, 5, 6)), InvalidCellError),  # 4D arrays are voxel cells (issue 23); 5D is no cell shape
    (np.ones((2, 1, 4, 5)), InvalidCellError),  # voxel cells need sides >= 2
    (np.full((4, 4), 2.0), InvalidCellError),
    ("cell.npy", InvalidTypeError),
    (np.array([["a", "b"], ["c", "d"]]), InvalidTypeError),
])
def test_bad_cells_raise_clear_errors(bad, error):
    with pytest.raises(error, match="cells"):
        homogenize(bad)


def test_quarter_gradient_matches_finite_differences(rng):
    from metasys.fem import homogenize_quarter_gradient, mirror_quarter

    m = Material(penal=3.0, E_void=1e-4)
    q = rng.uniform(0.1, 1.0, (2, 6, 5))
    c, dc = homogenize_quarter_gradient(q, m)
    np.testing.assert_allclose(c, homogenize(mirror_quarter(q), m), rtol=1e-12, atol=1e-14)
    d = rng.normal(size=q.shape)
    h = 1e-6
    fd = (homogenize(mirror_quarter(q + h * d), m) - homogenize(mirror_quarter(q - h * d), m)) / (2 * h)
    np.testing.assert_allclose(np.einsum("nyxkl,nyx->nkl", dc, d), fd, rtol=1e-6, atol=1e-9)


def laminate_stiffness(rows, material):
    """Exact C of a cell layered along x (row r has density rows[r]) with layers normal to y.

    Continuity of e11 and of the tractions s22, s12 across the layers gives C22, C33, C12 from the
    harmonic (Reuss) mean H of the moduli and C11 from the arithmetic (Voigt) mean A:
    C = H D except C11 = A s + H (D11 - s), s = D11 - D12^2 / D22 (D the unit constitutive matrix).
    Q4 elements represent the piecewise linear fluctuation exactly, so the FE value is this too.
    """
    e = material.modulus(np.asarray(rows, dtype=float))
    d = material.unit_constitutive()
    arithmetic, harmonic = e.mean(), 1.0 / np.mean(1.0 / e)
    s = d[0, 0] - d[0, 1] ** 2 / d[1, 1]
    c = harmonic * d
    c[0, 0] = arithmetic * s + harmonic * (d[0, 0] - s)
    return c


@pytest.mark.parametrize("material", [Material(), Material(nu=0.3, plane="strain")])
@pytest.mark.parametrize("void_rows", [[0], [24, 25]])
def test_thin_void_layer_matches_laminate_closed_form(material, void_rows):
    # A solid cell cut by a thin void layer: C22, C33 and C12 are ~1e-8, about 1e-8 of the sums of
    # element energies they would be the difference of; summed from element energies they keep
    # their relative accuracy (the difference form lost 4e-7 to 4e-6 of them).
    rows = np.ones(50)
    rows[void_rows] = 0.0
    cell = np.repeat(rows[:, None], 50, axis=1)
    expected = laminate_stiffness(rows, material)
    assert expected[1, 1] < 1e-7 * expected[0, 0]
    swap = [1, 0, 2]
    variants = {
        "as is": homogenize(cell, material),
        "shifted by 3 rows (general solver)": homogenize(np.roll(cell, 3, axis=0), material),
        "transposed (layers normal to x)": homogenize(cell.T, material)[np.ix_(swap, swap)],
    }
    for name, c in variants.items():
        for i, j in [(1, 1), (2, 2), (0, 1), (0, 0)]:
            assert c[i, j] == pytest.approx(expected[i, j], rel=1e-11), (name, i, j)
        assert abs(c[0, 2]) < 1e-15 and abs(c[1, 2]) < 1e-15, name


def _hinged_pixel_cell(n, r, c, d):
    """Solid n x n cell with pixel (r, c) held only at one corner (by pixel (r + d[0], c + d[1]))."""
    cell = np.ones((n, n))
    cell[r - 1 : r + 2, c - 1 : c + 2] = 0.0
    cell[r, c] = 1.0
    cell[r + d[0], c + d[1]] = 1.0
    return cell


@pytest.mark.parametrize("cell", [
    _hinged_pixel_cell(10, 2, 2, (1, 1)),
    _hinged_pixel_cell(10, 3, 4, (1, -1)),
    _hinged_pixel_cell(8, 4, 4, (-1, 1)),
    _hinged_pixel_cell(16, 3, 4, (-1, 1)),
    np.pad(np.ones((6, 6)), 1)[:, :7],  # void layer with no modulus: nodes that belong to no solid pixel
    mirror(_hinged_pixel_cell(6, 2, 2, (1, 1))[None])[0],  # doubly symmetric: the quarter solver
], ids=["hinge-a", "hinge-b", "hinge-c", "hinge-d", "void-layer", "symmetric-hinge"])
def test_singular_cell_without_ersatz_void_raises_solver_error(cell):
    # With E_void = 0 a pixel held at a single node can turn freely: the periodic problem is singular.
    # Round-off leaves pivots of ~1e-16 of the diagonal there; they must not pass for positive.
    with pytest.raises(SolverError, match="singular"):
        homogenize(cell, Material(E_void=0.0))
    c = homogenize(cell)  # the ersatz void (1e-9) makes the same cell regular
    assert np.all(np.isfinite(c)) and np.all(np.linalg.eigvalsh(c) > 0)


def test_cells_without_ersatz_void_but_no_floppy_part_still_solve():
    # E_void = 0 is fine where every node belongs to a solid pixel held on two or more nodes.
    cell = np.ones((12, 12))
    cell[4, 5] = cell[7, 2] = 0.0
    c0, c = homogenize(np.stack([cell, np.roll(cell, 1, axis=1)]), Material(E_void=0.0))
    np.testing.assert_allclose(c, c0, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(c0, homogenize(cell, Material(E_void=1e-12)), rtol=1e-9)



@pytest.mark.parametrize("n", [8, 12, 13])
def test_lane_groups_match_single_cells_and_name_the_singular_one(rng, n):
    # Groups of 8 cells are factorized together (a cell per SIMD lane); a remainder of up to 4 cells
    # is solved cell by cell, a larger one as a group padded with copies of its first cell.
    cells = (rng.random((n, 10, 10)) < 0.6).astype(float)
    alone = np.stack([homogenize(cell) for cell in cells])
    np.testing.assert_allclose(homogenize(cells), alone, rtol=1e-12, atol=1e-14)
    solid = np.ones((n, 10, 10))
    solid[:, 4, 5] = solid[:, 7, 2] = 0.0  # regular without ersatz void, and not symmetric: all in one solve
    solid[n - 2] = _hinged_pixel_cell(10, 2, 2, (1, 1))
    with pytest.raises(SolverError, match=f"system {n - 2} of the batch"):
        homogenize(solid, Material(E_void=0.0))

@pytest.mark.parametrize("material", [Material(), Material(E=2.5, nu=0.3, plane="strain")])
def test_two_by_two_cells(material):
    np.testing.assert_allclose(homogenize(np.ones((2, 2)), material), material.constitutive(), atol=1e-12 * material.E)
    patterns = np.array([[[1, 0], [1, 1]], [[1, 0], [0, 1]], [[1, 1], [0, 0]], [[0.3, 1.0], [0.7, 0.1]]])
    # Tiling a periodic cell changes nothing: its periodic solution is the tiled cell's too.
    np.testing.assert_allclose(homogenize(patterns, material), homogenize(np.tile(patterns, (1, 2, 2)), material),
                               rtol=1e-12, atol=1e-12 * material.E)
    fields = homogenize_fields(patterns, material)
    np.testing.assert_allclose(fields.C, homogenize(patterns, material), rtol=1e-12, atol=1e-12 * material.E)
    assert boundary_tractions(patterns, material)["left"].shape == (4, 3, 2, 2)


def test_results_do_not_depend_on_the_batch_size(rng, symmetric_cells):
    from metasys.fem import homogenize_quarter_gradient

    general = (rng.random((5, 14, 12)) < 0.6).astype(float)
    for cells in (symmetric_cells[:5], general):
        np.testing.assert_array_equal(homogenize(cells, batch_size=2), homogenize(cells))
        one, all_ = homogenize_fields(cells, batch_size=2), homogenize_fields(cells, batch_size=100)
        for name in ("C", "displacement", "stress", "element_energy"):
            np.testing.assert_array_equal(getattr(one, name), getattr(all_, name), err_msg=name)
        small, large = boundary_tractions(cells, batch_size=3), boundary_tractions(cells)
        for edge in large:
            np.testing.assert_array_equal(small[edge], large[edge], err_msg=edge)
            np.testing.assert_array_equal(one.tractions[edge], large[edge], err_msg=edge)
    q = rng.uniform(0.1, 1.0, (5, 6, 5))
    for a, b in zip(homogenize_quarter_gradient(q, batch_size=2), homogenize_quarter_gradient(q)):
        np.testing.assert_array_equal(a, b)


def test_tuning_knobs_are_keyword_only(symmetric_cells):
    from metasys.fem import homogenize_quarter_gradient

    with pytest.raises(TypeError):
        homogenize(symmetric_cells, Material(), 64)
    with pytest.raises(TypeError):
        homogenize_fields(symmetric_cells, Material(), 64)
    with pytest.raises(TypeError):
        boundary_tractions(symmetric_cells, Material(), 64)
    with pytest.raises(TypeError):
        homogenize_quarter_gradient(symmetric_cells[:, :25, :25], Material(), 64)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(InvalidValueError, match="batch_size"):
            homogenize(symmetric_cells, batch_size=bad)
