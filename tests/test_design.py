"""End-to-end design: ``metasys.design`` and ``metasys design`` on a small problem with the shipped
database and latent model (the bridge itself is checked in test_property_optimization's slow test and
by the README's main job)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from metasys.problems import Problem

import metasys
from metasys import Database, Design, design
from metasys.errors import InvalidTypeError, InvalidValueError
from metasys.fem import homogenize

REPORT_KEYS = {"problem", "rrmse_macro", "rrmse_full", "n_components", "theta_G_zero_fraction", "timings", "seed",
               "versions"}


def small_arch(width=4, height=2, rise=0.01) -> Problem:
    """A 4 x 2 bridge: left edge fixed in x, right edge pushed in, mid-height pins, a sine arch on top."""
    conditions = [{"where": "left", "component": "x", "value": 0.0},
                  {"where": "right", "component": "x", "value": -0.02},
                  {"where": [0, 1], "component": "y", "value": 0.0},
                  {"where": [width, 1], "component": "y", "value": 0.0}]
    x = np.arange(width + 1)
    targets = [{"nodes": [[int(i), height] for i in x], "component": "y",
                "values": (rise * np.sin(np.pi * x / width)).tolist()}]
    return Problem.from_dict({"name": "small arch", "width": width, "height": height, "conditions": conditions,
                              "targets": targets})


@pytest.fixture(scope="module")
def small_design():
    return design(small_arch(), k=3, seed=0, progress=False, generator=None)


@pytest.mark.slow
def test_design_assembles_the_chosen_database_cells(small_design):
    d = small_design
    db = Database.default()
    assert d.structure.shape == (100, 200) and d.structure.dtype == bool
    # k = 3 from the candidate stage, then cells chosen in the RRMSE's metric by the refinement (relabel_pool)
    k = d.candidate_indices.shape[-1]
    assert d.labels.shape == (2, 4) and d.candidate_indices.shape[:2] == (2, 4) and k >= 3
    assert ((d.labels >= 0) & (d.labels < k)).all()
    for indices in d.candidate_indices.reshape(-1, k):
        assert len(np.unique(indices)) == k  # no cell twice in one element's list
    chosen = np.take_along_axis(d.candidate_indices, d.labels[..., None], axis=-1)[..., 0]
    # row 0 of the structure is the bottom: element (row r, column c) occupies pixels 50r.., 50c..
    for r in range(2):
        for c in range(4):
            np.testing.assert_array_equal(d.structure[50 * r:50 * r + 50, 50 * c:50 * c + 50], d.cells[r, c])
            np.testing.assert_array_equal(d.cells[r, c], db.get_cells([int(chosen[r, c])])[0])
    # the stored properties of a chosen cell are those of its homogenized stiffness (C11, C12, C22, C33)
    C = homogenize(d.cells[0, 0], db.material)
    np.testing.assert_allclose(d.cell_properties[0, 0], [C[0, 0], C[0, 1], C[1, 1], C[2, 2]], atol=1e-6)


@pytest.mark.slow
def test_design_verifies_at_full_scale(small_design):
    d = small_design
    assert d.compatibility["n_components"] == 1
    assert 0 <= d.compatibility["theta_G_zero_fraction"] <= 1
    assert d.compatibility["mrf_lower_bound"] <= d.compatibility["mrf_energy"] + 1e-9
    assert np.isfinite(d.rrmse_full) and np.isfinite(d.rrmse_macro)
    # quality: the macro stage meets the arch (measured 1e-7); at full scale three candidates per element on a grid
    # this small give 0.363 before refinement and 0.238 after (three space-mapping rounds)
    assert d.rrmse_macro < 1e-3
    assert d.rrmse_full < 0.30 and d.rrmse_full < d.refinement[0]["unrefined"]
    assert d.full_displacement.shape == d.macro_displacement.shape == (3, 5, 2)
    # the prescribed displacements hold exactly on every solid fine node of the loaded edges
    fine = d.fine_displacement
    assert fine.shape == (101, 201, 2)
    right, left = fine[:, -1, 0], fine[:, 0, 0]
    assert np.isfinite(right).sum() > 10 and np.isfinite(left).sum() > 10
    np.testing.assert_allclose(right[np.isfinite(right)], -0.02, atol=1e-9)
    np.testing.assert_allclose(left[np.isfinite(left)], 0.0, atol=1e-9)
    assert set(d.timings) >= {"macro", "candidates", "assembly", "full_scale", "total"}


@pytest.mark.slow
def test_design_save_load_round_trip(small_design, tmp_path):
    d = small_design
    d.save(tmp_path / "d")
    report = json.loads((tmp_path / "d" / "report.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert report["seed"] == 0 and report["problem"] == "small arch"
    np.testing.assert_array_equal(np.load(tmp_path / "d" / "structure.npy"), d.structure)
    e = Design.load(tmp_path / "d")
    np.testing.assert_array_equal(e.structure, d.structure)
    np.testing.assert_array_equal(e.labels, d.labels)
    np.testing.assert_allclose(e.properties, d.properties)
    assert e.rrmse_full == pytest.approx(d.rrmse_full) and e.report() == d.report()
    assert e.problem.to_dict() == d.problem.to_dict()


@pytest.mark.slow
def test_design_exports_by_extension(small_design, tmp_path):
    d = small_design
    np.testing.assert_array_equal(np.load(d.export(tmp_path / "s.npy")), d.structure)
    import meshio

    mesh = meshio.read(d.export(tmp_path / "s.vtu"))
    assert len(mesh.cells[0].data) == d.structure.sum()
    assert mesh.point_data["displacement"].shape[1] in (2, 3)
    for suffix in (".png", ".svg", ".stl"):
        assert d.export(tmp_path / f"s{suffix}").stat().st_size > 0


def test_design_rejects_bad_arguments():
    with pytest.raises(InvalidTypeError, match="problem"):
        design(42)
    with pytest.raises(InvalidValueError, match="k"):
        design(small_arch(), k=0)
    with pytest.raises(InvalidValueError, match="k: expected a positive integer"):
        design(small_arch(), k=2.5)
    with pytest.raises(InvalidValueError, match="generator: expected 'auto'"):
        design(small_arch(), generator="diffusion")
    with pytest.raises(InvalidTypeError, match="generator"):
        design(small_arch(), generator=3)


def test_small_grids_get_more_candidates_by_default():
    """k defaults to 40 on grids of at most 400 cells (the bridge), 10 on larger ones (the smiley)."""
    from metasys.problems import bridge, smiley

    from metasys.pipeline import candidates_per_element

    assert candidates_per_element(bridge()) == 40 and candidates_per_element(smiley()) == 10
    d = design(small_arch(), seed=0, progress=False, generator=None, full_scale=False)
    assert d.candidate_indices.shape == (2, 4, 40) and d.report()["candidates_per_element"] == 40
    assert ((d.labels >= 0) & (d.labels < 40)).all()


def test_an_already_verified_structure_is_not_solved_again(monkeypatch):
    """The generator's pass often assembles the structure already checked; its full-scale solution is reused."""
    import metasys.fem.full_scale as full_scale
    import metasys.pipeline.run as pipeline
    from metasys.macro.optimization import optimize_properties
    from metasys.selection.candidates import diverse_candidates

    problem, db = small_arch(), Database.default()
    macro = optimize_properties(problem, db, max_iterations=20)
    cands = diverse_candidates(macro.properties, k=2, database=db, seed=0)
    real, calls = full_scale.solve_full_scale, []
    monkeypatch.setattr(full_scale, "solve_full_scale", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    run = dict(problem=problem, database=db, macro_options=None, mrf_options=None, full_scale=True, progress=False,
               say=lambda line: None, timings=dict.fromkeys(pipeline.STAGES, 0.0))
    first = pipeline._assemble_and_verify(macro, cands, **run)
    again = pipeline._assemble_and_verify(macro, cands, **run, verified=first)
    assert len(calls) == 1
    assert again["rrmse_full"] == first["rrmse_full"] and np.array_equal(again["full_u"], first["full_u"])


@pytest.mark.slow
def test_design_generates_cells_for_uncovered_targets_by_default(monkeypatch):
    """generator="auto" (without refinement) hands exactly the uncovered targets to the shipped diffusion prior; None
    turns it off; with the refinement on, only "prior" calls it."""
    import metasys.diffusion.generate as generate
    import metasys.pipeline.run as pipeline
    from metasys.diffusion.model import default_model_path

    if not (default_model_path() / "weights.msgpack").exists():
        pytest.skip("the shipped diffusion weights are missing")
    real, calls = generate.default_generator, []

    def spy(**options):
        gen = real(**options)

        def generator(targets, n, seed):
            calls.append(np.array(targets))
            return gen(targets, n, seed)
        return generator

    monkeypatch.setattr(generate, "default_generator", spy)
    # the smallest budget that still runs the real optimization: one design, one BFGS step at gamma 100
    monkeypatch.setattr(pipeline, "AUTO_GENERATOR", {"max_targets": 1, "max_per_target": 1, "max_iter": 1, "gammas": (100.0,)})
    problem, k = small_arch(), 60          # more candidates than the database has near some targets
    d = design(problem, k=k, seed=0, progress=False, full_scale=False)
    assert len(calls) == 1 and len(calls[0]) == d.uncovered > 0
    targets = d.properties.reshape(-1, 4)
    assert all(np.isclose(targets, t).all(axis=1).any() for t in calls[0])
    chosen = np.take_along_axis(d.candidate_indices, d.labels[..., None], axis=-1)[..., 0]
    assert d.report()["cells_not_in_database"] == int(np.sum(chosen < 0))
    for r, c in zip(*np.nonzero(chosen < 0)):              # a generated cell carries its own homogenized properties
        C = homogenize(d.cells[r, c], Database.default().material)
        np.testing.assert_allclose(d.cell_properties[r, c], [C[0, 0], C[0, 1], C[1, 1], C[2, 2]], atol=1e-6)
    design(problem, k=k, seed=0, progress=False, full_scale=False, generator=None)
    assert len(calls) == 1
    # with the full-scale refinement on, "auto" leaves the generator out and "prior" asks for it
    design(problem, k=k, seed=0, progress=False, refine_budget=0)
    assert len(calls) == 1
    design(problem, k=k, seed=0, progress=False, refine_budget=0, generator="prior")
    assert len(calls) == 2


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "metasys.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_names_the_bad_field_of_a_problem_file(tmp_path):
    bad = small_arch().to_dict()
    bad["width"] = -3
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    r = run_cli("design", str(tmp_path / "bad.json"), "--out", str(tmp_path / "out"))
    assert r.returncode == 2
    assert "width" in r.stderr + r.stdout
    assert not (tmp_path / "out").exists()
    r = run_cli("design", str(tmp_path / "missing.toml"))
    assert r.returncode == 2 and "missing.toml" in r.stderr + r.stdout


@pytest.mark.slow
def test_cli_design_writes_report_structure_and_exports(tmp_path):
    small_arch().save(tmp_path / "arch.toml")
    r = run_cli("design", str(tmp_path / "arch.toml"), "--out", str(tmp_path / "out"), "--k", "3", "--quiet",
                "--no-generator")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    for name in ("structure.npy", "report.json", "properties.png", "full_scale_deformed.png", "structure.png",
                 "structure_deformed.png", "structure.svg", "structure.vtu", "structure.stl"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "report.json").read_text())
    assert REPORT_KEYS <= set(report) and report["versions"]["metasys"] == metasys.__version__
    assert "RRMSE full scale" in r.stdout


@pytest.mark.slow
def test_family_mode_keeps_the_family_with_the_best_full_scale_result():
    from metasys.selection.families import paper_gradation

    d = design(small_arch(), family=paper_gradation(), seed=0, progress=False)
    assert d.mode == "family" and len(d.families) >= 2
    assert sum(f["chosen"] for f in d.families) == 1
    kept = next(f for f in d.families if f["chosen"])
    assert kept["rrmse_full"] == pytest.approx(d.rrmse_full) == pytest.approx(min(f["rrmse_full"] for f in d.families))
    assert d.report()["families"] == d.families
    # every chosen cell is a family member (database index) or a decoded in-between cell (-1)
    assert d.candidate_indices.shape == (2, 4, 2)


@pytest.mark.slow
def test_cli_export_of_a_saved_design(small_design, tmp_path):
    small_design.save(tmp_path / "d")
    r = run_cli("export", str(tmp_path / "d"), str(tmp_path / "s.npy"))
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), small_design.structure)
    r = run_cli("export", str(tmp_path / "d"), str(tmp_path / "s.png"), "--deformed", "--scale", "3")
    assert r.returncode == 0 and (tmp_path / "s.png").stat().st_size > 0
    r = run_cli("export", str(tmp_path / "d"), str(tmp_path / "s.stl"), "--deformed")
    assert r.returncode == 2 and "deformed" in r.stderr + r.stdout
    r = run_cli("export", str(tmp_path / "nowhere"), str(tmp_path / "s.png"))
    assert r.returncode == 2 and "not a saved design" in r.stderr + r.stdout


@pytest.mark.slow
def test_refinement_is_recorded_and_never_worse(small_design, tmp_path):
    """The default design refines at full scale: its history starts at the pipeline's structure, every kept step is
    better, the result is the last kept, and report.json round-trips it."""
    history = small_design.refinement
    assert history is not None and history[0]["iteration"] == 0
    kept = [h["rrmse_full"] for h in history]
    assert all(b <= a for a, b in zip(kept, kept[1:]))
    assert small_design.rrmse_full == pytest.approx(kept[-1])
    assert kept[-1] <= history[0]["unrefined"]
    assert "refinement" in small_design.timings
    small_design.save(tmp_path / "d")
    report = json.loads((tmp_path / "d" / "report.json").read_text())
    assert report["refinement"] == json.loads(json.dumps(history))
    assert Design.load(tmp_path / "d").refinement == report["refinement"]


@pytest.mark.slow
def test_no_refine_gives_the_unrefined_pipeline_and_same_seed_same_design(small_design):
    plain = design(small_arch(), k=3, seed=0, progress=False, generator=None, refine=False)
    assert plain.refinement is None and "refinement" not in plain.timings and "refinement" not in plain.report()
    assert plain.rrmse_full == pytest.approx(small_design.refinement[0]["unrefined"], rel=1e-9)
    again = design(small_arch(), k=3, seed=0, progress=False, generator=None)
    np.testing.assert_array_equal(again.structure, small_design.structure)
    assert again.rrmse_full == small_design.rrmse_full


def test_deformed_plots_are_magnified_to_a_readable_scale():
    """A 0.1 displacement on a 6-cell-tall beam is drawn magnified (x10: largest displacement at 1.0 of 6 cells); the
    scale is 1, 2 or 5 times a power of ten and never below true scale."""
    from metasys.pipeline.plots import deformation_scale

    beam = small_arch(width=30, height=6, rise=0.1)
    u = np.zeros((7, 31, 2))
    u[..., 1] = 0.1
    assert deformation_scale(u, beam) == 10.0
    assert deformation_scale(10 * u, beam) == 1.0                      # 1.0 on 6 cells: readable at true scale
    for s in (deformation_scale(f * u, beam) for f in (0.013, 0.07, 0.3, 2.0)):
        mantissa = s / 10 ** np.floor(np.log10(s))
        assert s >= 1 and np.isclose(mantissa, [1, 2, 5]).any()
