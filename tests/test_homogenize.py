"""Physical and mathematical facts of periodic homogenization."""

import numpy as np
import pytest
from conftest import mirror

from metasys import Material, homogenize
from metasys.errors import InvalidCellError, InvalidTypeError
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
    (np.ones((2, 3, 4, 5)), InvalidCellError),
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
