"""Database seeds by SIMP inverse homogenization: filter chain rule, bounds, reproducibility, reach."""

import dataclasses

import numpy as np
import pytest

from metasys import Material, homogenize
from metasys.database.seeds import (
    MAX_COUPLING,
    MAX_VOLUME_FRACTION,
    TARGET_BOX,
    SeedResult,
    filter_quarter,
    filter_quarter_adjoint,
    hat_kernel,
    initial_design,
    optimize_seed,
    optimize_seeds,
    required_volume_fraction,
    sample_targets,
    seed_objective,
)
from metasys.errors import InvalidValueError
from metasys.fem import mirror_quarter
from metasys.fem.element import properties_of

D = properties_of(Material().constitutive())


def cross_cell(width: int = 10) -> np.ndarray:
    """50x50 cell with a horizontal and a vertical bar of ``width`` pixels through the centre."""
    cell = np.zeros((50, 50), bool)
    lo, hi = 25 - width // 2, 25 + width - width // 2
    cell[lo:hi, :] = True
    cell[:, lo:hi] = True
    return cell


def test_filter_transpose_and_chain_rule_match_finite_differences(rng):
    kernel = hat_kernel(2.5)
    x, y = rng.random((25, 25)), rng.random((25, 25))
    # Transpose identity <F x, y> = <x, F^T y> of the mirrored periodic filter.
    assert np.vdot(filter_quarter(x, kernel), y) == pytest.approx(np.vdot(x, filter_quarter_adjoint(y, kernel)), rel=1e-12)
    # The filtered quarter is the quarter of a filtered periodic cell: the mean density is kept.
    assert filter_quarter(x, kernel).mean() == pytest.approx(x.mean(), rel=1e-12)

    # Whole chain (filter -> projection -> SIMP homogenization -> objective) along random directions.
    simp = Material(penal=3.0, E_void=1e-4)
    target = np.array([0.3, 0.1, 0.2, 0.05])
    x = 0.2 + 0.6 * rng.random((25, 25))
    for beta in (0.0, 8.0):
        _, grad = seed_objective(x, target, simp, kernel, beta, D[0])
        for _ in range(2):
            d = rng.standard_normal((25, 25))
            h = 1e-5
            fp, _ = seed_objective(x + h * d, target, simp, kernel, beta, D[0])
            fm, _ = seed_objective(x - h * d, target, simp, kernel, beta, D[0])
            assert (fp - fm) / (2 * h) == pytest.approx(np.vdot(grad, d), rel=1e-5)


def test_hat_kernel_is_a_normalized_symmetric_cone():
    k = hat_kernel(1.5)
    assert k.shape == (3, 3)
    assert k.sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(k, k.T)
    np.testing.assert_array_equal(k, k[::-1, ::-1])
    assert k[1, 1] > k[0, 1] > k[0, 0] > 0
    with pytest.raises(InvalidValueError, match="filter_radius"):
        hat_kernel(0.5)


def test_sample_targets_are_positive_definite_in_box_and_within_bounds():
    targets = sample_targets(500, np.random.default_rng(1))
    assert targets.shape == (500, 4)
    lo, hi = TARGET_BOX[0] * D, TARGET_BOX[1] * D
    assert np.all(targets >= lo) and np.all(targets <= hi)
    assert np.all(targets[:, 0] * targets[:, 2] > targets[:, 1] ** 2)
    assert np.all(np.abs(targets[:, 1]) <= MAX_COUPLING * np.sqrt(targets[:, 0] * targets[:, 2]) + 1e-12)
    assert np.all(required_volume_fraction(targets) <= MAX_VOLUME_FRACTION)
    # Uniform in the box: both signs of C12 occur, and each marginal spans most of its range.
    assert targets[:, 1].min() < 0 < targets[:, 1].max()
    assert np.all(targets.max(axis=0) - targets.min(axis=0) > 0.5 * (hi - lo))
    np.testing.assert_array_equal(targets, sample_targets(500, np.random.default_rng(1)))
    assert sample_targets(0, np.random.default_rng(1)).shape == (0, 4)


def test_required_volume_fraction_is_a_valid_bound_for_real_cells(rng):
    # The Voigt and Hashin-Shtrikman bounds hold for every cell: the bound never exceeds the actual fraction.
    # Smooth cells: pixel noise with corner-only contacts is artificially stiff in Q4 elements (the
    # checkerboard artefact) and can beat continuum bounds.
    quarters = np.array([initial_design(rng, 25, (0.2, 0.95), 2.0, 0.5) > 0.5 for _ in range(30)])
    cells = mirror_quarter(quarters)
    p = properties_of(homogenize(cells))
    assert np.all(required_volume_fraction(p) <= cells.mean(axis=(1, 2)) + 1e-9)
    assert required_volume_fraction(D)[0] == pytest.approx(1.0)


def test_seed_cells_are_binary_mirror_symmetric_and_reproducible():
    target = sample_targets(1, np.random.default_rng(3))[0]
    a = optimize_seed(target, np.random.default_rng(7), max_iter=30)
    b = optimize_seed(target, np.random.default_rng(7), max_iter=30)
    assert isinstance(a, SeedResult)
    assert a.cell.dtype == bool and a.cell.shape == (50, 50)
    np.testing.assert_array_equal(a.cell, a.cell[::-1, :])
    np.testing.assert_array_equal(a.cell, a.cell[:, ::-1])
    assert a.density.shape == (25, 25) and 0 <= a.density.min() and a.density.max() <= 1
    np.testing.assert_array_equal(a.cell, mirror_quarter(a.density >= 0.5))
    # Same target and seed -> identical cell, also through the chunk loop.
    np.testing.assert_array_equal(a.cell, b.cell)
    np.testing.assert_array_equal(a.history, b.history)
    (c,) = optimize_seeds(target[None], [7], max_iter=30)
    np.testing.assert_array_equal(a.cell, c.cell)
    assert c.seed == 7
    # Properties are those of the binary cell with the database material, and error is their max-norm miss.
    np.testing.assert_allclose(a.properties, properties_of(homogenize(a.cell)), rtol=1e-12)
    assert a.error == pytest.approx(np.max(np.abs(a.properties - target)) / D[0])
    assert a.iterations == len(a.history) <= 30


def test_reaches_the_properties_of_a_known_cross_cell():
    target = properties_of(homogenize(cross_cell()))
    errors = [r.error for r in optimize_seeds(np.tile(target, (2, 1)), [0, 1])]
    assert max(errors) < 0.05, errors  # measured 0.003 and 0.001 (0.022 at worst over six seeds)
    # Binary properties use the original material, whatever SIMP settings the caller passes.
    material = dataclasses.replace(Material(), E=2.0)
    res = optimize_seed(2.0 * target, np.random.default_rng(0), material, max_iter=40)
    np.testing.assert_allclose(res.properties, properties_of(homogenize(res.cell, material)))


def test_bad_inputs_raise_invalid_value_error():
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidValueError, match="target"):
        optimize_seed(np.ones(3), rng)
    with pytest.raises(InvalidValueError, match="target"):
        optimize_seed(np.ones((2, 4)), rng)
    with pytest.raises(InvalidValueError, match="targets"):
        optimize_seeds(np.ones((2, 3)), [0, 1])
    with pytest.raises(InvalidValueError, match="seeds"):
        optimize_seeds(np.ones((2, 4)), [0])
    with pytest.raises(InvalidValueError, match="resolution"):
        optimize_seed(np.ones(4), rng, resolution=49)
    with pytest.raises(InvalidValueError, match="n must"):
        sample_targets(-1, rng)
    with pytest.raises(InvalidValueError, match="box"):
        sample_targets(3, rng, box=np.ones((2, 3)))
