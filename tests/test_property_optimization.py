"""Macro property optimization (MMA), standard problems and problem files."""

import json

import numpy as np
import pytest
from metasys.problems import Problem, bridge, graded, load_problem, smiley

from metasys.errors import FileFormatError, InvalidValueError
from metasys.fem.boundary import Prescribed
from metasys.macro.optimization import (
    MMARun,
    PropertyObjective,
    macro_settings,
    mma_with_restarts,
    optimize_properties,
    resolve_settings,
    rrmse,
)
from metasys.selection.families import paper_gradation


class BallDatabase:
    """Stand-in database: properties in a box, feasible region a ball with an analytic signed distance."""

    def __init__(self, center=(0.6, 0.2, 0.6, 0.15), radius=0.35, seed=0):
        rng = np.random.default_rng(seed)
        self.center, self.radius = np.asarray(center), radius
        d = rng.normal(size=(4000, 4))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        self.properties = self.center + radius * d * rng.random((4000, 1)) ** 0.25

    def feasibility(self, p):
        q = np.atleast_2d(np.asarray(p, float)) - self.center
        r = np.linalg.norm(q, axis=1)
        return self.radius - r, -q / np.maximum(r, 1e-12)[:, None]


def tiny_problem(target_from=None, width=4, height=3):
    conditions = [Prescribed("left", "x", 0.0), Prescribed("right", "x", -0.1), Prescribed((0, 0), "y", 0.0)]
    dofs = np.array([2 * (height * (width + 1) + x) + 1 for x in range(width + 1)] + [2 * x + 1 for x in range(1, width + 1)])
    values = np.linspace(0.01, 0.03, len(dofs))
    problem = Problem(width, height, conditions, dofs, values, "tiny")
    if target_from is not None:
        from metasys.fem.macro import MacroModel

        u = MacroModel(width, height, conditions).solve(target_from).vector
        problem = Problem(width, height, conditions, dofs, u[dofs], "tiny")
    return problem


def _check_gradients(obj, x, indices, h=1e-6):
    """Objective and constraint gradients of ``obj`` at ``x`` against central differences on ``indices``."""
    f, df, _ = obj.objective(x)
    _, dg = obj.constraint(x)
    for k in indices:
        e = np.zeros(obj.n)
        e[k] = h
        fd_f = (obj.objective(x + e)[0] - obj.objective(x - e)[0]) / (2 * h)
        fd_g = (obj.constraint(x + e)[0] - obj.constraint(x - e)[0]) / (2 * h)
        assert fd_f == pytest.approx(df[k], rel=1e-4, abs=1e-9 * abs(f) + 1e-12)
        assert fd_g == pytest.approx(dg[k], rel=1e-4, abs=1e-10)


@pytest.mark.parametrize("scaling", ["log", "linear"])
def test_full_gradients_match_finite_differences(scaling, rng):
    db = BallDatabase()
    obj = PropertyObjective(tiny_problem(), db, beta=20.0, scaling=scaling)
    x = rng.uniform(0.2, 0.8, obj.n)
    _check_gradients(obj, x, rng.choice(obj.n, 8, replace=False))


def test_family_gradient_matches_finite_differences(rng):
    obj = PropertyObjective(tiny_problem(), family=paper_gradation())
    t = rng.uniform(0.1, 0.9, obj.n)
    _, dt, _ = obj.objective(t)
    h = 1e-6
    for k in range(obj.n):
        e = np.zeros(obj.n)
        e[k] = h
        fd = (obj.objective(t + e)[0] - obj.objective(t - e)[0]) / (2 * h)
        assert fd == pytest.approx(dt[k], rel=1e-4, abs=1e-12)


def test_paper_gradation_eq7():
    g = paper_gradation()
    p = g(np.array([0.0, 0.5, 1.0]))
    assert np.allclose(p[:, 0], p[:, 2])
    solid = p[-1]
    assert solid == pytest.approx([1.31596, 0.49 * 1.31596, 1.31596, 0.33557], abs=2e-4)  # Eq. 7 cubic ~ solid C33
    t = np.linspace(0.05, 0.95, 7)
    fd = (g(t + 1e-6) - g(t - 1e-6)) / 2e-6
    assert np.allclose(fd, g.derivative(t), rtol=1e-6, atol=1e-9)
    assert np.all(p[:, 0] * p[:, 2] - p[:, 1] ** 2 > 0)


def test_recovers_known_optimum():
    """A target generated from a feasible property field is matched to RRMSE < 1e-3."""
    db = BallDatabase()
    rng = np.random.default_rng(3)
    d = rng.normal(size=(3, 4, 4))
    truth = db.center + 0.25 * d / np.linalg.norm(d, axis=-1, keepdims=True) * rng.random((3, 4, 1))
    problem = tiny_problem(truth)
    result = optimize_properties(problem, db, tolerance=1e-7, max_iterations=1500, beta=50.0)
    assert result.rrmse < 1e-3
    assert result.feasible_fraction == 1.0
    assert result.rrmse == pytest.approx(rrmse(result.displacement, problem))
    assert result.properties.shape == (3, 4, 4)
    assert len(result.history["objective"]) == result.iterations <= 1500


def test_family_mode_tiny_problem():
    g = paper_gradation()
    truth_t = np.random.default_rng(5).uniform(0.2, 0.8, (3, 4))
    problem = tiny_problem(g(truth_t))
    result = optimize_properties(problem, family=g, tolerance=1e-7, max_iterations=800)
    assert result.mode == "family" and result.variables.shape == (3, 4)
    assert np.all((result.variables >= 0) & (result.variables <= 1))
    assert np.allclose(result.properties, g(result.variables))
    assert result.rrmse < 1e-3 < result.history["rrmse"][0]


def test_family_polyline_and_stop_rule():
    pts = paper_gradation()(np.linspace(0, 1, 6))
    problem = tiny_problem()
    result = optimize_properties(problem, family=pts, max_iterations=7)
    assert result.iterations == 7 and result.status == "maxeval"
    # MMA keeps only improving steps: the returned design beats the start even after 7 evaluations.
    assert result.rrmse < result.history["rrmse"][0]
    assert result.rrmse == pytest.approx(min(result.history["rrmse"]))
    with pytest.raises(InvalidValueError, match="max_iterations"):
        optimize_properties(problem, family=pts, max_iterations=0)


def test_standard_problems_match_design():
    b = bridge()
    assert (b.width, b.height, len(b.target_dofs)) == (30, 4, 62)
    assert np.all(b.target_components == 1)
    top = {tuple(n): v for n, v in zip(b.target_nodes.tolist(), b.target_values)}
    assert top[(15, 4)] == pytest.approx(0.3) and top[(15, 0)] == pytest.approx(0.3)
    assert top[(0, 0)] == pytest.approx(0.0) and top[(5, 4)] == pytest.approx(0.3 * (1 - np.cos(np.pi / 3)) / 2)

    s = smiley()
    assert (s.width, s.height, len(s.target_dofs)) == (50, 50, 25 + 9 + 9)
    t = {tuple(n): v for n, v in zip(s.target_nodes.tolist(), s.target_values)}
    assert t[(25, 15)] == pytest.approx(-0.5) and t[(13, 15)] == pytest.approx(0.0, abs=1e-12)
    assert t[(17, 35)] == pytest.approx(0.3) and t[(33, 35)] == pytest.approx(0.3) and (25, 35) not in t

    g = graded()
    assert (g.width, g.height, len(g.target_dofs)) == (40, 15, 82)
    t = {tuple(n): v for n, v in zip(g.target_nodes.tolist(), g.target_values)}
    assert t[(20, 15)] == pytest.approx(0.08) and t[(20, 0)] == pytest.approx(-0.08)
    fixed = {(c.where, c.component, c.value) for c in g.conditions}
    assert ("right", "x", -0.4) in fixed and ((40, 7), "y", 0.0) in fixed


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_problem_file_round_trip(tmp_path, suffix):
    p = smiley()
    p.save(tmp_path / f"s{suffix}")
    q = load_problem(tmp_path / f"s{suffix}")
    assert q.name == "smiley" and (q.width, q.height) == (50, 50)
    assert np.array_equal(q.target_dofs, p.target_dofs) and np.allclose(q.target_values, p.target_values)
    assert q.conditions == p.conditions


def test_malformed_problem_files(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('width = 3\nheight = "two"\nconditions = []\n[[targets]]\nnodes = "top"\ncomponent = "y"\nvalues = 0.1\n')
    with pytest.raises(FileFormatError, match="'height'"):
        load_problem(path)
    path.write_text('width = 3\nheight = 2\nconditions = []\n[[targets]]\nnodes = "top"\ncomponent = "z"\nvalues = 0.1\n')
    with pytest.raises(FileFormatError, match=r"targets\[0\].component"):
        load_problem(path)
    path.write_text('width = 3\nheight = 2\n[[conditions]]\nwhere = [9, 0]\ncomponent = "x"\n'
                    '[[targets]]\nnodes = "top"\ncomponent = "y"\nvalues = [0.1, 0.2]\n')
    with pytest.raises(FileFormatError, match=r"conditions\[0\]"):
        load_problem(path)
    path.write_text('width = 3\nheight = 2\nconditions = []\n[[targets]]\nnodes = "top"\ncomponent = "y"\nvalues = [0.1, 0.2]\n')
    with pytest.raises(FileFormatError, match=r"targets\[0\].values"):
        load_problem(path)
    path.write_text("width = [")
    with pytest.raises(FileFormatError, match="not valid TOML"):
        load_problem(path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"width": 3, "height": 2, "conditions": []}))
    with pytest.raises(FileFormatError, match="'targets'"):
        load_problem(bad)
    with pytest.raises(FileFormatError, match="suffix"):
        load_problem(tmp_path / "x.yaml")


def test_plots(tmp_path):
    from metasys.macro.plots import plot_deformed, plot_history, plot_property_maps

    problem = tiny_problem()
    result = optimize_properties(problem, BallDatabase(), max_iterations=5)
    plot_property_maps(result.properties, tmp_path / "p.png", signed_distance=result.signed_distance)
    plot_deformed(result.displacement, problem, tmp_path / "d.png", scale=5)
    plot_history(result.history, tmp_path / "h.png")
    assert all((tmp_path / n).stat().st_size > 1000 for n in ("p.png", "d.png", "h.png"))


def test_single_run_and_progress_display(capsys):
    problem = tiny_problem()
    result = optimize_properties(problem, BallDatabase(), restart_every=None, max_iterations=6, verbose=True)
    assert result.restarts == 0 and result.iterations <= 6
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("tiny it")]
    assert len(lines) == result.iterations and "change" in lines[0] and " g " in lines[0]
    assert all(len(v) == result.iterations for v in result.history.values())


def test_recovers_known_optimum_with_default_database():
    """Target from real database cells deep inside the feasible region: MMA + HPI recovers it."""
    from metasys import Database
    from metasys.database.storage import default_path

    if not default_path().exists():
        pytest.skip("default database not available")
    db = Database.default()
    phi, _ = db.feasibility(db.properties)
    truth = db.properties[np.random.default_rng(0).choice(np.flatnonzero(phi > 0.03), 12)].reshape(3, 4, 4)
    problem = tiny_problem(truth)
    result = optimize_properties(problem, db, tolerance=1e-6, max_iterations=400)
    assert result.rrmse < 1e-3
    assert result.feasible_fraction == 1.0


def test_multi_start_counts_pilots():
    db = BallDatabase()
    candidates = db.center + np.array([[0.1, 0, 0, 0], [-0.1, 0, 0.05, 0], [0, 0.05, -0.1, 0.02]])
    result = optimize_properties(tiny_problem(), db, start=candidates, pilot_iterations=10, max_iterations=50)
    assert result.iterations <= 50 and len(result.history["objective"]) == result.iterations
    assert result.rrmse < result.history["rrmse"][0]
    # HPI allows sum_e S(-phi_e) <= 1, i.e. about one element at the boundary.
    assert result.feasible_fraction >= 11 / 12
    with pytest.raises(InvalidValueError, match="start"):
        optimize_properties(tiny_problem(), db, start="best")


@pytest.mark.slow
def test_bridge_reaches_issue_target_with_default_settings():
    """Issue #7 figure: bridge macro RRMSE <= 0.01 with >= 99 % feasible elements (full default database),
    from the documented call without options (issue #19: it uses `macro_settings`)."""
    from metasys.database.storage import default_path

    if not default_path().exists():
        pytest.skip("default database not available")
    problem = bridge()
    settings = macro_settings(problem)
    assert settings["start"] == "multi" and macro_settings(smiley())["start"] == "multi"
    result = optimize_properties(problem)
    assert result.rrmse <= 0.01
    assert result.feasible_fraction >= 0.99
    assert result.iterations > settings["pilot_iterations"]  # the multi-start ran


def _positive_definite(p):
    p = np.asarray(p).reshape(-1, 4)
    return (p[:, 0] > 0) & (p[:, 2] > 0) & (p[:, 3] > 0) & (p[:, 1] ** 2 < p[:, 0] * p[:, 2])


def test_iterates_stay_positive_definite():
    """The database box admits non-PD combinations (large C12 with small C11, C22; the ball even has C33 < 0):
    MMA never evaluates one (the macro model would reject it), C12 is clipped to +-0.999 sqrt(C11 C22)."""
    db, problem = BallDatabase(), tiny_problem()
    low = db.properties.min(axis=0)
    assert low[3] < 0 and db.properties[:, 1].max() ** 2 > low[0] * low[2]
    obj = PropertyObjective(problem, db)
    assert np.all(obj.lower[[0, 2, 3]] > 0)
    corner = np.zeros((3, 4, 4))
    corner[..., 1] = 1.0  # smallest C11, C22, C33 with the largest C12: far from positive definite before the clipping
    assert not np.any(_positive_definite(obj._coordinates(corner)))
    assert np.all(_positive_definite(obj.properties(corner)))
    assert obj.properties(corner)[0, 0, 1] == pytest.approx(0.999 * np.sqrt(obj.lower[0] * obj.lower[2]))

    evaluated, clipped = [], []

    def callback(k, x, value, cons):
        evaluated.append(_positive_definite(obj.properties(x)).all())
        clipped.append(not _positive_definite(obj._coordinates(x)).all())

    start = np.array([0.45, 0.47, 0.45, 0.15])  # inside the ball, but C12 > sqrt(C11 C22): MMA steps beyond the bound
    result = optimize_properties(problem, db, start=start, max_iterations=60, callback=callback)
    assert len(evaluated) == result.iterations == 60 and all(evaluated) and sum(clipped) >= 10
    # The start's C12 lies beyond the bound: moved onto it (same design) so that MMA can move it again.
    x0 = obj.variables(np.broadcast_to(start, (3, 4, 4)))
    x1 = obj.project(x0)
    np.testing.assert_allclose(obj.properties(x1), obj.properties(x0), rtol=1e-12)
    assert np.all(x1[1::4] < x0[1::4])
    np.testing.assert_allclose(obj.project(x1), x1, rtol=1e-12)
    assert np.all(_positive_definite(result.properties))


def test_clipped_coupling_gradient_matches_finite_differences(rng):
    obj = PropertyObjective(tiny_problem(), BallDatabase(), beta=20.0)
    x = rng.uniform(0.3, 0.7, obj.n).reshape(3, 4, 4)
    x[0, :, 0], x[0, :, 2], x[0, :, 1] = 0.02, 0.03, 0.95  # row 0: C12 clipped at +0.999 sqrt(C11 C22)
    x = x.ravel()
    clipped = ~_positive_definite(obj._coordinates(x)).reshape(3, 4)
    assert clipped[0].all() and not clipped[1:].any()
    f, df, g, dg = obj.evaluate(x)
    _check_gradients(obj, x, list(range(16)) + list(rng.choice(np.arange(16, obj.n), 6, replace=False)))
    assert np.all(df[1:16:4] == 0)  # the clipped C12 does not depend on its own variable


class CountingObjective:
    """A PropertyObjective that counts its evaluations."""

    def __init__(self, objective):
        self.inner, self.n, self.constrained, self.calls = objective, objective.n, objective.constrained, 0

    def evaluate(self, x):
        self.calls += 1
        return self.inner.evaluate(x)


def test_mma_with_restarts_evaluates_once_per_iteration():
    obj = CountingObjective(PropertyObjective(tiny_problem(), BallDatabase()))
    x0 = obj.inner.variables(np.broadcast_to(BallDatabase().center, (3, 4, 4)))
    seen = []
    run = mma_with_restarts(obj, x0, budget=40, restart_every=15, callback=lambda k, x, f, g: seen.append(k))
    assert isinstance(run, MMARun)
    x, status, restarts, history, best, best_value = run
    assert obj.calls == len(history["objective"]) == len(seen) <= 40 and seen == list(range(1, len(seen) + 1))
    assert restarts >= 1 and status in ("maxeval", "xtol") and history["change"][0] == 0.0
    feasible = [f for f, c in zip(history["objective"], history["constraint"]) if c <= 1e-9]
    assert best is not None and best_value == min(feasible) < history["objective"][0]
    assert x.shape == (obj.n,) and np.all((x >= 0) & (x <= 1))
    with pytest.raises(InvalidValueError, match="budget"):
        mma_with_restarts(obj, x0, budget=0)


def test_settings_come_from_the_problem_unless_given():
    tiny = tiny_problem()
    assert resolve_settings(bridge()) == {"start": "multi", "pilot_iterations": 1000, "restart_every": 300,
                                          "max_iterations": 5000}
    assert resolve_settings(smiley()) == {"start": "multi", "max_iterations": 1500, "restart_every": 100,
                                          "pilot_iterations": 300}
    assert resolve_settings(graded(), family=paper_gradation()) == {"start": "median", "max_iterations": 500,
                                                                    "restart_every": 100, "pilot_iterations": 100}
    assert resolve_settings(bridge(), family=paper_gradation())["start"] == "median"
    mixed = resolve_settings(bridge(), max_iterations=2000, restart_every=None, start=None)
    assert mixed == {**macro_settings(bridge()), "max_iterations": 2000, "restart_every": None}
    assert resolve_settings(tiny)["start"] == "multi"  # 12 elements: a small grid


def test_default_call_runs_the_multi_start(monkeypatch):
    """No options on a small grid: five starts of ``pilot_iterations`` each, then the best continues; explicit wins."""
    import metasys.macro.optimization as optimization

    runs, real = [], optimization.mma_with_restarts
    monkeypatch.setattr(optimization, "mma_with_restarts",
                        lambda objective, x0, **kw: runs.append(kw) or real(objective, x0, **kw))
    db = BallDatabase()
    result = optimize_properties(tiny_problem(), db, pilot_iterations=8, max_iterations=50)
    assert [r["budget"] for r in runs[:5]] == [8] * 5 and all(r["restart_every"] == 300 for r in runs)
    assert result.iterations <= 50 and len(runs) <= 6
    best_pilot = min(min(result.history["rrmse"][8 * i: 8 * i + 8]) for i in range(5))
    assert result.rrmse <= best_pilot + 1e-12
    runs.clear()
    single = optimize_properties(tiny_problem(), db, start="median", max_iterations=20, restart_every=10)
    assert [r["budget"] for r in runs] == [20] and single.iterations <= 20
