"""The composite prior (v-prediction, zero-terminal-SNR schedule), its training, guided sampling and inverse design.

Every model here is a tiny untrained (or 3-step trained) U-Net built in the test; nothing reads the shipped prior.
"""

import numpy as np
import pytest
from typer.testing import CliRunner

from metasys.composites.cli import app
from metasys.composites.guided import guided_sample
from metasys.composites.materials import load_table
from metasys.composites.prior import untrained_prior
from metasys.diffusion.schedule import Schedule, ddim_step_x0, ddim_timesteps, eps_from_v, v_target, x0_from_v
from metasys.diffusion.unet import UNetConfig
from metasys.errors import InvalidValueError

TINY = UNetConfig(channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(), num_heads=2, groups=4,
                  image_size=16)
"""16 x 16 images: the FE solves and the network stay cheap; the sampler and the evaluation do not depend on the size."""


@pytest.fixture(scope="module")
def prior():
    return untrained_prior(TINY, seed=0)


def test_v_prediction_identities():
    rng = np.random.default_rng(0)
    x0, eps = rng.normal(size=(2, 5, 4, 4, 3))
    for ab in (0.0, 1e-4, 0.3, 0.97, 1.0):
        v = v_target(x0, eps, ab)
        xt = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps
        np.testing.assert_allclose(x0_from_v(xt, v, ab), x0, atol=1e-5)
        np.testing.assert_allclose(eps_from_v(xt, v, ab), eps, atol=1e-5)


def test_zero_terminal_snr_rescaling_keeps_the_first_value_and_the_plain_schedule():
    plain = Schedule(1000, 1e-5, 1e-2)
    zt = Schedule(1000, 1e-5, 1e-2, zero_terminal_snr=True)
    assert zt.alpha_bar[-1] == 0.0 and plain.alpha_bar[-1] > 0.0
    assert zt.alpha_bar[0] == pytest.approx(plain.alpha_bar[0], rel=1e-12)
    assert np.all(np.diff(zt.alpha_bar) < 0)
    np.testing.assert_allclose(np.cumprod(1 - zt.betas), zt.alpha_bar, atol=1e-12)
    np.testing.assert_array_equal(plain.alpha_bar, np.cumprod(1 - np.linspace(1e-5, 1e-2, 1000)))
    assert Schedule.from_dict(zt.to_dict()) == zt and Schedule.from_dict(plain.to_dict()) == plain
    assert "zero_terminal_snr" not in plain.to_dict()


def test_trailing_timesteps_start_at_the_last_step():
    ts = ddim_timesteps(1000, 100)
    assert ts[0] == 999 and ts[-1] == 9 and len(ts) == 100 and np.all(np.diff(ts) == -10)


def test_ddim_eta_1_from_pure_noise_keeps_only_the_prediction_and_fresh_noise():
    rng = np.random.default_rng(1)
    x, x0, z = rng.normal(size=(3, 4, 4))
    out = ddim_step_x0(x, x0, 0.0, 0.64, eta=1.0, z=z)
    np.testing.assert_allclose(out, 0.8 * x0 + 0.6 * z, atol=1e-6)
    np.testing.assert_allclose(ddim_step_x0(x, x0, 0.5, 1.0, eta=1.0, z=z), x0, atol=1e-6)


def test_guidance_moves_k_toward_the_target(prior):
    # the untrained prior (zero last layer: v = 0) starts at K = 167 (E = 250, nu = 0.25 in the mid box)
    free = guided_sample(prior, None, 2, seed=3, steps=4, batch_size=2)
    for target in (40.0, 320.0):
        guided = guided_sample(prior, target, 2, seed=3, steps=4, batch_size=2, scale_e=5e-4, scale_nu=5e-4)
        k_free = _k(free.images)
        k_guided = _k(guided.images)
        assert np.all(np.abs(k_guided - target) < np.abs(k_free - target)), (target, k_free, k_guided)
        assert np.all(np.isfinite(guided.k_history)) and guided.images.min() >= -1 and guided.images.max() <= 1


def _k(images):
    from metasys.composites import bulk_modulus, denormalize

    phys = np.clip(denormalize(np.moveaxis(images, 1, -1)), [0.5, 2.5e-4, 0], [500, 0.49975, 10])
    return bulk_modulus(phys[..., 0], phys[..., 1])


def test_samples_do_not_depend_on_the_batch(prior):
    a = guided_sample(prior, None, 2, seed=5, steps=4, batch_size=2).images
    b = guided_sample(prior, None, 1, seed=5, steps=4, batch_size=1, first=1).images
    np.testing.assert_allclose(a[1], b[0], atol=1e-4)


def test_inverse_design_result_shapes_and_bounds(prior):
    from metasys.composites import inverse_design

    table = load_table()
    r = inverse_design(150.0, n=2, seed=0, objective="J2", density_weight=1e-3, prior=prior, steps=4, batch_size=2,
                       n_theta=2, scale_e=5e-4, scale_nu=5e-4)
    assert r.matrix.shape == r.particle.shape == (2, 3) and r.images.shape == (2, 3, 16, 16)
    for name in ("radius", "volume_fraction", "k_theta", "k_sample", "density"):
        assert getattr(r, name).shape == (2,)
    assert all(any(np.array_equal(m, v) for v in table.values) for m in np.concatenate([r.matrix, r.particle]))
    assert np.all((r.volume_fraction >= 0) & (r.volume_fraction <= 1))
    assert np.all(np.isnan(r.radius) | ((r.radius > 0) & (r.radius < 0.5)))
    assert np.all(r.k_sample > 0) and np.all((r.images[:, 0] > 0) & (r.images[:, 0] <= 500))
    for t in (0.01, 0.05, 10.0):
        assert 0 <= r.frac(t) <= 1 and 0 <= r.cov(t) <= 1
    assert r.frac(10.0) == 1.0 or not np.all(np.isfinite(r.k_theta))
    assert r.cov(10.0) * r.n_chunks == len(np.unique(r.chunks))


def test_bayesian_baseline_returns_table_designs():
    from metasys.composites.baseline import bayesian_design, decode, encode

    table = load_table()
    m, p, rad, f = decode(np.full(8, 0.5), table)
    assert decode(encode(m, p, rad, f, table), table) == pytest.approx((m, p, rad, f))
    r = bayesian_design(150.0, 1, seed=0, table=table, iterations=1, init_points=2, n_theta=2)
    assert r.method == "bayesian" and r.images.shape == (1, 3, 64, 64) and r.info["iterations"] == 1
    assert 0.075 <= r.radius[0] <= 0.2 and 0.05 <= r.volume_fraction[0] <= 0.5


@pytest.mark.parametrize("kwargs, name", [({"k_target": -1.0}, "k_target"), ({"objective": "J3"}, "objective"),
                                          ({"density_weight": 0.1}, "density_weight"), ({"n": 0}, "n"),
                                          ({"method": "random"}, "method")])
def test_inverse_design_rejects_bad_input(kwargs, name):
    from metasys.composites import inverse_design

    args = {"k_target": 100.0, **kwargs}
    with pytest.raises(InvalidValueError, match=name):
        inverse_design(**args)


@pytest.mark.parametrize("args, name", [
    (["design", "--target", "-5"], "--target"),
    (["design", "--target", "100", "--objective", "J9"], "--objective"),
    (["design", "--target", "100", "--density-weight", "0.1"], "--density-weight"),
    (["design", "--target", "100", "--table", "missing.csv"], "--table"),
    (["design", "--target", "100", "--prior", "no-such-prior"], "--prior"),
    (["train-prior", "--out", "x", "--dataset", "missing.h5"], "dataset"),
])
def test_design_and_training_cli_bad_input_exit_2(tmp_path, monkeypatch, args, name):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and name in r.output, r.output


def test_training_resumed_equals_uninterrupted(tmp_path):
    from flax import serialization

    from metasys.composites.training import train_prior

    rng = np.random.default_rng(0)
    images = np.stack([rng.uniform(1, 400, (8, 16, 16)), rng.uniform(0.1, 0.4, (8, 16, 16)),
                       rng.uniform(1, 9, (8, 16, 16))], axis=1)
    unet = TINY.to_dict()
    opts = {"training": {"batch_size": 2, "checkpoint_every": 1, "log_every": 2, "warmup_steps": 1}, "unet": unet,
            "progress": False, "log": lambda *a: None}
    full = train_prior(images, tmp_path / "a", steps=4, seed=1, **opts)
    part = train_prior(images, tmp_path / "b", steps=4, seed=1, stop_after=2, **opts)
    assert part["training"]["steps_run"] == 2 and part["training"]["status"] == "running"
    resumed = train_prior(images, tmp_path / "b", steps=4, seed=1, **opts)
    assert resumed["training"]["steps_run"] == 4 and resumed["training"]["status"] == "completed"
    a = serialization.msgpack_restore((tmp_path / "a" / "weights.msgpack").read_bytes())
    b = serialization.msgpack_restore((tmp_path / "b" / "weights.msgpack").read_bytes())
    for x, y in zip(_leaves(a), _leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    assert resumed["training"]["final_loss"] == pytest.approx(full["training"]["final_loss"], rel=1e-5)
    with pytest.raises(InvalidValueError, match="out_dir"):
        train_prior(images, tmp_path / "b", steps=4, seed=2, **opts)


def _leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]
