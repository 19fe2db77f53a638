"""Metamaterial families: curve distance, the Sec. 4.3 graph, successive Dijkstra paths, Family API, CLI."""

import itertools

import networkx as nx
import numpy as np
import pytest
import typer
from test_database import crosses
from typer.testing import CliRunner

from metasys import Database, homogenize
from metasys.errors import InvalidValueError
from metasys.fem.element import properties_of
from metasys.selection.families import (
    Family,
    build_graph,
    distance_to_curve,
    family_candidates,
    family_graph,
    find_families,
    paper_gradation,
    shortest_paths,
)

DIRECTION = np.array([1.0, 0.3, 1.0, 0.2])


def line(t):
    """A straight gradation p(t) = t * DIRECTION (vectorized)."""
    return np.asarray(t, float)[..., None] * DIRECTION


def stiffness(p):
    c = np.zeros((len(p), 3, 3))
    c[:, 0, 0], c[:, 0, 1], c[:, 1, 0], c[:, 1, 1], c[:, 2, 2] = p[:, 0], p[:, 1], p[:, 1], p[:, 2], p[:, 3]
    return c


class FakeModel:
    """Decoder stand-in: code z -> the cross cell numbered by round(100 * |z_0|) (deterministic)."""

    def __init__(self, codes=None):
        self._codes = codes

    def latent_codes(self):
        return self._codes

    def to_cells(self, z):
        z = np.atleast_2d(z)
        return np.stack([crosses(1, offset=int(round(100 * abs(v))) % 400)[0] for v in z[:, 0]])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """60 cells: 45 near the straight gradation (distance < 0.02), 15 farther than 0.05; random 3-D codes."""
    rng = np.random.default_rng(4)
    t = rng.uniform(0.05, 1.0, 60)
    normal = rng.normal(size=(60, 4))
    normal -= (normal @ DIRECTION)[:, None] * DIRECTION / (DIRECTION @ DIRECTION)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    off = np.where(np.arange(60) < 45, rng.uniform(0.0, 0.02, 60), rng.uniform(0.05, 0.1, 60))
    p = line(t) + off[:, None] * normal
    db = Database.create(tmp_path_factory.mktemp("fam") / "tiny.h5")
    db.append(crosses(60), stiffness=stiffness(p))
    codes = rng.normal(size=(60, 3)).astype(np.float32)
    return db, codes, off


def test_distance_to_curve_straight_line(tiny):
    db, _, off = tiny
    d, t = distance_to_curve(db.properties, line)
    np.testing.assert_allclose(d, off, atol=1e-9)
    np.testing.assert_allclose(t, db.properties @ DIRECTION / (DIRECTION @ DIRECTION), atol=1e-9)
    # beyond the ends: distance to the end points
    d, t = distance_to_curve(np.array([[-1.0, 0, 0, 0], [3.0, 0.9, 3.0, 0.6]]), line)
    np.testing.assert_allclose(d, [1.0, np.linalg.norm(3 * DIRECTION - DIRECTION)])
    np.testing.assert_allclose(t, [0.0, 1.0])


def test_distance_to_the_paper_gradation_is_zero_on_it():
    g = paper_gradation()
    d, t = distance_to_curve(g(np.array([0.0, 0.123, 0.5, 0.77, 1.0])), g)
    np.testing.assert_allclose(d, 0.0, atol=1e-6)
    np.testing.assert_allclose(t, [0.0, 0.123, 0.5, 0.77, 1.0], atol=1e-4)
    # a scalar-only callable gives the same answer
    d2, _ = distance_to_curve(g(np.array([0.3])) + 0.01, lambda s: g(float(s)))
    np.testing.assert_allclose(d2, distance_to_curve(g(np.array([0.3])) + 0.01, g)[0])


def brute_force_shortest(g):
    """Minimum weight over every simple source-destination path (exhaustive)."""
    best = None
    for path in nx.all_simple_paths(g, "source", "destination"):
        w = sum(g[a][b]["weight"] for a, b in itertools.pairwise(path))
        if best is None or w < best[0] - 1e-12:
            best = (w, path)
    return best


def test_graph_edges_and_dijkstra_equal_brute_force():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(9, 3))
    g = build_graph(z, k=3, n_ends=2)
    for i in range(9):
        later = np.arange(i + 1, 9)
        nearest = later[np.argsort(np.linalg.norm(z[later] - z[i], axis=1))[:3]]
        assert sorted(j for j in g.successors(i) if j != "destination") == sorted(nearest.tolist())
        for j in nearest:
            assert g[i][j]["weight"] == pytest.approx(np.linalg.norm(z[i] - z[j]))
    assert sorted(g.successors("source")) == [0, 1] and sorted(g.predecessors("destination")) == [7, 8]
    paths = shortest_paths(g, 3)
    h = g.copy()
    for path in paths:                                       # each successive path is the brute-force optimum
        w, best = brute_force_shortest(h)
        assert path.tolist() == best[1:-1]
        assert sum(h[a][b]["weight"] for a, b in itertools.pairwise(["source", *path, "destination"])) == pytest.approx(w)
        h.remove_nodes_from(path.tolist())
    assert g.number_of_nodes() == 11                         # the input graph is left alone
    rank = build_graph(z, k=2, n_ends=1, link="rank")
    assert sorted(j for j in rank.successors(3)) == [4, 5]


def test_find_families_tiny(tiny):
    db, codes, off = tiny
    fams = find_families(line, n_families=3, delta=0.02, k=3, n_ends=5, database=db, codes=codes)
    assert len(fams) == 3
    seen = set()
    for f in fams:
        assert isinstance(f, Family) and len(f) >= 2
        idx = f.indices.tolist()
        assert not seen & set(idx)                           # disjoint
        seen |= set(idx)
        assert np.all(np.diff(f.properties[:, 0]) >= 0)      # monotone in C11
        assert np.all(off[f.indices] <= 0.02) and np.all(f.distance <= 0.02 + 1e-12)
        np.testing.assert_allclose(f.properties, db.properties[f.indices])
        np.testing.assert_array_equal(f.cells, db.get_cells(f.indices))
        np.testing.assert_array_equal(f.z, codes[f.indices])
    # the first family is the shortest path on the graph
    fg = family_graph(line, delta=0.02, k=3, n_ends=5, database=db, codes=codes)
    assert len(fg.indices) == 45 and np.all(np.diff(fg.properties[:, 0]) >= 0)
    first = nx.dijkstra_path(fg.graph, "source", "destination")
    np.testing.assert_array_equal(fams[0].indices, fg.indices[first[1:-1]])
    assert fams[0].path_length() <= fams[1].path_length() + 1e-9


def test_find_families_runs_out_of_paths(tiny):
    db, codes, _ = tiny
    with pytest.warns(UserWarning, match="only .* of 40 disjoint families"):
        fams = find_families(line, n_families=40, delta=0.02, k=3, n_ends=5, database=db, codes=codes)
    assert 3 <= len(fams) < 40


def test_bad_arguments(tiny):
    db, codes, _ = tiny
    with pytest.raises(InvalidValueError, match="delta: only 0 database cells lie within 1e-06"):
        find_families(line, delta=1e-6, database=db, codes=codes)
    with pytest.raises(InvalidValueError, match="delta: expected a positive distance"):
        find_families(line, delta=-1, database=db, codes=codes)
    with pytest.raises(InvalidValueError, match="n_families: expected a positive integer, got 0"):
        find_families(line, n_families=0, database=db, codes=codes)
    with pytest.raises(TypeError, match="gradation: expected a callable"):
        find_families([1, 2, 3, 4], database=db, codes=codes)
    with pytest.raises(InvalidValueError, match="gradation: expected a property vector"):
        find_families(lambda t: np.zeros(3), database=db, codes=codes)
    # tuning parameters are keyword-only (a positional delta or k cannot be taken for another argument)
    with pytest.raises(TypeError, match="positional"):
        find_families(line, 3, 0.02, database=db, codes=codes)
    with pytest.raises(TypeError, match="positional"):
        family_graph(line, 0.02, database=db, codes=codes)
    with pytest.raises(TypeError, match="positional"):
        family_candidates([], np.zeros((1, 4)), "members")
    pos = find_families(line, 2, delta=0.02, k=3, n_ends=5, database=db, codes=codes)
    kw = find_families(line, n_families=2, delta=0.02, k=3, n_ends=5, database=db, codes=codes)
    assert [f.indices.tolist() for f in pos] == [f.indices.tolist() for f in kw]


def test_family_interpolate_and_cells_for_positions(tiny):
    db, codes, _ = tiny
    fam = find_families(line, n_families=1, delta=0.02, k=3, n_ends=5, database=db, codes=codes, model=FakeModel(codes))[0]
    # latent path: the ends are the first and last members, extrapolation continues the end segments
    np.testing.assert_allclose(fam.latent_at(0.0), fam.z[0], atol=1e-6)
    np.testing.assert_allclose(fam.latent_at(1.0), fam.z[-1], atol=1e-6)
    seg = fam.z[1] - fam.z[0]
    length = fam.path_length()
    np.testing.assert_allclose(fam.latent_at(-0.1), fam.z[0] - 0.1 * length * seg / np.linalg.norm(seg), atol=1e-5)
    new = fam.interpolate(4, extrapolate=0.1)
    assert isinstance(new, Family) and len(new) == 4 and (new.indices == -1).all()
    assert new.cells.shape == (4, 50, 50) and new.cells.dtype == bool
    np.testing.assert_allclose(new.z, fam.latent_at(np.linspace(-0.1, 1.1, 4)), atol=1e-6)
    np.testing.assert_array_equal(new.cells, FakeModel().to_cells(new.z))
    np.testing.assert_allclose(new.properties, properties_of(homogenize(new.cells, db.material)))
    np.testing.assert_allclose(new.distance, distance_to_curve(new.properties, line)[0])
    # cells for gradation positions: nearest member in C11, or decoded from the code interpolated in C11
    t = np.array([[0.0, 0.5], [0.9, 1.0]])
    pos = fam.index_at(t)
    for a, b in np.ndindex(2, 2):
        assert pos[a, b] == np.argmin(np.abs(fam.properties[:, 0] - line(t[a, b])[0]))
    np.testing.assert_array_equal(fam.cell_at(t), fam.cells[pos])
    np.testing.assert_array_equal(fam.properties_at(t), fam.properties[pos])
    assert fam.cell_at(t, decode=True).shape == (2, 2, 50, 50)
    np.testing.assert_allclose(fam.z_at(0.0), fam.z[0], atol=1e-6)        # below the first member: clamped
    mid = 0.5 * (fam.properties[0, 0] + fam.properties[1, 0]) / DIRECTION[0]
    np.testing.assert_allclose(fam.z_at(mid), 0.5 * (fam.z[0] + fam.z[1]), atol=1e-5)


def test_family_candidates(tiny):
    db, codes, _ = tiny
    fams = find_families(line, n_families=2, delta=0.02, k=3, n_ends=5, database=db, codes=codes, model=FakeModel(codes))
    targets = line(np.linspace(0.0, 1.0, 6)).reshape(2, 3, 4)
    c = family_candidates(fams, targets)
    assert c.method == "family" and c.indices.shape == (2, 3, 4) and c.cells.shape == (2, 3, 4, 50, 50)
    assert c.covered.shape == (2, 3) and c.z.shape == (2, 3, 4, 3)
    flat = targets.reshape(-1, 4)
    for r, fam in enumerate(fams):
        member, decoded = c.indices[..., 2 * r].reshape(-1), c.indices[..., 2 * r + 1]
        expected = fam.indices[np.abs(fam.properties[None] - flat[:, None]).max(axis=2).argmin(axis=1)]
        np.testing.assert_array_equal(member, expected)      # the member nearest in the inf-norm
        assert (decoded == -1).all()
        np.testing.assert_array_equal(c.cells[..., 2 * r + 1, :, :], FakeModel().to_cells(
            c.z[..., 2 * r + 1, :].reshape(-1, 3)).reshape(2, 3, 50, 50))
    np.testing.assert_allclose(c.errors, np.abs(c.properties - targets[..., None, :]).max(axis=-1))
    np.testing.assert_array_equal(c.covered, (c.errors <= c.tolerance).any(axis=-1))
    only = family_candidates(fams, targets, source="members")
    np.testing.assert_array_equal(only.indices, c.indices[..., ::2])
    with pytest.raises(InvalidValueError, match="source: expected 'members', 'decoded' or 'both'"):
        family_candidates(fams, targets, source="all")


# ----------------------------------------------------------------- the shipped database and model
@pytest.fixture(scope="module")
def shipped():
    pytest.importorskip("tensorflow_probability")
    from metasys import LatentModel

    return LatentModel.default()


def test_shipped_paper_gradation_five_families(shipped):
    g = paper_gradation()
    fams = find_families(g, n_families=5, model=shipped)
    assert len(fams) == 5
    all_idx = np.concatenate([f.indices for f in fams])
    assert len(np.unique(all_idx)) == len(all_idx)
    c11 = 1.31596
    for f in fams:
        assert np.all(np.diff(f.properties[:, 0]) >= 0)
        assert f.distance.max() <= 0.03
        np.testing.assert_allclose(f.distance, distance_to_curve(shipped.database.properties[f.indices], g)[0])
        assert f.properties[0, 0] < 0.1 * c11 and f.properties[-1, 0] > 0.9 * c11   # spans the gradation


@pytest.mark.slow
def test_shipped_family_candidates_for_a_graded_grid(shipped):
    g = paper_gradation()
    fams = find_families(g, n_families=5, model=shipped, seed=3)
    targets = g(np.linspace(0.0, 1.0, 40))[None].repeat(15, axis=0)      # the graded problem's 15 x 40 grid
    c = family_candidates(fams, targets, levels=64)
    assert c.indices.shape == (15, 40, 10) and c.cells.shape == (15, 40, 10, 50, 50)
    # decoded labels follow the gradation more closely than the nearest members where members are sparse
    assert np.median(c.errors.min(axis=-1)) < 0.05


@pytest.mark.slow
def test_shipped_interpolation_follows_the_gradation(shipped):
    g = paper_gradation()
    fam = find_families(g, n_families=1, model=shipped)[0]
    new = fam.interpolate(10)
    assert new.cells.shape == (10, 50, 50)
    # decoded members stay near the curve (measured: mean deviation about 0.03 of the solid C11)
    assert np.median(new.distance) / 1.31596 < 0.08
    np.testing.assert_allclose(new.properties, properties_of(homogenize(new.cells)))


def _app():
    from metasys.selection.cli import family

    app = typer.Typer()
    app.command("family")(family)

    @app.callback()
    def _root():
        """test app"""

    return app


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "--n: expected an integer >= 1, got 0"),
    (["--delta", "-0.1"], "--delta: expected a positive distance"),
    (["--link", "both"], "--link: expected 'latent' or 'rank'"),
])
def test_cli_bad_input_exit_2(tmp_path, args, message):
    result = CliRunner().invoke(_app(), ["family", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_cli_writes_files(tmp_path, shipped):
    result = CliRunner().invoke(_app(), ["family", "--n", "2", "--out", str(tmp_path), "--interpolate", "3"])
    assert result.exit_code == 0, result.output
    for name in ("families.png", "family_graph.png", "family_properties.png", "family_properties_interpolated.png",
                 "families_interpolated.png", "families.npz", "families.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    import json

    data = json.loads((tmp_path / "families.json").read_text())
    assert len(data["families"]) == 2 and data["settings"]["delta"] == 0.03
    arrays = np.load(tmp_path / "families.npz")
    assert arrays["family0_cells"].shape[1:] == (50, 50) and arrays["family1_interpolated_cells"].shape == (3, 50, 50)
    assert "family 1:" in result.output
