"""metasys's homogenization agrees with the same periodic problem assembled by jax-fem."""

import numpy as np
import pytest

from metasys.fem import homogenize
from metasys.fem.jaxfem_bridge import assemble_jaxfem, homogenize_jaxfem
from metasys.material import Material


def mirror(quarter: np.ndarray) -> np.ndarray:
    """Doubly mirror-symmetric cell (2 qy, 2 qx) from its lower-left quarter (qy, qx)."""
    bottom = np.hstack([quarter, quarter[:, ::-1]])
    return np.vstack([bottom, bottom[::-1]])


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_solid_cell_gives_the_base_material_in_both():
    material = Material()
    solid = np.ones((8, 8))
    np.testing.assert_allclose(homogenize_jaxfem(solid, material), material.constitutive(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(homogenize(solid, material), material.constitutive(), rtol=0, atol=1e-10)


_rng = np.random.default_rng(2024)
CASES = {
    "binary 50x50 mirror-symmetric": (mirror(_rng.random((25, 25)) < 0.7).astype(np.uint8), Material()),
    "grayscale 12x10 penal 3": (_rng.random((12, 10)), Material(penal=3)),
    "two-phase 16x20 E1/E0 = 100": (_rng.random((16, 20)) < 0.5, Material.two_phase(1, 100, nu=0.3)),
    "grayscale 12x10 plane strain": (_rng.random((12, 10)), Material(nu=0.3, plane="strain", penal=3)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_homogenize_agrees_with_jaxfem_assembly(name):
    cell, material = CASES[name]
    expected = homogenize_jaxfem(cell, material)
    assert relative_difference(homogenize(cell, material), expected) < 1e-8


def test_batch_equals_single_cells():
    cells = np.stack([CASES["grayscale 12x10 penal 3"][0], CASES["grayscale 12x10 plane strain"][0]])
    material = Material(penal=3)
    batch = homogenize_jaxfem(cells, material)
    assert batch.shape == (2, 3, 3)
    np.testing.assert_array_equal(batch[1], homogenize_jaxfem(cells[1], material))


def test_assembled_stiffness_is_symmetric_with_rigid_translations_in_its_kernel():
    cell = CASES["grayscale 12x10 penal 3"][0]
    k = assemble_jaxfem(cell, Material(penal=3))
    assert k.shape == (2 * 13 * 11, 2 * 13 * 11)
    assert abs(k - k.T).max() < 1e-14 * abs(k).max()
    translations = np.kron(np.ones(13 * 11)[:, None], np.eye(2))  # (dofs, 2): u = (1, 0) and (0, 1)
    assert abs(k @ translations).max() < 1e-12 * abs(k).max()
