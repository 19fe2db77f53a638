"""Discrete polish of binary cells (metasys.diffusion.polish): exact recovery, monotone loss, symmetry, validity."""

import numpy as np
import pytest

from metasys import Database, Material, homogenize
from metasys.database.repair import validity_report
from metasys.diffusion.generate import default_loss
from metasys.diffusion.polish import polish_cells


@pytest.fixture(scope="module")
def db_cells():
    db = Database.default()
    return db.get_cells(np.array([11, 4000, 52000, 90000]))


def _orbit_flip(cell, r, c):
    out = cell.copy()
    for rr, cc in ((r, c), (49 - r, c), (r, 49 - c), (49 - r, 49 - c)):
        out[rr, cc] ^= True
    return out


def _boundary_pixel(cell, rng):
    """A quarter pixel on the phase boundary whose orbit flip keeps the cell valid."""
    nb = np.zeros_like(cell)
    for ax in (0, 1):
        for s in (1, -1):
            nb |= np.roll(cell, s, axis=ax) != cell
    rows, cols = np.nonzero(nb[:25, :25])
    for k in rng.permutation(len(rows)):
        trial = _orbit_flip(cell, rows[k], cols[k])
        if all(validity_report(trial).values()):
            return rows[k], cols[k]
    raise AssertionError("no valid boundary flip")


def test_one_flip_away_from_the_target_is_recovered_exactly(db_cells):
    """A target made from a database cell, started one valid orbit flip away: with every boundary pixel
    evaluated the polish makes exactly the one flip back and reaches zero loss."""
    rng = np.random.default_rng(0)
    mat = Material()
    loss = default_loss(mat.E / 100)
    start = np.stack([_orbit_flip(c, *_boundary_pixel(c, rng)) for c in db_cells])
    targets = homogenize(db_cells, mat)
    cells, stiffness, f, flips = polish_cells(start, targets, loss, mat, max_flips=5, width=700, tol=1e-12)
    np.testing.assert_array_equal(flips, 1)
    np.testing.assert_array_equal(cells, db_cells)
    np.testing.assert_allclose(stiffness, targets, atol=1e-12)
    assert np.all(f < 1e-8)


def test_polish_lowers_the_loss_keeps_symmetry_and_validity(db_cells):
    mat = Material()
    loss = default_loss(mat.E / 100)
    c0 = homogenize(db_cells, mat)
    targets = c0 * np.array([[1.03, 1.0, 0], [1.0, 0.97, 0], [0, 0, 1.02]])        # a few percent away
    f0 = np.array([float(loss(c, t)) for c, t in zip(c0, targets)])
    cells, stiffness, f, flips = polish_cells(db_cells, targets, loss, mat, max_flips=15)
    assert np.all(f <= f0) and np.all(f[flips > 0] < f0[flips > 0]) and flips.sum() > 0
    np.testing.assert_allclose(stiffness, homogenize(cells, mat), atol=1e-12)
    # the loss is evaluated by JAX in float32
    np.testing.assert_allclose(f, [float(loss(c, t)) for c, t in zip(stiffness, targets)], rtol=1e-4, atol=1e-9)
    rep = validity_report(cells)
    assert all(v.all() for v in rep.values())                                       # symmetric, connected, ...
    np.testing.assert_array_equal(np.count_nonzero(cells != db_cells, axis=(1, 2)) <= 4 * flips, True)


def test_two_phase_cells_without_symmetry():
    """Non-symmetric two-phase cells: single-pixel flips, the loss never rises, max_flips respected."""
    rng = np.random.default_rng(3)
    mat = Material.two_phase(1.0, 100.0)
    loss = default_loss(mat.E / 100)
    cells = rng.random((3, 50, 50)) < 0.5
    target = np.array([[50, 15, 0], [15, 70, 0], [0, 0, 15.0]])
    f0 = np.array([float(loss(c, target)) for c in homogenize(cells, mat)])
    out, stiffness, f, flips = polish_cells(cells, np.broadcast_to(target, (3, 3, 3)), loss, mat, max_flips=4)
    assert np.all(f < f0) and np.all(flips <= 4)
    np.testing.assert_array_equal(np.count_nonzero(out != cells, axis=(1, 2)), flips)
    np.testing.assert_array_equal(polish_cells(cells, np.broadcast_to(target, (3, 3, 3)), loss, mat, max_flips=0)[0], cells)


def test_pairs_are_predicted_from_summed_single_flip_changes():
    """Two single flips that each overshoot but cancel together: the pair with the exact summed change wins."""
    from metasys.diffusion.polish import _best_pairs

    loss = default_loss(1.0)
    import jax
    import jax.numpy as jnp

    vg = jax.jit(jax.vmap(jax.value_and_grad(loss)))

    def evaluate(c, t):
        f, g = vg(jnp.asarray(c, jnp.float32), jnp.asarray(t, jnp.float32))
        return np.asarray(f, float), np.asarray(g, float)

    c = np.diag([10.0, 10.0, 3.0])
    target = np.diag([10.5, 10.0, 3.0])
    d = {7: np.diag([1.0, 0.5, 0.0]), 9: np.diag([-0.5, -0.5, 0.0]), 11: np.diag([2.0, 0.0, 0.0])}
    tried = (list(d), [c + v for v in d.values()])
    a, b = _best_pairs(tried, c, target, evaluate, 1)
    assert {int(a[0]), int(b[0])} == {7, 9}                       # 10 + 1 - 0.5 = 10.5, 10 + 0.5 - 0.5 = 10
    assert len(_best_pairs(([3], [c]), c, target, evaluate, 4)[0]) == 0
