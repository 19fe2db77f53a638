"""The unconditional diffusion prior over composite material images (the loss-guided paper, Sec. 6.2).

Images are (3, 64, 64) (E, nu, rho) per pixel in the normalized space [-1, 1]^3 of the material table
(`metasys.composites.normalize`); the network works channels-last, ``x`` of shape (B, 64, 64, 3). In 3D
(``UNetConfig.dim == 3``) the samples are (3, 32, 32, 32) voxel fields and ``x`` is (B, 32, 32, 32, 3): the same
U-Net with 3D convolutions (`DEFAULT_UNET_3D`), the same schedule, target and sampler.

- Schedule: linear ``beta`` from 1e-5 to 1e-2 over T = 1000 steps, rescaled to zero terminal SNR
  (Lin et al. 2024): ``alpha_bar[T-1] = 0`` (`metasys.diffusion.schedule.Schedule(zero_terminal_snr=True)`).
- Target: v-prediction, ``v = sqrt(abar) eps - sqrt(1 - abar) x_0`` (Salimans & Ho 2022).
- Sampling: DDIM with ``eta = 1`` over 100 "trailing" time steps, the predicted clean sample clipped to
  [-1, 1] at every step.
- Network: `CompositeUNet`, the residual blocks, self-attention and time embedding of
  `metasys.diffusion.unet` arranged for 3 input and 3 output channels (`UNetConfig` gives width/depth).

A prior directory holds ``prior.json`` (format, U-Net, schedule, training record) and ``weights.msgpack``
(EMA parameters); ``checkpoint/`` holds the resumable training state (`metasys.composites.training`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..diffusion.schedule import Schedule
from ..diffusion.unet import UNet, UNetConfig
from ..errors import FileFormatError

FORMAT = "metasys-composites-prior"
WEIGHTS = "weights.msgpack"
CHANNELS = 3
SCHEDULE = Schedule(T=1000, beta_start=1e-5, beta_end=1e-2, zero_terminal_snr=True)
"""The paper's schedule: linear 1e-5 .. 1e-2, zero-terminal-SNR rescaled."""
DEFAULT_UNET = UNetConfig(channels=8, channel_mults=(1, 2, 4, 8), num_res_blocks=1, attention_levels=(), num_heads=4,
                          groups=8, image_size=64)
"""Small U-Net for 2-core training (625k parameters): levels 64, 32, 16, 8 with 8, 16, 32, 64 channels, self-attention
in the middle block (8 x 8). Measured on one shared core, batch 16: 0.44 s per training step (32 channels at three
levels: 2.3 s)."""

DEFAULT_UNET_3D = UNetConfig(channels=8, channel_mults=(1, 2, 4), num_res_blocks=1, attention_levels=(), num_heads=4,
                             groups=8, image_size=32, dim=3)
"""Small 3D U-Net for 2-core training: levels 32^3, 16^3, 8^3 with 8, 16, 32 channels (two down-sampling steps as the
paper's), self-attention in the middle block (8^3 positions)."""


def default_unet(dim: int = 2) -> UNetConfig:
    """The default U-Net of the ``dim``-dimensional prior (`DEFAULT_UNET` or `DEFAULT_UNET_3D`)."""
    return DEFAULT_UNET_3D if dim == 3 else DEFAULT_UNET


def CompositeUNet(config: UNetConfig):  # noqa: N802 (a module constructor, named like the class it builds)
    """``v_theta(x_t, t)``: x (B, H, W, 3) (or (B, D, H, W, 3) in 3D) in [-1, 1]-ish, integer time steps t (B,);
    output shaped like x.

    `metasys.diffusion.unet.UNet` with 3 output channels (same layers, so the same parameter tree).
    """
    return UNet(config, out_channels=CHANNELS)


def init_params(config: UNetConfig = DEFAULT_UNET, seed: int = 0):
    """Initial parameters of `CompositeUNet` for ``config`` (PRNG key from ``seed``)."""
    grid = (config.image_size,) * config.dim
    return _init(config)(jax.random.PRNGKey(seed), jnp.zeros((1, *grid, CHANNELS)), jnp.zeros((1,), jnp.int32))["params"]


@lru_cache(maxsize=8)
def _init(config: UNetConfig):
    return jax.jit(CompositeUNet(config).init)


@dataclass(frozen=True)
class Prior:
    """A trained (or freshly initialized) prior: U-Net ``config``, EMA ``params``, ``schedule``, ``meta`` (prior.json)."""

    config: UNetConfig
    params: dict
    schedule: Schedule = SCHEDULE
    meta: dict | None = None

    def __hash__(self):
        return id(self)

    @property
    def dim(self) -> int:
        """Spatial dimensions of the samples: 2 (64 x 64 images) or 3 (32^3 voxel fields)."""
        return self.config.dim

    @property
    def grid(self) -> tuple:
        """Spatial shape of one sample, e.g. (64, 64) or (32, 32, 32)."""
        return (self.config.image_size,) * self.config.dim

    def velocity(self, x, t):
        """v-prediction (B, *grid, 3) for x (B, *grid, 3) and time steps t (B,)."""
        return _apply(self.config)(self.params, x, t)

    def predict_x0(self, x, t):
        """Predicted clean sample (B, *grid, 3) at time steps t (B,) (``sqrt(abar) x - sqrt(1 - abar) v``)."""
        ab = jnp.asarray(self.schedule.alpha_bar, jnp.float32)[t].reshape((-1,) + (1,) * (x.ndim - 1))
        return jnp.sqrt(ab) * x - jnp.sqrt(1.0 - ab) * self.velocity(x, t)


@lru_cache(maxsize=8)
def _apply(config: UNetConfig):
    model = CompositeUNet(config)
    return lambda params, x, t: model.apply({"params": params}, x, t)


def default_prior_path(dim: int = 2) -> Path:
    """The shipped prior: databases/composites-prior/ (``dim=3``: databases/composites3d-prior/) of the source tree
    (or the installed data package)."""
    from .materials import default_table_path

    return default_table_path().parent.parent / ("composites3d-prior" if dim == 3 else "composites-prior")


def untrained_prior(config: UNetConfig | dict | None = None, seed: int = 0, schedule: Schedule = SCHEDULE) -> Prior:
    """A prior with freshly initialized weights (tests, smoke runs)."""
    cfg = config if isinstance(config, UNetConfig) else UNetConfig.from_dict(config or DEFAULT_UNET.to_dict())
    return Prior(cfg, init_params(cfg, seed), schedule, {"format": FORMAT, "trained": False})


def load_prior(path=None, dim: int = 2) -> Prior:
    """Read a prior directory (default: the shipped ``databases/composites-prior``, or with ``dim=3``
    ``databases/composites3d-prior``)."""
    from flax import serialization

    path = default_prior_path(dim) if path is None else Path(path)
    meta_path, weights = path / "prior.json", path / WEIGHTS
    if not meta_path.exists() or not weights.exists():
        raise FileFormatError(f"prior: {str(path)!r} holds no trained prior (prior.json and {WEIGHTS}); "
                              "train one with `metasys composites train-prior --out DIR`")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise FileFormatError(f"prior: {str(meta_path)!r} is not a {FORMAT} file")
    config = UNetConfig.from_dict(meta["unet"])
    template = jax.eval_shape(lambda: init_params(config, 0))
    template = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), template)
    params = serialization.from_bytes(template, weights.read_bytes())
    return Prior(config, jax.tree_util.tree_map(jnp.asarray, params), Schedule.from_dict(meta["schedule"]), meta)


def as_prior(prior, dim: int = 2) -> Prior:
    """A `Prior` from a Prior, a directory path, or None (the shipped one of dimension ``dim``)."""
    return prior if isinstance(prior, Prior) else load_prior(prior, dim)
