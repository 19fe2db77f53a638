"""Compatibility measures (DESIGN.md §4), the assembly MRF over candidate sets, and assembly."""

from types import SimpleNamespace

import numpy as np
import pytest
from conftest import mirror
from scipy import ndimage

from metasys.errors import InvalidTypeError, InvalidValueError
from metasys.material import Material
from metasys.mrf import (
    TractionCache,
    assemble,
    boundary_lines,
    count_components,
    grid_edges,
    mrf_from_candidates,
    place_cells,
    solve_mrf,
    theta_g,
    theta_m,
    traction_profiles,
)

N = 12  # small cells keep the FE solves fast; every function takes any square size


def candidate_set(rng, h, w, n_labels, fill=0.6):
    """Random doubly symmetric cells (H, W, L, N, N) with a solid frame (so neighbours touch)."""
    cells = mirror(rng.random((h * w * n_labels, N // 2, N // 2)) < fill).reshape(h, w, n_labels, N, N)
    cells[..., N // 2 - 1 : N // 2 + 1, :] = True  # a solid cross keeps every cell connected
    cells[..., :, N // 2 - 1 : N // 2 + 1] = True
    flat = cells.reshape(-1, N, N)
    for k, cell in enumerate(flat):  # drop solid islands not attached to the cross
        lab = ndimage.label(cell)[0]
        flat[k] = lab == lab[N // 2, N // 2]
    return flat.reshape(cells.shape)


# ----------------------------------------------------------------------------- measures


def test_theta_g_of_known_pixel_lines():
    a = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], bool)
    b = np.array([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 0, 0]], bool)
    t = theta_g(a, b)
    assert t.shape == (3, 3)
    assert t[0, 0] == pytest.approx(2 / 3)  # exactly one solid at 2 positions, at least one at 3
    assert t[1, 1] == 1.0  # no solid on either side
    assert t[0, 2] == 0.0 and t[2, 2] == pytest.approx(0.5)  # identical lines; half of the solid unmatched
    assert t[1, 0] == 1.0 and t[2, 1] == 1.0  # solid facing void everywhere
    np.testing.assert_allclose(theta_g(b, a), t.T)


def test_theta_m_of_known_profiles(rng):
    a = rng.normal(size=(2, 3, 5, 2))
    assert theta_m(a, a)[0, 0] == pytest.approx(0.0)
    assert theta_m(a, -a)[1, 1] == pytest.approx(1.0)
    assert theta_m(a[:1], 2 * a[:1])[0, 0] == pytest.approx(1 / 3)
    assert theta_m(np.zeros((1, 4)), np.zeros((1, 4)))[0, 0] == 0.0
    assert np.all((theta_m(a, rng.normal(size=(4, 3, 5, 2))) >= 0) & (theta_m(a, rng.normal(size=(4, 3, 5, 2))) <= 1))
    with pytest.raises(InvalidValueError, match="theta_m"):
        theta_m(np.zeros((1, 4)), np.zeros((1, 5)))


def test_tractions_of_a_solid_cell_are_the_stiffness_columns():
    mat = Material()
    prof = traction_profiles(np.ones((N, N), bool), mat)
    assert prof.shape == (1, 2, 3, N, 2)
    c11, c12, c33 = 1 / (1 - mat.nu**2), mat.nu / (1 - mat.nu**2), 1 / (2 * (1 + mat.nu))
    # strain e11: sigma = (C11, C12, 0); x-normal t = (s11, s12), y-normal t = (s12, s22)
    expected_x = np.array([[c11, 0.0], [c12, 0.0], [0.0, c33]])
    expected_y = np.array([[0.0, c12], [0.0, c11], [c33, 0.0]])
    np.testing.assert_allclose(prof[0, 0], np.broadcast_to(expected_x[:, None, :], (3, N, 2)), atol=1e-9)
    np.testing.assert_allclose(prof[0, 1], np.broadcast_to(expected_y[:, None, :], (3, N, 2)), atol=1e-9)


def test_traction_cache_solves_each_distinct_cell_once(rng):
    cells = candidate_set(rng, 1, 1, 3)[0, 0]
    cache = TractionCache()
    batch = np.concatenate([cells, cells[::-1], cells[:1]])
    prof = cache.profiles(batch)
    assert cache.computed == 3 and len(cache) == 3
    np.testing.assert_array_equal(prof[0], prof[5])
    np.testing.assert_array_equal(prof[0], prof[6])
    np.testing.assert_allclose(prof[:3], traction_profiles(cells))
    cache.profiles(cells[1:])
    assert cache.computed == 3
    cache.profiles(cells, material=Material(nu=0.3))  # another material is another key
    assert cache.computed == 6


# ----------------------------------------------------------------------------- MRF from candidates


def test_mrf_from_candidates_node_order_and_edge_orientation(rng):
    h, w, n_labels = 2, 3, 3
    cells = candidate_set(rng, h, w, n_labels)
    cells[0, 0, 1, :, -1] = False  # right side of element (0, 0), label 1: void
    errors = rng.random((h, w, n_labels))
    cand = SimpleNamespace(cells=cells, errors=errors, indices=-np.ones((h, w, n_labels), int), covered=np.ones((h, w), bool))
    cache = TractionCache()
    model = mrf_from_candidates(cand, weight=0.5, tractions=cache)
    assert model.grid_shape == (h, w) and model.n_nodes == 6 and model.n_edges == 7
    np.testing.assert_array_equal(model.unary, errors.reshape(6, n_labels))  # node j * W + i is element (i, j)
    horizontal, vertical = grid_edges(h, w)
    np.testing.assert_array_equal(model.edges, np.concatenate([horizontal, vertical]))
    assert model.edges[0].tolist() == [0, 1] and model.edges[len(horizontal)].tolist() == [0, 3]
    lines = boundary_lines(cells)
    prof = cache.profiles(cells.reshape(-1, N, N)).reshape(h, w, n_labels, 2, 3, N, 2)
    # horizontal edge (0,0)-(1,0): right side of the first meets the left side of the second
    tg = theta_g(lines["right"][0, 0], lines["left"][0, 1])
    tm = theta_m(prof[0, 0, :, 0], prof[0, 1, :, 0])
    np.testing.assert_allclose(model.pairwise[0], tg + 0.5 * tm)
    assert np.all(model.info["theta_G"][0, 1] == 1.0)  # void side facing any cell
    # vertical edge (0,0)-(0,1): top of the lower meets the bottom of the upper
    e = len(horizontal)
    np.testing.assert_allclose(model.pairwise[e], theta_g(lines["top"][0, 0], lines["bottom"][1, 0])
                               + 0.5 * theta_m(prof[0, 0, :, 1], prof[1, 0, :, 1]))
    # identical neighbours are fully compatible: both measures vanish
    same = np.repeat(cells[:1, :1, :1], 2, axis=1)
    m2 = mrf_from_candidates(same, errors=np.zeros((1, 2, 1)), tractions=cache)
    assert m2.pairwise[0, 0, 0] == pytest.approx(0.0, abs=1e-12)


def test_mrf_from_candidates_checks_its_input(rng):
    cells = candidate_set(rng, 1, 2, 2)
    with pytest.raises(InvalidValueError, match="errors"):
        mrf_from_candidates(cells)
    with pytest.raises(InvalidValueError, match="errors must have shape"):
        mrf_from_candidates(cells, errors=np.zeros((2, 2)))
    with pytest.raises(InvalidValueError, match=r"\(H, W, L, n, n\)"):
        mrf_from_candidates(cells[0], errors=np.zeros((2, 2)))
    with pytest.raises(InvalidValueError, match="weight"):
        mrf_from_candidates(cells, errors=np.zeros((1, 2, 2)), weight=-1)
    with pytest.raises(InvalidTypeError, match="tractions"):
        mrf_from_candidates(cells, errors=np.zeros((1, 2, 2)), tractions={})
    m = mrf_from_candidates(cells, errors=np.zeros((1, 2, 2)), weight=0)  # geometry only: no FE solve
    np.testing.assert_allclose(m.pairwise, m.info["theta_G"])
    unary, edges, pairwise = m  # unpacks as the arguments of solve_mrf
    assert solve_mrf(unary, edges, pairwise).energy == pytest.approx(m.solve().energy)
    gray = np.where(cells, 0.8, 0.3)  # grayscale cells are solid where the density is >= 0.5
    np.testing.assert_allclose(mrf_from_candidates(gray, errors=np.zeros((1, 2, 2)), weight=0).pairwise, m.pairwise)


# ----------------------------------------------------------------------------- assembly


def test_place_cells_row_zero_at_the_bottom():
    h, w = 2, 3
    cells = np.zeros((h, w, 4, 4), int)
    for j in range(h):
        for i in range(w):
            cells[j, i] = 10 * j + i
    full = place_cells(cells)
    assert full.shape == (8, 12)
    for j in range(h):
        for i in range(w):
            assert np.all(full[4 * j : 4 * j + 4, 4 * i : 4 * i + 4] == 10 * j + i)


def test_component_count_uses_four_connectivity():
    solid, void = np.ones((N, N), bool), np.zeros((N, N), bool)
    checker = np.array([[[solid, void], [void, solid]]]).reshape(2, 2, 1, N, N)  # diagonal contact only
    a = assemble(checker, np.zeros(4, int), mechanical=False)
    assert a.n_components == 2 and count_components(a.structure) == 2
    assert a.theta_G_zero_fraction == 0.0 and a.theta_G_mean == 1.0 and np.isnan(a.theta_M_mean)
    row = np.array([[solid, solid]]).reshape(1, 2, 1, N, N)
    b = assemble(row, np.zeros(2, int))
    assert b.n_components == 1 and b.theta_G_zero_fraction == 1.0 and b.theta_M_mean == pytest.approx(0.0, abs=1e-12)


def test_assemble_chosen_candidates_and_statistics_match_the_model(rng):
    h, w, n_labels = 3, 3, 3
    cells = candidate_set(rng, h, w, n_labels)
    cand = SimpleNamespace(cells=cells, errors=rng.random((h, w, n_labels)))
    cache = TractionCache()
    model = mrf_from_candidates(cand, tractions=cache)
    res = solve_mrf(model.unary, model.edges, model.pairwise, rel_gap=1e-9)
    a = assemble(cand, res, tractions=cache)
    x = res.labels.reshape(h, w)
    assert a.structure.shape == (N * h, N * w) and a.structure.dtype == bool
    np.testing.assert_array_equal(a.structure[N : 2 * N, 2 * N : 3 * N], cells[1, 2, x[1, 2]])  # element (2, 1)
    e = model.edges
    tg = model.info["theta_G"][np.arange(len(e)), res.labels[e[:, 0]], res.labels[e[:, 1]]]
    tm = model.info["theta_M"][np.arange(len(e)), res.labels[e[:, 0]], res.labels[e[:, 1]]]
    np.testing.assert_allclose(a.theta_G, tg)
    np.testing.assert_allclose(a.theta_M, tm)
    assert a.theta_G_mean == pytest.approx(tg.mean()) and a.theta_G_zero_fraction == pytest.approx(np.mean(tg == 0))
    assert res.energy == pytest.approx(model.unary[np.arange(9), res.labels].sum() + tg.sum() + tm.sum())
    assert a.n_components == 1  # every candidate has a solid cross reaching all four sides
    assert assemble(cand, x, mechanical=False).stats["n_components"] == 1
    with pytest.raises(InvalidValueError, match="labels"):
        assemble(cand, np.full(9, n_labels))
    with pytest.raises(InvalidValueError, match="labels"):
        assemble(cand, np.zeros(8, int))
