"""The 3D composite prior (issue 23): the U-Net's spatial dimension, 3D training, guided sampling and inverse design.

The 3D models here are tiny untrained (or few-step trained) U-Nets on 8^3 voxel fields built in the test (the sampler,
the FE model and the backprojection take any cube); the 2D bit-identity check reads the shipped 2D priors.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metasys.composites.guided import guided_sample
from metasys.composites.prior import DEFAULT_UNET_3D, Prior, load_prior, untrained_prior
from metasys.diffusion.unet import UNet, UNetConfig, timestep_embedding
from metasys.errors import InvalidValueError

TINY3D = UNetConfig(channels=4, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(), num_heads=2, groups=4,
                    image_size=8, dim=3)
"""8^3 voxels: the network and the voxel FE solves stay cheap."""


@pytest.fixture(scope="module")
def prior3d():
    return untrained_prior(TINY3D, seed=0)


# ----------------------------------------------------------------------------- the U-Net's dimension
def _groups(channels, groups):
    return math.gcd(channels, groups)


class _RefResBlock(nn.Module):
    features: int
    groups: int
    padding: str

    @nn.compact
    def __call__(self, x, temb):
        h = nn.swish(nn.GroupNorm(num_groups=_groups(x.shape[-1], self.groups))(x))
        h = nn.Conv(self.features, (3, 3), padding=self.padding)(h)
        h = h + nn.Dense(self.features)(nn.swish(temb))[:, None, None, :]
        h = nn.swish(nn.GroupNorm(num_groups=_groups(self.features, self.groups))(h))
        h = nn.Conv(self.features, (3, 3), padding=self.padding, kernel_init=nn.initializers.zeros)(h)
        if x.shape[-1] != self.features:
            x = nn.Conv(self.features, (1, 1))(x)
        return x + h


class _RefAttention(nn.Module):
    heads: int
    groups: int

    @nn.compact
    def __call__(self, x):
        b, hh, ww, c = x.shape
        h = nn.GroupNorm(num_groups=_groups(c, self.groups))(x).reshape(b, hh * ww, c)
        h = nn.MultiHeadDotProductAttention(num_heads=math.gcd(self.heads, c), out_kernel_init=nn.initializers.zeros)(h, h)
        return x + h.reshape(b, hh, ww, c)


class _RefUNet2D(nn.Module):
    """The 2D U-Net as it was before the ``dim`` parameter (metasys 5c889c5^), verbatim, as the reference."""

    config: UNetConfig
    out_channels: int = 1

    @nn.compact
    def __call__(self, x, t):
        cfg = self.config
        squeeze = x.ndim == 3
        if squeeze:
            x = x[..., None]
        ch = cfg.channels
        temb = timestep_embedding(t, ch)
        temb = nn.Dense(4 * ch)(temb)
        temb = nn.Dense(4 * ch)(nn.gelu(temb))
        h = nn.Conv(ch, (3, 3), padding=cfg.padding)(x)
        skips = [h]
        n_levels = len(cfg.channel_mults)
        for level, mult in enumerate(cfg.channel_mults):
            for _ in range(cfg.num_res_blocks):
                h = _RefResBlock(ch * mult, cfg.groups, cfg.padding, name=None)(h, temb)
                if level in cfg.attention_levels:
                    h = _RefAttention(cfg.num_heads, cfg.groups)(h)
                skips.append(h)
            if level < n_levels - 1:
                h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2), padding=cfg.padding)(h)
                skips.append(h)
        h = _RefResBlock(h.shape[-1], cfg.groups, cfg.padding)(h, temb)
        h = _RefAttention(cfg.num_heads, cfg.groups)(h)
        h = _RefResBlock(h.shape[-1], cfg.groups, cfg.padding)(h, temb)
        for level in reversed(range(n_levels)):
            for _ in range(cfg.num_res_blocks + 1):
                h = _RefResBlock(ch * cfg.channel_mults[level], cfg.groups, cfg.padding)(
                    jnp.concatenate([h, skips.pop()], axis=-1), temb)
                if level in cfg.attention_levels:
                    h = _RefAttention(cfg.num_heads, cfg.groups)(h)
            if level > 0:
                b, hh, ww, c = h.shape
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
                h = nn.Conv(c, (3, 3), padding=cfg.padding)(h)
        h = nn.swish(nn.GroupNorm(num_groups=_groups(h.shape[-1], cfg.groups))(h))
        out = nn.Conv(self.out_channels, (3, 3), padding=cfg.padding, kernel_init=nn.initializers.zeros)(h)
        return out[..., 0] if squeeze else out


def _rename(tree):
    """The reference's module names (``_RefResBlock_0``) -> the library's (``ResBlock_0``)."""
    if not isinstance(tree, dict):
        return tree
    return {k.replace("_Ref", "").replace("UNet2D", "UNet"): _rename(v) for k, v in tree.items()}


def _ref_params(params):
    names = {"ResBlock": "_RefResBlock", "Attention": "_RefAttention"}

    def back(tree):
        if not isinstance(tree, dict):
            return tree
        out = {}
        for k, v in tree.items():
            base = k.rsplit("_", 1)[0]
            out[names[base] + k[len(base):] if base in names else k] = back(v)
        return out

    return back(params)


def test_dim2_unet_gives_bit_identical_outputs_with_the_shipped_priors():
    from metasys.diffusion.model import DiffusionModel

    comp = load_prior()
    assert comp.dim == 2 and "dim" not in comp.meta["unet"]
    cell = DiffusionModel.load(__import__("pathlib").Path(__file__).parents[1] / "databases" / "diffusion")
    rng = np.random.default_rng(0)
    cases = [(comp.config, comp.params, 3, rng.standard_normal((1, 64, 64, 3))),
             (cell.config, cell.params, 1, rng.standard_normal((1, cell.image_size, cell.image_size)))]
    t = jnp.asarray([500], jnp.int32)
    for config, params, out_channels, x in cases:
        x = jnp.asarray(x, jnp.float32)
        new = UNet(config, out_channels).apply({"params": params}, x, t)
        ref = _RefUNet2D(config, out_channels).apply({"params": _ref_params(params)}, x, t)
        assert new.shape == x.shape[:3] + ((out_channels,) if out_channels > 1 else ())
        np.testing.assert_array_equal(np.asarray(new), np.asarray(ref))
    # the velocity path of the prior object is the same network
    np.testing.assert_array_equal(np.asarray(comp.velocity(jnp.asarray(cases[0][3], jnp.float32), t)),
                                  np.asarray(UNet(comp.config, 3).apply({"params": comp.params},
                                                                        jnp.asarray(cases[0][3], jnp.float32), t)))


def test_3d_unet_shapes_and_config_round_trip(prior3d):
    x = jnp.ones((2, 8, 8, 8, 3))
    t = jnp.asarray([0, 999], jnp.int32)
    kernel = prior3d.params["Conv_0"]["kernel"]
    assert kernel.shape == (3, 3, 3, 3, TINY3D.channels)
    assert prior3d.velocity(x, t).shape == (2, 8, 8, 8, 3) and prior3d.grid == (8, 8, 8)
    # one channel: (B, D, H, W) in and out, as the 2D cell network's (B, H, W)
    shapes = jax.eval_shape(UNet(TINY3D).init, jax.random.PRNGKey(0), jnp.ones((2, 8, 8, 8)), t)
    out = jax.eval_shape(lambda p: UNet(TINY3D).apply(p, jnp.ones((2, 8, 8, 8)), t), shapes)
    assert out.shape == (2, 8, 8, 8)
    assert TINY3D.to_dict()["dim"] == 3 and UNetConfig.from_dict(TINY3D.to_dict()) == TINY3D
    two = UNetConfig(channels=4, channel_mults=(1, 2), image_size=8)
    assert "dim" not in two.to_dict() and UNetConfig.from_dict(two.to_dict()).dim == 2
    assert DEFAULT_UNET_3D.dim == 3 and DEFAULT_UNET_3D.image_size == 32
    with pytest.raises(InvalidValueError, match="dim"):
        UNetConfig(dim=1)


# ----------------------------------------------------------------------------- training
def _tiny_voxel_dataset(n=6, side=8, seed=0):
    """Two-phase voxel fields: a cubic particle of one material in a matrix of another (physical E, nu, rho)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, side, side, side))
    for i in range(n):
        m = [rng.uniform(1, 400), rng.uniform(0.1, 0.4), rng.uniform(1, 9)]
        p = [rng.uniform(1, 400), rng.uniform(0.1, 0.4), rng.uniform(1, 9)]
        mask = np.zeros((side,) * 3, bool)
        a = rng.integers(1, side // 2, 3)
        mask[a[0]:a[0] + 3, a[1]:a[1] + 3, a[2]:a[2] + 3] = True
        for c in range(3):
            out[i, c] = np.where(mask, p[c], m[c])
    return out


def _fixed_v_loss(prior, images):
    """v-prediction loss of ``prior`` on the normalized ``images`` at fixed time steps and noise (a fair comparison)."""
    from metasys.composites.training import normalized_images
    from metasys.diffusion.schedule import q_sample, v_target

    x0 = jnp.asarray(normalized_images(images))
    x0 = jnp.concatenate([x0] * 4)
    t = jnp.asarray(np.linspace(50, 950, len(x0)).astype(np.int32))
    eps = jax.random.normal(jax.random.PRNGKey(7), x0.shape)
    ab = jnp.asarray(prior.schedule.alpha_bar, jnp.float32)[t].reshape(-1, 1, 1, 1, 1)
    xt = q_sample(prior.schedule, x0, t, eps)
    return float(jnp.mean((prior.velocity(xt, t) - v_target(x0, eps, ab)) ** 2))


def test_3d_training_reduces_the_loss_and_writes_a_3d_prior(tmp_path):
    from metasys.composites.training import train_prior

    images = _tiny_voxel_dataset()
    before = _fixed_v_loss(untrained_prior(TINY3D, seed=0), images)
    record = train_prior(images, tmp_path / "p", steps=30, seed=0, unet=TINY3D.to_dict(), progress=False,
                         log=lambda *a: None, training={"batch_size": 4, "learning_rate": 3e-3, "warmup_steps": 2,
                                                        "ema_decay": 0.5, "log_every": 5, "checkpoint_every": 30})
    assert record["unet"]["dim"] == 3 and record["training"]["steps_run"] == 30
    loaded = load_prior(tmp_path / "p")
    assert loaded.dim == 3 and loaded.grid == (8, 8, 8)
    after = _fixed_v_loss(loaded, images)
    assert after < 0.9 * before, (before, after)  # measured 0.457 -> 0.389


def test_3d_training_rejects_uneven_voxel_fields(tmp_path):
    from metasys.composites.training import train_prior

    with pytest.raises(InvalidValueError, match="images"):
        train_prior(np.ones((4, 3, 8, 8, 4)), tmp_path / "x", steps=1, progress=False, log=lambda *a: None)


# ----------------------------------------------------------------------------- guided sampling, inverse design
def test_guided_sampling_in_3d_returns_voxel_fields_in_the_box(prior3d):
    g = guided_sample(prior3d, 60.0, 2, seed=1, steps=3, batch_size=2)
    assert g.images.shape == (2, 3, 8, 8, 8)
    assert g.images.min() >= -1.0 and g.images.max() <= 1.0
    assert g.k_history.shape == (2, 3) and np.all(np.isfinite(g.k_history)) and np.all(g.k_history > 0)
    free = guided_sample(prior3d, None, 1, seed=1, steps=3, batch_size=1)
    assert free.images.shape == (1, 3, 8, 8, 8) and np.all(np.isnan(free.k_history))


def test_objective_gradient_in_3d_matches_finite_differences():
    from metasys.composites.guided import objective_fn

    rng = np.random.default_rng(2)
    x0 = jnp.asarray(rng.uniform(-0.6, 0.6, (1, 4, 4, 4, 3)))
    obj = objective_fn(1.0, 1.0, dim=3)
    (j, k), g = jax.value_and_grad(obj, has_aux=True)(x0, 80.0, 1e-3)
    d = jnp.asarray(rng.standard_normal(x0.shape)) * 1e-3
    jp, _ = obj(x0 + d, 80.0, 1e-3)
    jm, _ = obj(x0 - d, 80.0, 1e-3)
    assert float(jnp.sum(g * d)) == pytest.approx(float(jp - jm) / 2, rel=1e-3)  # float32 images


def test_inverse_design_dim3_end_to_end(prior3d):
    from metasys.composites import inverse_design

    r = inverse_design(80.0, n=1, seed=0, prior=prior3d, steps=3, batch_size=1, n_theta=1, dim=3)
    assert r.images.shape == (1, 3, 8, 8, 8) and r.info["dim"] == 3
    assert r.matrix.shape == (1, 3) and r.particle.shape == (1, 3)
    assert r.k_sample.shape == (1,) and np.isfinite(r.k_sample[0]) and r.k_sample[0] > 0
    assert r.eps_r.shape == (1,) and 0.0 <= r.frac(0.05) <= 1.0 and 0.0 <= r.cov(0.05) <= 1.0


@pytest.mark.parametrize("kwargs, name", [({"dim": 4}, "dim"), ({"dim": 3, "method": "bayesian"}, "method"),
                                          ({"dim": 3, "n_theta": 0}, "n_theta"), ({"dim": 2, "prior": "3d"}, "prior"),
                                          ({"dim": 3, "prior": "2d"}, "prior")])
def test_inverse_design_dim3_rejects_bad_input(prior3d, kwargs, name):
    from metasys.composites import inverse_design

    args = {"k_target": 100.0, "n": 1, **kwargs}
    if args.get("prior") == "3d":
        args["prior"] = prior3d
    elif args.get("prior") == "2d":  # the dimension is checked before any weight is used
        args["prior"] = Prior(UNetConfig(channels=4, channel_mults=(1, 2), attention_levels=(), groups=4, image_size=8),
                              {})
    with pytest.raises(InvalidValueError, match=name):
        inverse_design(**args)


def test_guided_sample_rejects_bad_steps(prior3d):
    with pytest.raises(InvalidValueError, match="steps"):
        guided_sample(prior3d, 50.0, 1, steps=1)


@pytest.mark.parametrize("args, name", [(["--dim", "4"], "--dim"), (["--dim", "3", "--method", "bayesian"], "--method"),
                                        (["--dim", "3", "--n-theta", "0"], "--n-theta")])
def test_design_cli_3d_bad_input_exits_2(tmp_path, monkeypatch, args, name):
    from typer.testing import CliRunner

    from metasys.composites.cli import app

    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["design", "--target", "100", *args])
    assert r.exit_code == 2 and name in r.output, r.output


def test_bulk_modulus_cli_takes_a_voxel_field(tmp_path):
    from typer.testing import CliRunner

    from metasys.composites.cli import app

    field = np.stack([np.full((4, 4, 4), 10.0), np.full((4, 4, 4), 0.25), np.ones((4, 4, 4))])
    np.save(tmp_path / "v.npy", field)
    r = CliRunner().invoke(app, ["bulk-modulus", str(tmp_path / "v.npy")])
    assert r.exit_code == 0 and "K = 6.66667" in r.output, r.output  # E / (3 (1 - 2 nu))
