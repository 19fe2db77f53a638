"""Full-scale refinement (metasys.pipeline.refine): the adjoint swap estimate against exact re-solves, monotone
refinement, loose parts joined, the design's history in report.json."""

import numpy as np
import pytest
from test_design import small_arch

from metasys import Database
from metasys.fem.full_scale import solve_full_scale
from metasys.macro.optimization import optimize_properties
from metasys.mrf import mrf_from_candidates, place_cells, solve_mrf
from metasys.pipeline.refine import connect, edge_energy_change, refine, rrmse_and_gradient, swap_estimates
from metasys.selection.candidates import diverse_candidates


@pytest.fixture(scope="module")
def assembled():
    """A 4 x 2 arch assembled from 4 database candidates per element by the MRF."""
    problem, db = small_arch(), Database.default()
    macro = optimize_properties(problem, db, start=None, max_iterations=60)
    cands = diverse_candidates(macro.properties, k=4, database=db, seed=0)
    unary, edges, pairwise = mrf_from_candidates(cands, material=db.material)
    labels = np.asarray(solve_mrf(unary, edges, pairwise).labels).reshape(problem.height, problem.width)
    return problem, db, np.asarray(cands.cells), np.asarray(cands.properties), labels, edges, pairwise


def _solve(problem, db, cells, labels):
    structure = place_cells(np.take_along_axis(cells, labels[:, :, None, None, None], axis=2)[:, :, 0])
    return solve_full_scale(structure, problem.conditions, material=db.material, keep_solver=True)


def test_rrmse_gradient_matches_finite_differences(assembled):
    problem = assembled[0]
    rng = np.random.default_rng(0)
    u = rng.normal(scale=0.01, size=(problem.height + 1, problem.width + 1, 2))
    value, grad = rrmse_and_gradient(u, problem)
    for index in [(2, 1, 1), (2, 3, 1), (0, 0, 0)]:
        du = np.zeros_like(u)
        du[index] = 1e-7
        fd = (rrmse_and_gradient(u + du, problem)[0] - rrmse_and_gradient(u - du, problem)[0]) / 2e-7
        assert grad[index] == pytest.approx(fd, rel=1e-6, abs=1e-9)


def _bilinear_fine_field(nodal, cell=50):
    """Fine nodal field (cell H + 1, cell W + 1, 2) interpolating macro nodal values (H + 1, W + 1, 2) bilinearly."""
    h, w = nodal.shape[0] - 1, nodal.shape[1] - 1
    y = np.arange(cell * h + 1) / cell
    x = np.arange(cell * w + 1) / cell
    j, i = np.minimum(y.astype(int), h - 1), np.minimum(x.astype(int), w - 1)
    fy, fx = (y - j)[:, None, None], (x - i)[None, :, None]
    return ((1 - fy) * (1 - fx) * nodal[j][:, i] + (1 - fy) * fx * nodal[j][:, i + 1]
            + fy * (1 - fx) * nodal[j + 1][:, i] + fy * fx * nodal[j + 1][:, i + 1])


def test_swap_estimate_is_the_cell_level_bilinear_form():
    """For fields that are bilinear in every cell the estimate is exactly -lambda_e^T (K_e(p_l) - K_e(p)) u_e of the
    cell-level element (corners recovered from the boundary ring even where nodes are missing)."""
    from metasys.fem.element import NODE_OFFSETS, element_stiffness, orthotropic_constitutive

    rng = np.random.default_rng(0)
    h, w, n_labels = 2, 3, 4
    u_nodes, lam_nodes = rng.normal(size=(2, h + 1, w + 1, 2))
    displacement = _bilinear_fine_field(u_nodes)
    displacement[10:30, 60:90] = np.nan          # nodes outside the model (a void region) are left out of the fit
    adjoint = _bilinear_fine_field(lam_nodes)
    props = rng.uniform([0.2, -0.05, 0.2, 0.05], [0.6, 0.1, 0.6, 0.2], size=(h, w, n_labels, 4))
    labels = rng.integers(0, n_labels, size=(h, w))
    estimate = swap_estimates(displacement, adjoint, props, labels)
    for j, i, label in [(0, 0, 1), (1, 2, 3), (0, 1, 2), (1, 1, 0)]:
        corners = [(j + oy, i + ox) for ox, oy in NODE_OFFSETS]
        ue = np.concatenate([u_nodes[c] for c in corners])
        le = np.concatenate([lam_nodes[c] for c in corners])
        dk = element_stiffness(orthotropic_constitutive(props[j, i, label] - props[j, i, labels[j, i]]))
        assert estimate[j, i, label] == pytest.approx(-le @ dk @ ue, rel=1e-9, abs=1e-12)
    assert np.all(np.take_along_axis(estimate, labels[..., None], axis=-1) == 0)


def test_adjoint_estimates_of_small_swaps_rank_like_exact_resolves(assembled):
    """Swaps of a few pixels (removing 2 x 2 blocks inside solid members) on the 4 x 2 arch: the first-order change of
    the full-scale RRMSE from the pixel sensitivities has the sign of the exact re-solve's, and orders the swaps as the
    exact changes do."""
    from scipy import ndimage
    from scipy.stats import spearmanr

    problem, db, cells, _, labels, _, _ = assembled
    base = _solve(problem, db, cells, labels)
    value, grad = rrmse_and_gradient(base.macro_displacement, problem)
    sensitivity = base.sensitivity(grad)
    structure = base.kept
    inner = ndimage.binary_erosion(structure, iterations=3)          # blocks well inside solid members
    candidates = np.argwhere(inner[:-1, :-1] & inner[1:, :-1] & inner[:-1, 1:] & inner[1:, 1:])
    block_sum = sensitivity[:-1, :-1] + sensitivity[1:, :-1] + sensitivity[:-1, 1:] + sensitivity[1:, 1:]
    picked = candidates[np.argsort(block_sum[tuple(candidates.T)])]
    picked = np.concatenate([picked[-6:], picked[np.linspace(0, len(picked) - 7, 6).astype(int)]])  # best and spread
    estimate, exact = [], []
    for r, c in picked:
        trial = structure.copy()
        trial[r:r + 2, c:c + 2] = False
        fs = solve_full_scale(trial, problem.conditions, material=db.material)
        exact.append(rrmse_and_gradient(fs.macro_displacement, problem)[0] - value)
        estimate.append(-block_sum[r, c])                                # removing the block: ds = -1 on 4 pixels
    estimate, exact = np.array(estimate), np.array(exact)
    assert np.all(np.sign(exact) == np.sign(estimate))              # measured: 12 of 12 (the exact changes are larger:
    assert spearmanr(estimate, exact).statistic > 0.8               # a 2 x 2 hole is a finite change), rank corr. 0.90


def test_edge_energy_change_is_the_exact_energy_difference(assembled):
    problem, _, cells, _, labels, edges, pairwise = assembled
    x = labels.ravel()

    def energy(x):
        return float(pairwise[np.arange(len(edges)), x[edges[:, 0]], x[edges[:, 1]]].sum())

    delta = edge_energy_change(pairwise, edges, labels)
    for j, i, label in [(0, 0, 1), (1, 2, 3), (0, 3, 2)]:
        y = x.copy()
        y[j * problem.width + i] = label
        assert delta[j, i, label] == pytest.approx(energy(y) - energy(x), abs=1e-12)


def test_refinement_never_returns_a_worse_design(assembled):
    problem, db, cells, props, labels, edges, pairwise = assembled
    start = rrmse_and_gradient(_solve(problem, db, cells, labels).macro_displacement, problem)[0]
    out = refine(problem, cells, props, labels, pairwise, edges, material=db.material, max_iterations=6, budget=None)
    kept = [h["rrmse_full"] for h in out.history]
    assert kept[0] == pytest.approx(start) and out.rrmse_full <= start
    for before, h in zip(kept, out.history[1:]):
        if h["accepted"]:                      # a kept move is one the full-scale solve found better
            assert h["tried"] == h["rrmse_full"] < before
        else:                                  # a rejected one leaves the design as it was
            assert h["rrmse_full"] == before and (h["tried"] is None or h["tried"] >= before)
    # what it returns is what it claims: an independent solve of the returned structure
    check = solve_full_scale(out.structure, problem.conditions, material=db.material)
    assert rrmse_and_gradient(check.macro_displacement, problem)[0] == pytest.approx(out.rrmse_full, rel=1e-9)
    np.testing.assert_array_equal(out.structure, place_cells(np.take_along_axis(
        cells, out.labels[:, :, None, None, None], axis=2)[:, :, 0]))


def test_connect_joins_or_removes_loose_parts():
    """Element (0, 1)'s current cell holds an island; its other candidate is a solid cross that joins everything."""
    cross = np.zeros((50, 50), bool)
    cross[20:30, :] = cross[:, 20:30] = True
    island = cross.copy()
    island[20:30, 30:] = False          # cut the right arm off the cross: its stub floats ...
    island[22:28, 40:46] = True         # ... and an island in the middle of the cut
    cells = np.stack([np.stack([cross, cross]), np.stack([island, cross])])[None]  # (1, 2, 2, 50, 50)
    labels = np.array([[0, 0]])
    structure = place_cells(np.take_along_axis(cells, labels[:, :, None, None, None], axis=2)[:, :, 0])
    from metasys.mrf import count_components

    assert count_components(structure) > 1
    new_labels, new_structure, components = connect(cells, labels, structure)
    assert components == count_components(new_structure) == 1
    np.testing.assert_array_equal(new_labels, [[0, 1]])
