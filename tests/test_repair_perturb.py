"""Repair, validity, perturbation and parent selection of database cells (metasys.database.repair/perturb)."""

import numpy as np
import pytest
from scipy import ndimage

from metasys.database.perturb import coverage, perturb, select_parents, selection_weights
from metasys.database.repair import CRITERIA, is_valid, repair, tiling_components, validity_report
from metasys.errors import InvalidCellError, InvalidValueError
from metasys.fem import mirror_quarter


def symmetrize(cell):
    """OR of a cell with its three mirror images (doubly symmetric)."""
    cell = cell | cell[::-1]
    return cell | cell[:, ::-1]


def cross():
    """Bars of rows 20-29 and columns 20-29: symmetric, connected, touching every edge."""
    cell = np.zeros((50, 50), bool)
    cell[20:30] = True
    cell[:, 20:30] = True
    return cell


def frame():
    """Three-pixel border ring: its tiling is a grid of bars."""
    cell = np.ones((50, 50), bool)
    cell[3:47, 3:47] = False
    return cell


def smooth_parents(n, seed=0):
    """Valid symmetric cells: thresholded smooth random fields, repaired, invalid ones dropped."""
    rng = np.random.default_rng(seed)
    f = ndimage.gaussian_filter(mirror_quarter(rng.standard_normal((n, 25, 25))), (0, 3, 3), mode="wrap")
    f = (f - f.mean((1, 2), keepdims=True)) / f.std((1, 2), keepdims=True)
    level = np.sort(f.reshape(n, -1), axis=1)[np.arange(n), (rng.uniform(0.25, 0.65, n) * 2500).astype(int)]
    cells = repair(f > level[:, None, None])
    return cells[is_valid(cells)]


def is_symmetric(cells):
    return np.array_equal(cells, cells[..., ::-1, :]) and np.array_equal(cells, cells[..., ::-1])


# ---------------------------------------------------------------------------------------------------
# repair


def test_repair_removes_isolated_pixel_and_smaller_island():
    cell = cross()
    cell[40, 5] = True           # isolated solid pixel
    cell[5:8, 5:8] = True        # 9-pixel island, not touching the cross
    cell[24, 24] = False         # isolated void pixel inside the cross
    assert np.array_equal(repair(cell), cross())


def test_repair_bridges_checkerboard():
    # Two 10x10 squares touching only at the corner (19, 19)-(20, 20): a checkerboard block.
    cell = np.zeros((50, 50), bool)
    cell[10:20, 10:20] = True
    cell[20:30, 20:30] = True
    out = repair(cell)
    assert out[19, 20] and out[20, 19]
    assert out.sum() == 202          # both squares kept, joined by the two filled pixels
    assert validity_report(out)["no_checkerboard"]


def test_repair_keeps_component_joined_through_the_wrap():
    # A vertical bar cut by the cell edge (rows 0-9 and 40-49: one 200-pixel bar on the torus)
    # beats a 150-pixel block that is larger than either half on its own.
    cell = np.zeros((50, 50), bool)
    cell[:10, 20:30] = True
    cell[40:, 20:30] = True
    cell[20:30, 0:15] = True
    out = repair(cell)
    assert out[:10, 20:30].all() and out[40:, 20:30].all()
    assert out.sum() == 200


def test_repair_output_of_symmetric_inputs_is_symmetric(rng):
    noisy = mirror_quarter(rng.random((200, 25, 25)) < rng.uniform(0.3, 0.8, (200, 1, 1)))
    out = repair(noisy)
    assert is_symmetric(out)
    assert is_symmetric(repair(smooth_parents(100)))


def test_repair_is_idempotent_and_leaves_no_local_defects(rng):
    cells = np.concatenate([rng.random((200, 50, 50)) < rng.uniform(0.3, 0.8, (200, 1, 1)),
                            mirror_quarter(rng.random((200, 25, 25)) < 0.55)])
    once = repair(cells)
    assert np.array_equal(repair(once), once)
    report = validity_report(once)
    assert report["no_isolated"].all() and report["no_checkerboard"].all()


def test_repair_keeps_single_cell_shape_and_rejects_grey_values():
    assert repair(cross()).shape == (50, 50)
    with pytest.raises(InvalidCellError):
        repair(np.full((50, 50), 0.5))


# ---------------------------------------------------------------------------------------------------
# validity


def test_valid_cells():
    cells = np.stack([np.ones((50, 50), bool), cross(), frame(), np.roll(cross(), (25, 25), (0, 1))])
    assert is_valid(cells).all()
    assert tuple(validity_report(cells)) == CRITERIA


def failing(cell):
    """Names of the criteria a single cell fails."""
    return {k for k, ok in validity_report(cell).items() if not ok}


def test_each_criterion_fails_on_its_own_case():
    shifted = np.zeros((50, 50), bool)
    shifted[20:30] = True
    shifted[:, 19:29] = True
    assert failing(shifted) == {"symmetric"}

    # One horizontal bar cut by the cell edge: it wraps left-right, never top-bottom.
    bar = np.zeros((50, 50), bool)
    bar[:5] = bar[45:] = True
    assert failing(bar) == {"connected"}

    # Two horizontal bars that stop short of the left and right edges.
    bars = np.zeros((50, 50), bool)
    bars[10:15, 5:45] = bars[35:40, 5:45] = True
    assert failing(bars) == {"connected", "touches_edges"}

    holes = cross()
    holes[[22, 22, 27, 27], [22, 27, 22, 27]] = False   # four isolated void pixels
    assert failing(holes) == {"no_isolated"}

    # A tab hanging from the vertical bar touches a pixel standing on the horizontal bar at a corner only.
    tab = np.zeros((50, 50), bool)
    tab[31:36, 30:36] = True
    tab[30, 36] = True
    checker = symmetrize(cross() | tab)
    assert failing(checker) == {"no_checkerboard"}

    assert failing(np.zeros((50, 50), bool)) == {"connected", "touches_edges", "not_empty"}


def test_connectivity_through_the_wrap():
    # A full-height bar joins its copies above and below: 3 tiling components (one per tile column),
    # not 9; the same bar one pixel short of the top edge leaves 9 separate pieces.
    bar = np.zeros((50, 50), bool)
    bar[:, 20:30] = True
    short = bar.copy()
    short[49] = False
    assert list(tiling_components(np.stack([bar, short]))) == [3, 9]
    # A cross cut by both edges (its bars split in two halves each) is one connected solid.
    assert is_valid(np.roll(cross(), (25, 25), (0, 1)))


def test_tiling_components_matches_labelling_the_tiling(rng):
    batches = (rng.random((300, 12, 9)) < 0.55,   # noise: many small components
               ndimage.gaussian_filter(rng.standard_normal((300, 30, 30)), (0, 2, 2), mode="wrap") > 0)
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)
    for x in batches:
        lab, n = ndimage.label(np.tile(x, (1, 3, 3)), structure=structure)
        owner = np.zeros(n + 1, int)
        owner[lab] = np.arange(len(x))[:, None, None]
        assert np.array_equal(tiling_components(x), np.bincount(owner[1:], minlength=len(x)))


# ---------------------------------------------------------------------------------------------------
# perturbation


def test_perturb_is_symmetric_reproducible_and_modest():
    parents = smooth_parents(400)[:200]
    children = perturb(parents, np.random.default_rng(7))
    assert children.shape == parents.shape and children.dtype == bool
    assert is_symmetric(children)
    assert np.array_equal(children, perturb(parents, np.random.default_rng(7)))
    assert not np.array_equal(children, perturb(parents, np.random.default_rng(8)))
    changed = (children != parents).mean(axis=(1, 2))
    assert (changed > 0).all()
    assert 0.03 < changed.mean() < 0.15
    assert np.median(changed) < 0.15


def test_perturb_changes_uniform_cells_and_symmetrizes(rng):
    uniform = np.stack([np.ones((50, 50), bool), np.zeros((50, 50), bool)])
    out = perturb(uniform, rng)
    assert (out != uniform).any(axis=(1, 2)).all()
    assert is_symmetric(perturb(rng.random((5, 50, 50)) < 0.5, rng))
    with pytest.raises(InvalidValueError):
        perturb(np.ones((49, 50), bool), rng)


def test_perturbed_and_repaired_cells_are_mostly_valid():
    parents = smooth_parents(600)[:300]
    children = repair(perturb(parents, np.random.default_rng(3)))
    assert is_valid(children).mean() > 0.7


# ---------------------------------------------------------------------------------------------------
# selection and coverage


def test_selection_weights_favour_isolated_points(rng):
    cluster = 0.3 + 0.01 * rng.standard_normal((500, 4))
    props = np.vstack([cluster, [[0.9, 0.9, 0.9, 0.9], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]])
    w = selection_weights(props)
    assert w.shape == (503,) and np.isclose(w.sum(), 1.0) and (w > 0).all()
    assert w[500] > 50 * w[:500].max()
    picks = select_parents(props, 2000, np.random.default_rng(0))
    assert picks.shape == (2000,) and np.array_equal(picks, select_parents(props, 2000, np.random.default_rng(0)))
    assert np.mean(picks >= 500) > 0.5   # the 3 sparse points draw most of the picks


def test_selection_weights_favour_the_boundary_at_equal_density():
    # One point per bin of a 10x10 grid: the weight falls from the corners to the centre.
    g = (np.arange(10) + 0.5) / 10
    props = np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1).reshape(-1, 2)
    w = selection_weights(props, n_bins=10).reshape(10, 10)
    assert w[0, 0] > w[0, 5] > w[2, 5] > w[5, 5]


def test_coverage_counts_occupied_bins():
    props = [[0.1, 0.1], [0.2, 0.2], [0.9, 0.1], [1.0, 1.0], [1.5, 0.5]]
    # bins (0, 0) twice, (1, 0), (1, 1) from the upper corner; (1.5, 0.5) lies outside the box.
    assert coverage(props, [0, 0], [1, 1], n_bins=2) == 3
    # Box [0, 2]^2: the first three share bin (0, 0); (1, 1) and (1.5, 0.5) fall in bins (1, 1) and (1, 0).
    assert coverage(props, [0, 0], [2, 2], n_bins=2) == 3
    p4 = np.array([[0.0] * 4, [0.01] * 4, [0.5, 0.0, 0.0, 0.0], [1.0] * 4])
    assert coverage(p4, np.zeros(4), np.ones(4)) == 3
    with pytest.raises(InvalidValueError):
        coverage(p4, np.zeros(3), np.ones(3))
