"""3D voxel FE core (issue 23): periodic homogenization (6 x 6 C), its adjoint gradient and the affine-boundary
bulk modulus, against closed forms, symmetries, finite differences and jax-fem's HEX8 assembly."""

import itertools

import numpy as np
import pytest

from metasys.composites import bulk_modulus, bulk_modulus_and_gradient
from metasys.errors import InvalidValueError
from metasys.fem import (
    affine_bulk_modulus_3d,
    homogenize,
    homogenize_voxel_fields,
    homogenize_voxels,
    homogenize_voxels_gradient,
)
from metasys.fem.voxel_element import VOIGT_3D, isotropic_constitutive_3d, lame
from metasys.material import Material


def _tensor(c):
    """Voigt (6, 6) stiffness (engineering shear) -> 4th-order tensor (3, 3, 3, 3)."""
    index = np.zeros((3, 3), int)
    for k, (i, j) in enumerate(VOIGT_3D):
        index[i, j] = index[j, i] = k
    return c[index[:, :, None, None], index[None, None]]


def _voigt(t):
    return np.array([[t[i, j, k, m] for (k, m) in VOIGT_3D] for (i, j) in VOIGT_3D])


def _rotate(c, r):
    """C' = R * C (all four indices) for an orthogonal (3, 3) R in (x, y, z) coordinates."""
    return _voigt(np.einsum("ia,jb,kc,ld,abcd->ijkl", r, r, r, r, _tensor(c)))


def _laminate(cs, fractions):
    """Exact stiffness of a laminate with normal z from layer stiffnesses (n, 6, 6) and volume fractions (n,).

    Continuous across the layers: the in-plane strains (11, 22, 12) and the tractions (33, 23, 13).
    """
    p, n = [0, 1, 5], [2, 3, 4]
    f = np.asarray(fractions)[:, None, None]
    cnn_inv = np.linalg.inv(cs[:, n][:, :, n])
    cpn = cs[:, p][:, :, n]
    eff_nn = np.linalg.inv((f * cnn_inv).sum(0))
    a = (f * cpn @ cnn_inv).sum(0)
    eff_pn = a @ eff_nn
    eff_pp = (f * (cs[:, p][:, :, p] - cpn @ cnn_inv @ np.swapaxes(cpn, 1, 2))).sum(0) + a @ eff_nn @ a.T
    out = np.zeros((6, 6))
    out[np.ix_(n, n)] = eff_nn
    out[np.ix_(p, n)] = eff_pn
    out[np.ix_(n, p)] = eff_pn.T
    out[np.ix_(p, p)] = eff_pp
    return out


@pytest.fixture
def cell(rng):
    """A generic (no symmetry) grayscale voxel cell, 5 x 6 x 4 (nz, ny, nx)."""
    return rng.random((5, 6, 4))


@pytest.mark.parametrize("material", [Material(), Material(E=3.0, nu=0.3), Material(E=2.0, nu=-0.2)])
def test_solid_cube_gives_the_isotropic_stiffness(material):
    c = homogenize(np.ones((2, 4, 5, 3)), material)
    assert c.shape == (2, 6, 6)
    expected = np.broadcast_to(isotropic_constitutive_3d(material.E, material.nu), c.shape)
    np.testing.assert_allclose(c, expected, rtol=0, atol=1e-10 * material.E)


def test_homogenize_dispatches_4d_and_keeps_3d_as_2d_batch(cell):
    np.testing.assert_array_equal(homogenize(cell[None]), homogenize_voxels(cell[None]))
    assert homogenize(cell).shape == (5, 3, 3)  # a 3D array stays a batch of pixel cells
    assert homogenize_voxels(cell).shape == (6, 6)


def test_laminate_matches_the_closed_form():
    # four layers along z with different E and nu, thicknesses 1, 2, 1, 2 voxels of 6
    e_layers, nu_layers, thick = np.array([1.0, 20.0, 5.0, 0.5]), np.array([0.3, 0.1, 0.45, 0.2]), np.array([1, 2, 1, 2])
    e = np.repeat(e_layers, thick)[:, None, None] * np.ones((6, 3, 4))
    nu = np.repeat(nu_layers, thick)[:, None, None] * np.ones((6, 3, 4))
    expected = _laminate(np.stack([isotropic_constitutive_3d(a, b) for a, b in zip(e_layers, nu_layers)]), thick / 6)
    c = homogenize_voxel_fields(e, nu)[0]
    np.testing.assert_allclose(c, expected, rtol=0, atol=1e-10 * np.abs(expected).max())
    # the density path: a two-phase laminate (Reuss normal to the layers, Voigt shear in the plane)
    material = Material.two_phase(1.0, 10.0, nu=0.3)
    rho = (np.arange(4) < 1)[None, None, :] * np.ones((4, 4, 4))  # layers along x: one solid voxel of four
    c = homogenize(rho[None], material)[0]
    cs = np.stack([isotropic_constitutive_3d(10.0, 0.3), isotropic_constitutive_3d(1.0, 0.3)])
    # the x-normal laminate is the z-normal one with x and z swapped
    swap = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]])
    np.testing.assert_allclose(c, _rotate(_laminate(cs, [0.25, 0.75]), swap), rtol=0, atol=1e-10 * 10)
    mu = lame(np.array([10.0, 1.0]), 0.3)[1]
    assert c[3, 3] == pytest.approx(np.dot([0.25, 0.75], mu), rel=1e-10)  # g23 in the layers' plane: Voigt
    assert c[5, 5] == pytest.approx(1.0 / np.dot([0.25, 0.75], 1.0 / mu), rel=1e-10)  # g12 across: Reuss


def test_cubic_symmetric_cell(rng):
    r = rng.random((6, 6, 6))
    sym = np.max([r.transpose(p) for p in itertools.permutations(range(3))], axis=0) > 0.6  # invariant under axis swaps
    c = homogenize(sym[None].astype(float))[0]
    scale = c[0, 0]
    for group in ([(0, 0), (1, 1), (2, 2)], [(3, 3), (4, 4), (5, 5)], [(0, 1), (0, 2), (1, 2)]):
        values = [c[i, j] for i, j in group]
        np.testing.assert_allclose(values, values[0], rtol=0, atol=1e-10 * scale)
    assert 0 < c[3, 3] < c[0, 0]


def test_translation_leaves_c_unchanged(cell):
    c = homogenize_voxels(cell)
    np.testing.assert_allclose(homogenize_voxels(np.roll(cell, (2, -1, 3), axis=(0, 1, 2))), c, rtol=0, atol=1e-12)


@pytest.mark.parametrize("op, q", [
    # new[z, y, x] = old at the point Q (x, y, z): the cell's material is rotated by R = Q^T
    (lambda a: a.transpose(2, 1, 0), [[0, 0, 1], [0, 1, 0], [1, 0, 0]]),  # swap x and z
    (lambda a: a.transpose(1, 0, 2), [[1, 0, 0], [0, 0, 1], [0, 1, 0]]),  # swap y and z
    (lambda a: np.flip(a, axis=2), [[-1, 0, 0], [0, 1, 0], [0, 0, 1]]),  # mirror x
    (lambda a: np.rot90(a, axes=(1, 2)), [[0, -1, 0], [1, 0, 0], [0, 0, 1]]),  # new(x, y) = old(x=-y, y=x)
    (lambda a: np.rot90(a, axes=(0, 2)), [[0, 0, -1], [0, 1, 0], [1, 0, 0]]),  # new(x, z) = old(x=-z, z=x)
])
def test_rotating_the_cell_rotates_c(rng, op, q):
    cell = rng.random((4, 4, 4))  # cubic grid: every rotation keeps the shape
    c = homogenize_voxels(cell)
    assert np.abs(c[0, 5]) > 1e-4  # a generic cell: the shear couplings that the signs act on are not zero
    np.testing.assert_allclose(homogenize_voxels(np.ascontiguousarray(op(cell))), _rotate(c, np.array(q).T), rtol=0, atol=1e-12)


def test_amg_solver_agrees_with_direct(cell):
    material = Material(nu=0.3, E_void=1e-3, penal=3.0)
    direct = homogenize_voxels(cell, material, solver="direct")
    amg = homogenize_voxels(cell, material, solver="amg", rtol=1e-10)
    np.testing.assert_allclose(amg, direct, rtol=0, atol=1e-12 * np.abs(direct).max())


@pytest.mark.parametrize("shape", [(8, 8, 8), (6, 8, 10), (8, 5, 6)])  # (8, 5, 6): z and x coarsened, y not
def test_multigrid_solver_agrees_with_direct(rng, shape):
    for material in [Material(nu=0.3), Material.two_phase(1.0, 100.0, nu=0.3)]:  # binary with the 1e-9 void, E 1 / 100
        cell = (rng.random(shape) > 0.5).astype(float)
        direct = homogenize_voxels(cell, material, solver="direct")
        mg = homogenize_voxels(cell, material, solver="mg")
        np.testing.assert_allclose(mg, direct, rtol=0, atol=1e-12 * np.abs(direct).max())
    e, nu = 1.0 + 1e4 * rng.random(shape) ** 4, 0.05 + 0.4 * rng.random(shape)  # per-voxel (E, nu), contrast ~1e4
    direct = homogenize_voxel_fields(e, nu, solver="direct")
    np.testing.assert_allclose(homogenize_voxel_fields(e, nu, solver="mg"), direct, rtol=0, atol=1e-12 * np.abs(direct).max())


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_a_batch_on_threads_gives_the_cells_one_by_one(rng, monkeypatch, threads):
    from metasys.fem import voxel

    cells = (rng.random((3, 8, 8, 8)) > 0.5).astype(float)
    material = Material.two_phase(1.0, 100.0, nu=0.3)
    one_by_one = np.concatenate([homogenize_voxels(c[None], material, solver="mg") for c in cells])
    monkeypatch.setattr(voxel, "CELL_THREADS", threads)
    np.testing.assert_array_equal(homogenize_voxels(cells, material, solver="mg"), one_by_one)
    e, nu = 1.0 + 99.0 * cells, np.full(cells.shape, 0.3)
    k_one = [affine_bulk_modulus_3d(e[i], nu[i], gradient=True)[1] for i in range(3)]
    np.testing.assert_array_equal(affine_bulk_modulus_3d(e, nu, gradient=True)[1], np.stack(k_one))


@pytest.mark.parametrize("shape", [(6, 8, 10), (7, 8, 6)])  # 7 voxels: that axis is not coarsened
def test_multigrid_bulk_modulus_agrees_with_direct(rng, shape):
    e = 1.0 + 300.0 * (rng.random(shape) > 0.6)
    nu = 0.2 + 0.2 * rng.random(shape)
    k, ge, gn = affine_bulk_modulus_3d(e, nu, gradient=True, solver="direct")
    k_mg, ge_mg, gn_mg = affine_bulk_modulus_3d(e, nu, gradient=True, solver="mg", rtol=1e-12)
    assert k_mg == pytest.approx(k, rel=1e-12)
    np.testing.assert_allclose(ge_mg, ge, rtol=0, atol=1e-9 * np.abs(ge).max())
    np.testing.assert_allclose(gn_mg, gn, rtol=0, atol=1e-9 * np.abs(gn).max())


def _fd(f, x, index, h):
    xp, xm = x.copy(), x.copy()
    xp[index] += h
    xm[index] -= h
    return (f(xp) - f(xm)) / (2 * h)


def test_density_gradient_matches_finite_differences(rng, cell):
    material = Material(nu=0.3, E_void=1e-3, penal=3.0)
    w = rng.standard_normal((6, 6))
    c, dj = homogenize_voxels_gradient(cell, material, w)
    _, dc = homogenize_voxels_gradient(cell, material)
    np.testing.assert_allclose(np.einsum("nzyxkl,kl->nzyx", dc, w), dj, rtol=1e-12, atol=1e-15)
    for index in [(0, 0, 0), (2, 3, 1), (4, 5, 3)]:
        fd = _fd(lambda x: np.sum(homogenize_voxels(x, material) * w), cell, index, 1e-6)
        assert dj[(0,) + index] == pytest.approx(fd, rel=1e-6, abs=1e-10)
    # the full dC, one entry: d C_13 / d rho
    fd = _fd(lambda x: homogenize_voxels(x, material)[0, 2], cell, (1, 1, 1), 1e-6)
    assert dc[0, 1, 1, 1, 0, 2] == pytest.approx(fd, rel=1e-6)


def test_field_gradients_match_finite_differences(rng):
    e = 1.0 + 50.0 * rng.random((4, 5, 4))
    nu = 0.05 + 0.4 * rng.random((4, 5, 4))
    w = rng.standard_normal((6, 6))
    _, ge, gn = homogenize_voxel_fields(e, nu, gradient=True, weights=w)
    for index in [(0, 0, 0), (3, 2, 1)]:
        fd_e = _fd(lambda x: np.sum(homogenize_voxel_fields(x, nu)[0] * w), e, index, 1e-5)
        fd_n = _fd(lambda x: np.sum(homogenize_voxel_fields(e, x)[0] * w), nu, index, 1e-7)
        assert ge[(0,) + index] == pytest.approx(fd_e, rel=1e-6)
        assert gn[(0,) + index] == pytest.approx(fd_n, rel=1e-5)
    # C is homogeneous of degree 1 in E: sum_e E_e dC/dE_e = C
    c, ge_full, _ = homogenize_voxel_fields(e, nu, gradient=True)
    np.testing.assert_allclose(np.einsum("zyx,nzyxkl->nkl", e, ge_full), c, rtol=1e-10, atol=1e-10 * np.abs(c).max())


@pytest.mark.parametrize("e, nu", [(100.0, 0.3), (1.0, 0.49), (7.0, 0.05)])
def test_homogeneous_bulk_modulus(e, nu):
    expected = e / (3 * (1 - 2 * nu))
    assert bulk_modulus(np.full((4, 5, 3), e), np.full((4, 5, 3), nu), dim=3) == pytest.approx(expected, rel=1e-12)
    k = bulk_modulus(np.full((2, 4, 4, 4), e), np.full((2, 4, 4, 4), nu), dim=3)
    np.testing.assert_allclose(k, expected, rtol=1e-12)


def test_bulk_modulus_3d_gradient_and_bounds(rng):
    e = 1.0 + 300.0 * (rng.random((5, 4, 5)) > 0.6)
    nu = 0.2 + 0.2 * rng.random((5, 4, 5))
    k, ge, gn = bulk_modulus_and_gradient(e, nu, dim=3)
    k_voxel = e / (3 * (1 - 2 * nu))
    assert 1.0 / np.mean(1.0 / k_voxel) < k < np.mean(k_voxel)  # affine BCs: below the uniform-strain (Voigt) bound
    for index in [(0, 0, 0), (2, 1, 3), (4, 3, 4)]:
        fd_e = _fd(lambda x: bulk_modulus(x, nu, dim=3), e, index, 1e-4)
        fd_n = _fd(lambda x: bulk_modulus(e, x, dim=3), nu, index, 1e-7)
        assert ge[index] == pytest.approx(fd_e, rel=1e-6)
        assert gn[index] == pytest.approx(fd_n, rel=1e-5)
    assert np.sum(ge * e) == pytest.approx(k, rel=1e-10)  # degree 1 in E
    # batch, AMG solver
    kb = affine_bulk_modulus_3d(np.stack([e, e[::-1]]), np.stack([nu, nu[::-1]]), solver="amg", rtol=1e-12)[0]
    assert kb[0] == pytest.approx(k, rel=1e-10)
    assert kb[1] == pytest.approx(affine_bulk_modulus_3d(e[::-1], nu[::-1])[0], rel=1e-10)


def test_bad_arguments_raise_clear_errors(cell):
    with pytest.raises(InvalidValueError, match="nu"):
        homogenize_voxel_fields(np.ones((4, 4, 4)), np.full((4, 4, 3), 0.3))
    with pytest.raises(InvalidValueError, match="dim"):
        bulk_modulus(np.ones((4, 4, 4)), np.full((4, 4, 4), 0.3), dim=4)
    with pytest.raises(InvalidValueError, match="E"):
        bulk_modulus(np.ones((4, 4)), np.full((4, 4), 0.3), dim=3)
    with pytest.raises(InvalidValueError, match="solver"):
        homogenize_voxels(cell, solver="cholmod")
    with pytest.raises(InvalidValueError, match="weights"):
        homogenize_voxels_gradient(cell, weights=np.ones(6))


@pytest.mark.slow
def test_agrees_with_jaxfem_hex8(rng):
    from metasys.fem.jaxfem_hex import homogenize_voxels_jaxfem

    material = Material(nu=0.3, E_void=1e-2)
    for shape in [(3, 4, 5), (4, 4, 4)]:
        e = 1.0 + 99.0 * (rng.random(shape) > 0.5)
        nu = 0.1 + 0.35 * rng.random(shape)
        c = homogenize_voxel_fields(e, nu)[0]
        np.testing.assert_allclose(homogenize_voxels_jaxfem(e, nu), c, rtol=0, atol=1e-8 * np.abs(c).max())
        rho = rng.random(shape)
        c = homogenize_voxels(rho, material)
        np.testing.assert_allclose(homogenize_voxels_jaxfem(material.modulus(rho), np.full(shape, 0.3)), c,
                                   rtol=0, atol=1e-8 * np.abs(c).max())
