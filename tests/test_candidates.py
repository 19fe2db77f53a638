"""Diverse candidate sets (k-means in the latent PCA plane), greedy baseline, uncovered targets, generator hook."""

import functools

import numpy as np
import pytest
from test_database import crosses

from metasys import Database, homogenize
from metasys.errors import InvalidTypeError, InvalidValueError
from metasys.fem.element import properties_of
from metasys.selection.candidates import Candidates, diverse_candidates, diversity, greedy_candidates

TARGET = np.array([0.5, 0.2, 0.5, 0.1])
# Nine cells within the tolerance 0.03 of TARGET in three latent clusters, three cells outside it.
ERRORS = np.array([0.010, 0.004, 0.020, 0.015, 0.025, 0.012, 0.001, 0.018, 0.028, 0.2, 0.3, 0.4])
CENTRES = np.array([[0.0, 0.0]] * 3 + [[10.0, 0.0]] * 3 + [[0.0, 10.0]] * 3 + [[10.0, 10.0]] * 3)


def stiffness(p):
    p = np.atleast_2d(p)
    c = np.zeros((len(p), 3, 3))
    c[:, 0, 0], c[:, 0, 1], c[:, 1, 0], c[:, 1, 1], c[:, 2, 2] = p[:, 0], p[:, 1], p[:, 1], p[:, 2], p[:, 3]
    return c


class FakeModel:
    """Duck-typed latent model: fixed database codes, and an encoder for new cells (solid fraction, 0)."""

    def __init__(self, database, codes):
        self.database, self._codes = database, codes
        self.encoded = []

    def latent_codes(self):
        return self._codes

    def encode(self, cells):
        cells = np.asarray(cells)
        self.encoded.append(len(cells))
        return np.stack([cells.mean(axis=(1, 2)) * 100.0, np.zeros(len(cells))], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """12 database cells whose properties deviate from TARGET by ERRORS (in C11 or C33, alternating signs)."""
    db = Database.create(tmp_path_factory.mktemp("cand") / "tiny.h5")
    p = np.tile(TARGET, (12, 1))
    for i, e in enumerate(ERRORS):
        p[i, 0 if i % 2 else 3] += e if i % 3 else -e
    db.append(crosses(12), stiffness=stiffness(p))
    jitter = np.random.default_rng(0).normal(0, 0.3, (12, 2))
    return db, (CENTRES + jitter).astype(np.float32)


def test_tiny_database_exact_picks(tiny):
    db, codes = tiny
    np.testing.assert_allclose(np.abs(db.properties - TARGET).max(axis=1), ERRORS, atol=1e-12)
    c = diverse_candidates(TARGET, k=3, database=db, codes=codes)
    assert isinstance(c, Candidates) and c.method == "kmeans"
    # The best of each cluster (0-2: cell 1, 3-5: cell 5, 6-8: cell 6), best first.
    np.testing.assert_array_equal(c.indices, [6, 1, 5])
    np.testing.assert_allclose(c.errors, ERRORS[[6, 1, 5]])
    g = greedy_candidates(TARGET, k=3, database=db, codes=codes)
    np.testing.assert_array_equal(g.indices, [6, 1, 0])     # the three nearest: two of them from one cluster
    assert c.covered and g.covered and c.n_within == 9
    assert c.diversity() > 1.5 * g.diversity()       # about (10 + 10 + 14.1) / 3 against (0 + 10 + 10) / 3
    np.testing.assert_array_equal(c.cells, db.get_cells([6, 1, 5]))
    np.testing.assert_array_equal(c.z, codes[[6, 1, 5]])
    np.testing.assert_allclose(c.properties, db.properties[[6, 1, 5]])


def test_shapes_follow_targets(tiny):
    db, codes = tiny
    grid = np.broadcast_to(TARGET, (2, 3, 4)) + np.linspace(0, 0.002, 6).reshape(2, 3, 1)
    c = diverse_candidates(grid, k=4, database=db, codes=codes)
    assert c.indices.shape == (2, 3, 4) and c.errors.shape == (2, 3, 4) and c.properties.shape == (2, 3, 4, 4)
    assert c.cells.shape == (2, 3, 4, 50, 50) and c.cells.dtype == bool and c.z.shape == (2, 3, 4, 2)
    assert c.covered.shape == (2, 3) and c.targets.shape == (2, 3, 4) and c.diversity().shape == (2, 3)
    single = diverse_candidates(TARGET, k=4, database=db, codes=codes)
    assert single.indices.shape == (4,) and single.covered.shape == ()
    np.testing.assert_array_equal(c.indices[0, 0], single.indices)
    batch = diverse_candidates(grid.reshape(6, 4), k=4, database=db, codes=codes)
    np.testing.assert_array_equal(batch.indices.reshape(2, 3, 4), c.indices)


def test_uncovered_target_is_filled_with_nearest(tiny):
    db, codes = tiny
    far = TARGET + [0.0, 0.0, 0.0, 0.25]      # cell 9..11 are also off in other components: nothing within 0.03
    c = diverse_candidates(np.stack([TARGET, far]), k=10, database=db, codes=codes)
    assert c.covered.tolist() == [False, False]            # 9 < 10 cells within tolerance even for TARGET
    assert c.n_within.tolist() == [9, 0]
    for i in range(2):                                     # never fewer than k labels: the 10 nearest
        expected = np.argsort(np.abs(db.properties - c.targets[i]).max(axis=1), kind="stable")[:10]
        np.testing.assert_array_equal(np.sort(c.indices[i]), np.sort(expected))
        assert len(set(c.indices[i].tolist())) == 10 and np.all(np.diff(c.errors[i]) >= 0)
    assert c.errors[1].min() > c.tolerance


def test_generator_called_with_exactly_the_uncovered_targets(tiny):
    db, codes = tiny
    new = crosses(3, offset=500)
    p_new = properties_of(homogenize(new, db.material))
    assert np.abs(db.properties[:, None] - p_new[None]).max(axis=2).min() > 0.03
    targets = np.stack([TARGET, p_new[0], TARGET + 0.001, p_new[1]])
    calls = []

    def generator(t, n, seed):
        calls.append((t.copy(), n, seed))
        out = np.zeros((len(t), n, 50, 50), bool)
        for j in range(len(t)):                    # the matching new cell first, then the others
            which = [int(np.argmin(np.abs(p_new - t[j]).max(axis=1)))] + [x for x in range(3)]
            out[j] = new[[w for w in dict.fromkeys(which)][:n]]
        return out

    model = FakeModel(db, codes)
    c = diverse_candidates(targets, k=3, database=db, model=model, codes=codes, generator=generator, seed=7)
    assert c.covered.tolist() == [True, False, True, False]
    assert len(calls) == 1
    t, n, seed = calls[0]
    np.testing.assert_array_equal(t, targets[[1, 3]])
    assert n == 3 and seed == 7                    # the largest shortfall k - n_within (0 database cells within)
    for i, j in ((1, 0), (3, 1)):
        assert c.indices[i, 0] == -1 and c.generated[i, 0]
        np.testing.assert_array_equal(c.cells[i, 0], new[j])
        np.testing.assert_allclose(c.properties[i, 0], p_new[j], rtol=1e-10)
        assert c.errors[i, 0] < 1e-9
        gen = c.indices[i] < 0
        np.testing.assert_allclose(c.errors[i], np.abs(c.properties[i] - targets[i]).max(axis=1), atol=1e-12)
        np.testing.assert_allclose(c.z[i, gen], model.encode(c.cells[i, gen]))
        assert (c.errors[i, gen] <= c.tolerance).all()         # generated cells only within the tolerance
    far = np.abs(p_new[:, None] - targets[None, [1, 3]]).max(axis=2) > c.tolerance
    assert np.count_nonzero(c.generated[[1, 3]]) == np.count_nonzero(~far)
    assert not c.generated[[0, 2]].any()
    # n_generate overrides the count; 0/1 integer cells are accepted
    calls.clear()
    c2 = diverse_candidates(targets, k=3, database=db, model=model, codes=codes, n_generate=1, seed=7,
                            generator=lambda t, n, s: generator(t, n, s).astype(np.uint8))
    assert calls[0][1] == 1 and c2.indices[1, 0] == -1 and (c2.indices[1, 1:] >= 0).all()
    # A generator that repeats one design in every slot (a bounded budget) gives each target one copy of it
    repeats = diverse_candidates(targets, k=3, database=db, model=model, codes=codes, seed=7,
                                 generator=lambda t, n, s: np.repeat(generator(t, 1, s), n, axis=1))
    for i in (1, 3):
        assert np.count_nonzero(repeats.generated[i]) == 1
        assert len(np.unique(repeats.cells[i].reshape(3, -1), axis=0)) == 3
    # Generated cells far from every target (all solid) are left out: the database cells alone, as without them
    solid = diverse_candidates(targets, k=3, database=db, model=model, codes=codes, seed=7,
                               generator=lambda t, n, s: np.ones((len(t), n, 50, 50), bool))
    plain = diverse_candidates(targets, k=3, database=db, model=model, codes=codes, seed=7)
    assert not solid.generated.any() and np.array_equal(solid.indices, plain.indices)
    # No generator call when every target is covered.
    calls.clear()
    diverse_candidates(targets[[0, 2]], k=3, database=db, model=model, codes=codes, generator=generator)
    assert calls == []


def test_generator_output_is_checked(tiny):
    db, codes = tiny
    with pytest.raises(InvalidValueError, match=r"generator: expected cells of shape \(1, 3, 50, 50\)"):
        diverse_candidates(TARGET + 1, k=3, database=db, model=FakeModel(db, codes), codes=codes,
                           generator=lambda t, n, s: np.zeros((len(t), n, 25, 25), bool))
    with pytest.raises(InvalidTypeError, match="generator: expected a callable"):
        diverse_candidates(TARGET, k=3, database=db, codes=codes, generator=5)


@pytest.mark.parametrize("target, match", [
    (np.zeros(3), r"target: expected property vectors \(4,\), \(M, 4\) or \(H, W, 4\), got ndarray of shape \(3,\)"),
    (np.zeros((1, 1, 1, 4)), r"target: expected .* got ndarray of shape \(1, 1, 1, 4\)"),
    ([np.nan, 0, 0, 0], "target: expected finite"),
])
def test_bad_targets(tiny, target, match):
    db, codes = tiny
    with pytest.raises(InvalidValueError, match=match):
        diverse_candidates(target, k=3, database=db, codes=codes)


def test_bad_arguments(tiny):
    db, codes = tiny
    with pytest.raises(InvalidValueError, match="k: expected at most the 12 cells of the database, got 13"):
        diverse_candidates(TARGET, k=13, database=db, codes=codes)
    with pytest.raises(InvalidValueError, match=r"tolerance: expected a positive finite number, got -1"):
        diverse_candidates(TARGET, k=3, database=db, codes=codes, tolerance=-1)
    with pytest.raises(InvalidValueError, match="method: expected 'kmeans' or 'greedy', got 'random'"):
        diverse_candidates(TARGET, k=3, database=db, codes=codes, method="random")
    with pytest.raises(InvalidValueError, match=r"codes: expected latent codes \(12, d\)"):
        diverse_candidates(TARGET, k=3, database=db, codes=codes[:5])
    with pytest.raises(InvalidTypeError, match="k: expected an integer, got 2.5"):
        diverse_candidates(TARGET, k=2.5, database=db, codes=codes)
    # data (target, k, database, model) may be positional, tuning parameters are keyword-only
    with pytest.raises(TypeError, match="positional"):
        diverse_candidates(TARGET, 3, db, None, 0.05)
    with pytest.raises(TypeError, match="positional"):
        greedy_candidates(TARGET, 3, db, None, 0.05)
    pos = diverse_candidates(TARGET, 3, db, codes=codes)
    assert pos.indices.tolist() == diverse_candidates(TARGET, k=3, database=db, codes=codes).indices.tolist()


def test_diversity_helper():
    z = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    assert diversity(z) == pytest.approx(10.0 / 3.0)       # pairs: 5, 0, 5
    assert diversity(np.stack([z, 2 * z])).tolist() == pytest.approx([10 / 3, 20 / 3])
    assert diversity(z[:1]) == 0.0


# ----------------------------------------------------------------- the shipped database and model
@pytest.fixture(scope="module")
def shipped():
    pytest.importorskip("tensorflow_probability")
    from metasys import LatentModel

    lm = LatentModel.default()
    return lm, lm.database


TARGETS = np.array([[0.3, 0.1, 0.3, 0.08], [0.6, 0.2, 0.4, 0.15]])


def plane_diversity(pca, z):
    """Diversity (...,) of code sets z (..., k, d) projected on the plane of a `LatentPCA`, where k-means runs."""
    return diversity(pca.transform(z.reshape(-1, z.shape[-1])).reshape(*z.shape[:-1], 2))


def test_shipped_two_targets(shipped):
    lm, db = shipped
    c = diverse_candidates(TARGETS, k=10, model=lm)
    g = greedy_candidates(TARGETS, k=10, model=lm)
    assert c.covered.all() and (c.n_within >= 10).all()
    codes = lm.latent_codes()
    for i in range(2):
        assert len(set(c.indices[i].tolist())) == 10            # pairwise distinct
        assert (c.errors[i] <= c.tolerance).all()               # every pick within tolerance
        np.testing.assert_allclose(c.errors[i], np.abs(db.properties[c.indices[i]] - TARGETS[i]).max(axis=1))
        np.testing.assert_array_equal(c.z[i], codes[c.indices[i]])
        # greedy = the 10 nearest in the inf-norm
        err = np.abs(db.properties - TARGETS[i]).max(axis=1)
        np.testing.assert_allclose(g.errors[i], np.sort(err)[:10])
    np.testing.assert_array_equal(c.cells[1, 3], db.get_cells(c.indices[1, 3]))
    # The paper's figures: both MSE < 0.01, the clustered set more diverse than the greedy one (in the full
    # latent space by a few per cent here: measured 9.03 / 8.28 against 8.66 / 8.20; for these two targets the
    # plane where k-means runs is tested with the paper's 16-d model below).
    assert (c.mse() < 0.01).all() and (g.mse() < 0.01).all()
    assert (c.diversity() > g.diversity()).all()
    # Means over 50 targets of the property cloud: clearly more spread in the PCA plane (measured 2.25 against
    # 1.93), more diverse in the full latent space (7.33 against 7.17).
    rng = np.random.default_rng(5)
    q = db.properties[rng.choice(len(db), 50, replace=False)] + rng.normal(0, 0.01, (50, 4))
    cq = diverse_candidates(q, k=10, model=lm, load_cells=False)
    gq = greedy_candidates(q, k=10, model=lm, load_cells=False)
    plane = functools.partial(plane_diversity, lm.pca(2))
    both = cq.covered & gq.covered
    assert plane(cq.z)[both].mean() > 1.1 * plane(gq.z)[both].mean()
    assert cq.diversity().mean() > gq.diversity().mean()
    assert (cq.errors[cq.covered] <= cq.tolerance).all()
    again = diverse_candidates(TARGETS, k=10, model=lm)
    np.testing.assert_array_equal(again.indices, c.indices)   # same seed, same result


def test_paper_model_clusters_are_clearly_more_spread_in_the_pca_plane(shipped):
    """Paper Fig. 11 with the paper's 16-d model (``databases/vae-16d``): in the plane of the first two
    principal components, where k-means runs, the clustered set is clearly more spread than the greedy one
    (measured 1.69 / 1.53 against 1.36 / 1.22). The shipped 32-d model's plane holds 13% of the latent
    variance instead of 21%, and there the gain is not robust (2.74 / 2.39 against 1.90 / 2.45)."""
    from metasys import LatentModel
    from metasys.latent.api import default_model_dir

    lm = LatentModel.load(default_model_dir().parent / "vae-16d", database=shipped[1])
    c = diverse_candidates(TARGETS, k=10, model=lm, load_cells=False)
    g = greedy_candidates(TARGETS, k=10, model=lm, load_cells=False)
    plane = functools.partial(plane_diversity, lm.pca(2))
    assert (plane(c.z) > 1.1 * plane(g.z)).all()
