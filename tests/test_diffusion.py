"""Diffusion backend: schedule, DDIM, training/resume, noise-input optimization, guided sampling, CLI.

Every test uses a TINY U-Net (two levels, 16x16 images, 8 channels) trained for a few hundred steps on
synthetic mirror-symmetric cells, so compilations stay short.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import typer
from conftest import mirror
from typer.testing import CliRunner

from metasys import Database, Material, homogenize
from metasys.diffusion import (
    DiffusionModel,
    Schedule,
    UNetConfig,
    append_generated,
    bulk_modulus,
    candidate_generator,
    diversity,
    frac,
    generate_cells,
    train_diffusion,
)
from metasys.diffusion.cli import diffusion
from metasys.diffusion.generate import _make_pipeline, batched_bfgs, default_loss
from metasys.diffusion.preprocess import preprocess_cells
from metasys.diffusion.schedule import ddim_invert, ddim_sample, q_sample

TINY = {"channels": 8, "groups": 4, "num_heads": 1, "image_size": 16, "channel_mults": [1, 2], "attention_levels": [1]}
TINY_TRAINING = {"warmup_steps": 20, "learning_rate": 3e-3, "ema_decay": 0.9, "checkpoint_every": 100, "log_every": 20}


def synthetic_cells(n=16, seed=0):
    rng = np.random.default_rng(seed)
    # smooth random quarters: blurred noise thresholded (blob-like features, like real cells)
    from scipy.ndimage import gaussian_filter

    q = gaussian_filter(rng.standard_normal((n, 25, 25)), (0, 2.5, 2.5), mode="wrap")
    return mirror(q > np.median(q, axis=(1, 2), keepdims=True))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_model")
    train_diffusion(synthetic_cells(), out, steps=250, batch_size=16, unet=TINY, training=TINY_TRAINING, progress=False,
                    log=lambda *a: None)
    return DiffusionModel.load(out)


def test_forward_noising_matches_closed_form():
    sched = Schedule()
    rng = np.random.default_rng(0)
    x0 = np.array([0.7, -0.3])
    t = 400
    # iterate q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I) and compare with q(x_t | x_0)
    x = np.broadcast_to(x0, (20000, 2)).copy()
    for beta in sched.betas[: t + 1]:
        x = np.sqrt(1.0 - beta) * x + np.sqrt(beta) * rng.standard_normal(x.shape)
    ab = sched.alpha_bar[t]
    assert np.allclose(x.mean(0), np.sqrt(ab) * x0, atol=0.02)
    assert np.allclose(x.var(0), 1.0 - ab, rtol=0.03)
    eps = rng.standard_normal((3, 2)).astype(np.float32)
    xt = q_sample(sched, jnp.asarray(np.broadcast_to(x0, (3, 2)), jnp.float32), jnp.array([0, t, 999]), jnp.asarray(eps))
    expect = np.sqrt(sched.alpha_bar[[0, t, 999]])[:, None] * x0 + np.sqrt(1 - sched.alpha_bar[[0, t, 999]])[:, None] * eps
    assert np.allclose(np.asarray(xt), expect, atol=1e-5)
    assert sched.alpha_bar[-1] < 1e-4 and np.isclose(sched.betas[0], 1e-4) and np.isclose(sched.betas[-1], 0.02)


def test_preprocess_shape_range_and_seed():
    cells = synthetic_cells(3)
    a, b = preprocess_cells(cells, seed=1), preprocess_cells(cells, seed=1)
    assert a.shape == (3, 32, 32) and a.dtype == np.float32 and np.array_equal(a, b)
    assert a.min() >= -1 and a.max() <= 1 and np.any((a > -0.9) & (a < 0.9))        # smoothed: gray levels exist
    assert not np.array_equal(a, preprocess_cells(cells, seed=2))
    # solid pixels map to high values, void to low ones
    up = np.asarray(jax.image.resize(a, (3, 50, 50), "linear"))
    assert np.mean((up > 0) == cells) > 0.9


def test_ddim_deterministic_and_invertible(tiny_model):
    m = tiny_model
    w = m.noise(3, seed=4)
    a, b = m.generate_images(w), m.generate_images(w)
    assert np.array_equal(a, b) and a.shape == (3, 16, 16) and np.all(np.isfinite(a))
    s1, s2 = m.generate_images(w, eta=1.0, seed=1), m.generate_images(w, eta=1.0, seed=2)
    assert not np.allclose(s1, s2)
    # DDIM inversion maps the sample back to (about) its noise input, and the inverted noise regenerates it
    eps = m.eps_fn()
    f = jax.jit(lambda x: ddim_sample(eps, x, m.schedule, 100))
    g = jax.jit(lambda x: ddim_invert(eps, x, m.schedule, 100))
    x0 = f(jnp.asarray(w))
    w_back = g(x0)
    x0_again = f(w_back)
    rel = float(jnp.linalg.norm(x0_again - x0) / jnp.linalg.norm(x0))
    other = float(jnp.linalg.norm(f(jnp.asarray(m.noise(3, seed=5))) - x0) / jnp.linalg.norm(x0))
    print("inversion", rel, other, float(jnp.linalg.norm(w_back - w) / jnp.linalg.norm(w)))
    assert rel < 0.1 and other > 0.5, (rel, other)
    assert float(jnp.linalg.norm(w_back - w) / jnp.linalg.norm(w)) < 0.5


def test_end_to_end_gradient_matches_finite_differences(tiny_model):
    m = tiny_model
    material = Material.two_phase(1.0, 100.0)
    loss = default_loss(1.0)
    vg, _ = _make_pipeline(m, material, 10, False, loss)
    target = jnp.asarray(np.broadcast_to(np.array([[30.0, 8, 0], [8, 30, 0], [0, 0, 8]]), (1, 3, 3)), jnp.float32)
    w = jnp.asarray(m.noise(1, seed=7))
    gamma = jnp.float32(5.0)
    (f0, _), grad = vg(w, m.params, gamma, target)
    rng = np.random.default_rng(0)
    for _ in range(2):
        d = rng.standard_normal(w.shape).astype(np.float32)
        d /= np.linalg.norm(d)
        h = 3e-2
        (fp, _), _ = vg(w + h * d, m.params, gamma, target)
        (fm, _), _ = vg(w - h * d, m.params, gamma, target)
        fd = (float(fp) - float(fm)) / (2 * h)
        an = float(jnp.sum(grad * d))
        assert abs(fd - an) <= 0.05 * abs(an) + 1e-3 * abs(float(f0)), (fd, an)


def test_checkpoint_resume_equals_uninterrupted(tmp_path):
    cells = synthetic_cells(8, seed=3)
    kw = {"steps": 6, "batch_size": 4, "unet": TINY, "training": {**TINY_TRAINING, "checkpoint_every": 2}, "seed": 5,
          "progress": False, "log": lambda *a: None}
    full = train_diffusion(cells, tmp_path / "full", **kw)
    part = train_diffusion(cells, tmp_path / "part", stop_after=4, **kw)
    assert part["training"]["steps_run"] == 4 and part["training"]["status"] == "time_limit"
    resumed = train_diffusion(cells, tmp_path / "part", **kw)
    assert resumed["training"]["steps_run"] == 6 and resumed["training"]["status"] == "completed"
    assert full["training"]["status"] == "completed"
    a, b = DiffusionModel.load(tmp_path / "full"), DiffusionModel.load(tmp_path / "part")
    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        assert np.array_equal(np.asarray(x), np.asarray(y))
    from flax import serialization

    sa = serialization.msgpack_restore((tmp_path / "full/checkpoint/state.msgpack").read_bytes())
    sb = serialization.msgpack_restore((tmp_path / "part/checkpoint/state.msgpack").read_bytes())
    for x, y in zip(jax.tree_util.tree_leaves(sa), jax.tree_util.tree_leaves(sb)):
        assert np.array_equal(np.asarray(x), np.asarray(y))
    meta = json.loads((tmp_path / "full/model.json").read_text())
    assert meta["format"] == "metasys-diffusion-model" and meta["format_version"] == 1
    assert meta["unet"]["channels"] == 8 and len(meta["database_fingerprint"]) == 32
    # a different run in the same directory is refused
    with pytest.raises(ValueError, match="different run"):
        train_diffusion(cells, tmp_path / "full", **{**kw, "seed": 6})


def test_generate_cells_reduces_loss_and_reports_binary_stiffness(tiny_model, tmp_path):
    target = np.array([0.35, 0.12, 0.35, 0.09])
    r = generate_cells(target, n=2, model=tiny_model, seed=1, gammas=(5.0, 20.0), max_iter=8, symmetric=True)
    assert r.cells.shape == (2, 50, 50) and r.cells.dtype == bool
    assert np.allclose(r.stiffness, homogenize(r.cells, Material()), rtol=1e-10, atol=1e-12)
    first = np.asarray(r.history[0]["loss"][0])
    assert np.all(np.asarray(r.history[0]["final_loss"]) < first)            # BFGS reduced every sample's loss
    # BFGS (Armijo line search) never raises a sample's loss within a projection stage (the stages differ
    # in gamma, so the loss may jump between them), and the reported relaxed loss is the last stage's final one
    for stage in r.history:
        per_iter = np.asarray(stage["loss"])                                    # (records, n)
        assert len(per_iter) >= 2 and np.all(np.diff(per_iter, axis=0) <= 0)
        np.testing.assert_array_equal(per_iter[-1], stage["final_loss"])
    np.testing.assert_allclose(r.relaxed_loss, r.history[-1]["final_loss"], rtol=1e-6)
    c = np.diag([0.35, 0.35, 0.09]) + 0.12 * np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]])
    assert np.allclose(r.loss, (((r.stiffness - c) / 0.01) ** 2).sum(axis=(1, 2)))
    assert np.all((r.binarization >= 0) & (r.binarization <= 1))
    assert np.array_equal(r.cells, r.cells[:, ::-1]) and np.array_equal(r.cells, r.cells[:, :, ::-1])   # symmetric
    # same seed, same result
    again = generate_cells(target, n=2, model=tiny_model, seed=1, gammas=(5.0, 20.0), max_iter=8, symmetric=True)
    assert np.array_equal(again.cells, r.cells)
    # the binary polish only lowers the loss; without it the cells are the thresholded design
    plain = generate_cells(target, n=2, model=tiny_model, seed=1, gammas=(5.0, 20.0), max_iter=8, symmetric=True, polish=0)
    assert np.all(r.loss <= r.thresholded_loss) and np.all(r.loss[r.flips > 0] < r.thresholded_loss[r.flips > 0])
    np.testing.assert_allclose(plain.loss, r.thresholded_loss)
    assert np.all(np.count_nonzero(plain.cells != r.cells, axis=(1, 2)) <= 4 * r.flips) and not plain.flips.any()

    gen = candidate_generator(tiny_model, gammas=(5.0,), max_iter=2)
    out = gen(np.array([[0.35, 0.12, 0.35, 0.09], [0.2, 0.05, 0.3, 0.05]]), n_per_target=1, seed=0)
    assert out.shape == (2, 1, 50, 50) and out.dtype == bool
    # bounded cost: 3 targets grouped into 2 optimized targets, one design each repeated into both slots
    capped = candidate_generator(tiny_model, gammas=(5.0,), max_iter=1, max_targets=2, max_per_target=1)
    three = capped(np.array([[0.35, 0.12, 0.35, 0.09], [0.36, 0.12, 0.35, 0.09], [0.2, 0.05, 0.3, 0.05]]), 2, seed=0)
    assert three.shape == (3, 2, 50, 50) and len(capped.last_result) == 2
    a = capped.last_assignment
    assert a[0] == a[1] != a[2] and np.array_equal(three[0], three[1]) and np.array_equal(three[:, 0], three[:, 1])
    db = Database.create(tmp_path / "db.h5")
    idx = append_generated(db, gen.last_result)
    assert len(idx) == len(np.unique(out.reshape(2, -1), axis=0))
    assert set(db.provenance(idx)["source"]) == {"generated"}
    assert np.allclose(db.C[idx], homogenize(db.get_cells(idx)))


def test_generate_cells_errors(tiny_model):
    with pytest.raises(ValueError, match="target"):
        generate_cells(np.ones(5), model=tiny_model)
    with pytest.raises(ValueError, match="target"):
        generate_cells(None, model=tiny_model)
    with pytest.raises(ValueError, match="method"):
        generate_cells(np.ones(4), model=tiny_model, method="magic")
    with pytest.raises(TypeError, match="n"):
        generate_cells(np.ones(4), n=1.5, model=tiny_model)
    with pytest.raises(TypeError, match="material"):
        generate_cells(np.ones(4), model=tiny_model, material="steel")
    with pytest.raises(ValueError, match="polish"):
        generate_cells(np.ones(4), model=tiny_model, polish=-1)
    with pytest.raises(ValueError, match="model.json"):
        generate_cells(np.ones(4), model="/nonexistent/dir")


@pytest.mark.slow
def test_generate_cells_custom_loss(tiny_model):
    material = Material.two_phase(1.0, 100.0)

    def k_loss(c):
        return ((bulk_modulus(c) - 20.0) / 20.0) ** 2

    r = generate_cells(loss=k_loss, n=1, model=tiny_model, material=material, gammas=(5.0,), max_iter=5, tol=1e-6)
    losses = np.asarray(r.history[0]["loss"])[:, 0]           # the initial loss, then one per BFGS iteration
    assert len(losses) >= 2 and np.all(np.diff(losses) <= 0) and losses[-1] < losses[0]
    assert losses[-1] == r.history[0]["final_loss"][0]
    assert np.isclose(r.loss[0], ((bulk_modulus(r.stiffness[0]) - 20) / 20) ** 2)
    assert r.target is None and np.allclose(r.stiffness, homogenize(r.cells, material))


def test_batched_bfgs_on_quadratics():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 6, 6))
    h = a @ a.transpose(0, 2, 1) + 6 * np.eye(6)
    b = rng.standard_normal((3, 6))

    def fg(x):
        hx = np.einsum("nij,nj->ni", h, x)
        return 0.5 * np.einsum("ni,ni->n", x, hx) - np.einsum("ni,ni->n", b, x) + 10.0, hx - b

    x, f, it = batched_bfgs(fg, np.zeros((3, 6)), max_iter=50, tol=-np.inf)
    assert np.allclose(x, np.linalg.solve(h, b[..., None])[..., 0], atol=1e-5)
    assert np.all(it <= 50)
    # max_iter=0 returns the start untouched after the one evaluation that records it
    calls = []
    x0, f0, it0 = batched_bfgs(lambda w: calls.append(1) or fg(w), np.ones((3, 6)), max_iter=0, tol=-np.inf)
    assert len(calls) == 1 and np.all(it0 == 0) and np.array_equal(x0, np.ones((3, 6)))
    np.testing.assert_allclose(f0, fg(np.ones((3, 6)))[0])


def test_batched_bfgs_interpolated_line_search_and_warm_start():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2, 5, 5))
    h = a @ a.transpose(0, 2, 1) + 5 * np.eye(5)
    b = rng.standard_normal((2, 5))
    calls = []

    def fg(x):
        calls.append(1)
        hx = np.einsum("nij,nj->ni", h, x)
        grad = hx - b
        return 0.5 * np.einsum("ni,ni->n", x, hx) - np.einsum("ni,ni->n", b, x), lambda: grad   # lazy gradient

    exact = np.linalg.solve(h, b[..., None])[..., 0]
    state = {}
    x, f, it = batched_bfgs(fg, np.zeros((2, 5)), max_iter=60, tol=-np.inf, interpolate=True, state=state)
    assert np.allclose(x, exact, atol=1e-5) and state["h"].shape == (2, 5, 5) and not state["fresh"].any()
    # the learned inverse Hessian approaches H^-1, so a warm restart from a new point converges in fewer steps
    _, _, cold = batched_bfgs(fg, np.ones((2, 5)), max_iter=60, tol=-np.inf)
    x2, _, warm = batched_bfgs(fg, np.ones((2, 5)), max_iter=60, tol=-np.inf, state=state)
    assert np.allclose(x2, exact, atol=1e-5) and np.all(warm <= cold), (warm, cold)


def test_frac_and_diversity():
    assert frac([1.0, 1.005, 1.03, 2.0], 1.0) == {0.01: 0.5, 0.05: 0.75}
    cells = np.zeros((3, 4, 4), bool)
    cells[1, 0, 0] = True
    cells[2] = True
    # pairwise differing shares: (0,1) 1/16, (0,2) 1, (1,2) 15/16
    assert np.isclose(diversity(cells), (1 / 16 + 1 + 15 / 16) / 3)
    with pytest.raises(ValueError):
        diversity(cells[:1])


@pytest.mark.slow
def test_guided_sampling(tiny_model):
    material = Material.two_phase(1.0, 100.0)
    opts = {"n": 3, "model": tiny_model, "method": "guided", "material": material, "steps": 8, "density_weight": 0.1,
            "seed": 2}

    def k_loss(k_target):
        return lambda c: ((bulk_modulus(c) - k_target) / k_target) ** 2

    r = generate_cells(loss=k_loss(25.0), scale=0.5, **opts)
    assert r.method == "guided" and r.cells.shape == (3, 50, 50)
    assert np.allclose(r.stiffness, homogenize(r.cells, material))
    assert len(r.history[0]["mean_loss_per_step"]) == 8
    assert set(frac(bulk_modulus(r.stiffness), 25.0)) == {0.01, 0.05}
    assert 0 <= diversity(r.cells) <= 1
    # guidance moves K toward the target: the same noise and seed without guidance (scale 0) is the reference
    k0 = bulk_modulus(generate_cells(loss=k_loss(25.0), scale=0.0, **opts).stiffness)   # measured 5.6, 5.1, 4.3
    k_up = bulk_modulus(r.stiffness)                                                     # measured 12.2, 6.6, 5.0
    assert np.all(k_up > k0) and np.all(np.abs(k_up - 25.0) < np.abs(k0 - 25.0))
    # and down for a target below the unguided samples: every sample ends closer, most of the distance is removed
    # (measured 1.9, 2.1, 2.3 from 5.6, 5.1, 4.3; in a fresh environment the tiny model trained to 6.45, 2.41, 5.33
    # unguided and 2.15, 2.23, 1.91 guided: a sample that starts near the target cannot lose 80% of its distance)
    k_down = bulk_modulus(generate_cells(loss=k_loss(2.0), scale=0.5, **opts).stiffness)
    assert np.all(k_down < k0) and np.all(np.abs(k_down - 2.0) < np.abs(k0 - 2.0))
    assert np.sum(np.abs(k_down - 2.0)) < 0.2 * np.sum(np.abs(k0 - 2.0))


def _cli():
    app = typer.Typer()

    @app.callback()
    def _group():
        """test group"""

    app.command("diffusion")(diffusion)
    return app


def test_cli_bad_input_exits_2(tmp_path):
    runner = CliRunner()
    res = runner.invoke(_cli(), ["diffusion", "--db", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "does not exist" in res.output
    db = Database.create(tmp_path / "db.h5")
    db.append(synthetic_cells(4))
    res = runner.invoke(_cli(), ["diffusion", "--db", str(db.path), "--out", str(tmp_path / "m"), "--steps", "0"])
    assert res.exit_code == 2 and "steps" in res.output
    res = runner.invoke(_cli(), ["diffusion", "--db", str(db.path), "--out", str(tmp_path / "m"), "--channel-mults", "1,x"])
    assert res.exit_code == 2 and "--channel-mults" in res.output
    res = runner.invoke(_cli(), ["diffusion", "--db", str(db.path), "--out", str(tmp_path / "m"), "--attention-levels", "7"])
    assert res.exit_code == 2 and "--attention-levels" in res.output


@pytest.mark.slow
def test_cli_trains_and_resumes(tmp_path):
    db = Database.create(tmp_path / "db.h5")
    db.append(synthetic_cells(6))
    args = ["diffusion", "--db", str(db.path), "--out", str(tmp_path / "m"), "--steps", "3", "--batch-size", "2",
            "--channels", "4", "--channel-mults", "1,2", "--attention-levels", "1", "--quiet", "--seed", "1"]
    res = CliRunner().invoke(_cli(), args)
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "m/model.json").read_text())
    assert meta["training"]["steps_run"] == 3 and meta["database_fingerprint"] == db.fingerprint
    assert meta["command"].startswith("metasys train diffusion")
    res = CliRunner().invoke(_cli(), args)
    assert res.exit_code == 0 and "already finished" in res.output
    m = DiffusionModel.load(tmp_path / "m")
    assert m.config == UNetConfig(channels=4, channel_mults=(1, 2), attention_levels=(1,))
    assert m.sample_cells(1).shape == (1, 50, 50)


# --- hyperelastic response (jax-fem Problem + metasys Newton + adjoint); these switch JAX to float64 -------------


def test_hyperelastic_solid_curves_match_paper_fits():
    from metasys.diffusion.hyperelastic import HyperelasticTension, paper_energy_curves

    h = HyperelasticTension(Material.two_phase(1.0, 100.0))
    stiff, soft = h.solid_curve((8, 8), 1), h.solid_curve((8, 8), 0)
    p1, _ = paper_energy_curves(h.displacements)
    # the paper's cubic fits (Sec. 3.3) of the same model: within 5% at every load step
    assert np.all(np.abs(stiff - p1) / p1 < 0.05), (stiff, p1)
    assert np.allclose(soft, stiff / 100.0, rtol=1e-6)        # homogeneous: same deformation, energy linear in E
    e, f = h.responses(np.ones((8, 8)))
    assert np.allclose(e, stiff) and np.all(np.diff(f) > 0) and np.all(f > 0)


def test_hyperelastic_adjoint_matches_finite_differences():
    from scipy.ndimage import gaussian_filter

    from metasys.diffusion.hyperelastic import HyperelasticTension

    h = HyperelasticTension(Material.two_phase(1.0, 100.0), displacements=(0.1, 0.3))
    rng = np.random.default_rng(0)
    rho = 0.5 * (np.tanh(10 * gaussian_filter(rng.standard_normal((8, 8)), 1.5, mode="wrap")) + 1)
    ce, cf = np.array([1.0, 0.5]), np.array([0.3, -0.2])       # the force term needs the adjoint solve
    e, f, g = h.value_and_vjp(rho, ce, cf)
    assert np.allclose((e, f), h.responses(rho))
    for _ in range(2):
        d = rng.standard_normal(rho.shape)
        d /= np.linalg.norm(d)
        ep, fp = h.responses(rho + 1e-4 * d)
        em, fm = h.responses(rho - 1e-4 * d)
        fd = (ce @ (ep - em) + cf @ (fp - fm)) / 2e-4
        assert abs(fd - np.sum(g * d)) <= 1e-4 * abs(fd) + 1e-8, (fd, np.sum(g * d))
    # through JAX: the custom_vjp gives the same gradient
    fn = h.jax_fn()

    def scalar(r):
        energy, force = fn(r)
        return jnp.dot(jnp.asarray(ce), energy) + jnp.dot(jnp.asarray(cf), force)

    grad = jax.grad(scalar)(jnp.asarray(rho))
    assert np.allclose(np.asarray(grad), g, rtol=1e-6, atol=1e-9)


def test_generate_cells_for_a_hyperelastic_target(tiny_model):
    from metasys.diffusion.hyperelastic import HyperelasticTension

    material = Material.two_phase(1.0, 100.0)
    h = HyperelasticTension(material, displacements=(0.1, 0.2), resolution=(8, 8))   # coarse FE mesh: fast
    target = 0.5 * h.solid_curve(phase=1) + 0.5 * h.solid_curve(phase=0)

    def loss(energy, force):
        return jnp.mean((energy - target) ** 2)

    r = generate_cells(loss=loss, response=h, model=tiny_model, material=material, gammas=(2.0,), max_iter=2, seed=0)
    assert r.cells.shape == (1, 50, 50) and len(r.responses) == 2 and r.responses[0].shape == (1, 2)
    losses = [v[0] for v in r.history[0]["loss"]]
    assert losses[-1] < losses[0]
    assert np.allclose(r.responses[0][0], h(r.cells[0].astype(float)))
    # the resized response is differentiable end to end (resize VJP + adjoint)
    g = jax.grad(lambda x: jnp.sum(h.jax_fn()(x)[0]))(jnp.asarray(r.density[0]))
    assert g.shape == (50, 50) and np.all(np.isfinite(np.asarray(g)))
    assert np.isclose(r.loss[0], np.mean((r.responses[0][0] - target) ** 2))
    with pytest.raises(ValueError, match="loss"):
        generate_cells(response=h, model=tiny_model)
