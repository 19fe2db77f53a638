"""Denoising U-Net (flax.linen): four resolution levels, residual blocks, self-attention, sinusoidal time embedding.

Layout for 32 x 32 inputs and ``channel_mults = (1, 2, 2, 2)``: levels 32, 16, 8, 4; ``num_res_blocks``
residual blocks per level on the way down and ``num_res_blocks + 1`` on the way up (U-Net skips);
multi-head self-attention after the residual blocks of the levels listed in ``attention_levels``
(default: level 2, the 8 x 8 "intermediate" level) and in the middle block. ``padding="CIRCULAR"`` makes
the convolutions periodic (cells tile the plane) but costs 2-3x on CPU, so zero padding is the default.

``UNetConfig.dim`` is the number of spatial dimensions: 2 (images, the default) or 3 (voxel volumes, e.g. the 3D
composite prior): the same layers with 3 x 3 x 3 convolutions, stride-2 down-sampling and nearest up-sampling along
every spatial axis, GroupNorm and attention over all positions. ``dim=2`` builds exactly the former 2D network (same
parameter tree and outputs; ``to_dict`` omits ``dim`` when it is 2, so 2D model.json/prior.json files are unchanged).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import flax.linen as nn
import jax.numpy as jnp

from ..errors import InvalidValueError


@dataclass(frozen=True)
class UNetConfig:
    """Width/depth of the U-Net; ``to_dict``/``from_dict`` round-trip through model.json."""

    channels: int = 24
    channel_mults: tuple = (1, 2, 2, 2)
    num_res_blocks: int = 1
    attention_levels: tuple = (2,)
    num_heads: int = 4
    groups: int = 8
    image_size: int = 32
    padding: str = "SAME"
    dim: int = 2

    def __post_init__(self):
        object.__setattr__(self, "channel_mults", tuple(int(m) for m in self.channel_mults))
        object.__setattr__(self, "attention_levels", tuple(int(a) for a in self.attention_levels))
        if self.channels < 1 or self.num_res_blocks < 1 or self.num_heads < 1 or self.groups < 1:
            raise InvalidValueError(f"UNetConfig: channels, num_res_blocks, num_heads, groups must be >= 1, got {self}")
        if self.image_size % 2 ** (len(self.channel_mults) - 1):
            raise InvalidValueError(f"UNetConfig: image_size {self.image_size} is not divisible by "
                                    f"2**{len(self.channel_mults) - 1} (one halving per level)")
        if self.padding not in ("CIRCULAR", "SAME"):
            raise InvalidValueError(f"UNetConfig: padding must be 'CIRCULAR' or 'SAME', got {self.padding!r}")
        if isinstance(self.dim, bool) or self.dim not in (2, 3):
            raise InvalidValueError(f"UNetConfig: dim (spatial dimensions) must be 2 or 3, got {self.dim!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        d["attention_levels"] = list(self.attention_levels)
        if d["dim"] == 2:
            del d["dim"]  # 2D configs serialize as before the dim field existed
        return d

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def timestep_embedding(t, dim: int, max_period: float = 10000.0):
    """Sinusoidal embedding (B, dim) of integer time steps (B,)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim - 2 * half)))


def _groups(channels: int, groups: int) -> int:
    return math.gcd(channels, groups)


class ResBlock(nn.Module):
    features: int
    groups: int
    padding: str
    dim: int = 2

    @nn.compact
    def __call__(self, x, temb):
        k3, k1 = (3,) * self.dim, (1,) * self.dim
        h = nn.swish(nn.GroupNorm(num_groups=_groups(x.shape[-1], self.groups))(x))
        h = nn.Conv(self.features, k3, padding=self.padding)(h)
        h = h + nn.Dense(self.features)(nn.swish(temb)).reshape((h.shape[0],) + (1,) * self.dim + (self.features,))
        h = nn.swish(nn.GroupNorm(num_groups=_groups(self.features, self.groups))(h))
        h = nn.Conv(self.features, k3, padding=self.padding, kernel_init=nn.initializers.zeros)(h)
        if x.shape[-1] != self.features:
            x = nn.Conv(self.features, k1)(x)
        return x + h


class Attention(nn.Module):
    heads: int
    groups: int

    @nn.compact
    def __call__(self, x):
        b, c = x.shape[0], x.shape[-1]
        h = nn.GroupNorm(num_groups=_groups(c, self.groups))(x).reshape(b, -1, c)
        h = nn.MultiHeadDotProductAttention(num_heads=math.gcd(self.heads, c), out_kernel_init=nn.initializers.zeros)(h, h)
        return x + h.reshape(x.shape)


class UNet(nn.Module):
    """``eps_theta(x_t, t)``: input (B, H, W) or (B, H, W, C), integer time steps (B,); output (B, H, W) or
    (B, H, W, ``out_channels``). With ``config.dim == 3``: input (B, D, H, W) or (B, D, H, W, C), output alike."""

    config: UNetConfig
    out_channels: int = 1

    @nn.compact
    def __call__(self, x, t):
        cfg = self.config
        dim = cfg.dim
        k3 = (3,) * dim
        squeeze = x.ndim == dim + 1
        if squeeze:
            x = x[..., None]
        ch = cfg.channels
        temb = timestep_embedding(t, ch)
        temb = nn.Dense(4 * ch)(temb)
        temb = nn.Dense(4 * ch)(nn.gelu(temb))
        h = nn.Conv(ch, k3, padding=cfg.padding)(x)
        skips = [h]
        n_levels = len(cfg.channel_mults)
        for level, mult in enumerate(cfg.channel_mults):
            for _ in range(cfg.num_res_blocks):
                h = ResBlock(ch * mult, cfg.groups, cfg.padding, dim)(h, temb)
                if level in cfg.attention_levels:
                    h = Attention(cfg.num_heads, cfg.groups)(h)
                skips.append(h)
            if level < n_levels - 1:
                h = nn.Conv(h.shape[-1], k3, strides=(2,) * dim, padding=cfg.padding)(h)
                skips.append(h)
        h = ResBlock(h.shape[-1], cfg.groups, cfg.padding, dim)(h, temb)
        h = Attention(cfg.num_heads, cfg.groups)(h)
        h = ResBlock(h.shape[-1], cfg.groups, cfg.padding, dim)(h, temb)
        for level in reversed(range(n_levels)):
            for _ in range(cfg.num_res_blocks + 1):
                h = ResBlock(ch * cfg.channel_mults[level], cfg.groups, cfg.padding, dim)(
                    jnp.concatenate([h, skips.pop()], axis=-1), temb)
                if level in cfg.attention_levels:
                    h = Attention(cfg.num_heads, cfg.groups)(h)
            if level > 0:
                c = h.shape[-1]
                for axis in range(1, dim + 1):
                    h = jnp.repeat(h, 2, axis=axis)
                h = nn.Conv(c, k3, padding=cfg.padding)(h)
        h = nn.swish(nn.GroupNorm(num_groups=_groups(h.shape[-1], cfg.groups))(h))
        out = nn.Conv(self.out_channels, k3, padding=cfg.padding, kernel_init=nn.initializers.zeros)(h)
        return out[..., 0] if squeeze else out


@lru_cache(maxsize=8)
def _jitted_init(config: UNetConfig):
    import jax

    return jax.jit(UNet(config).init)


def init_params(config: UNetConfig, seed: int = 0):
    """Initial parameters of :class:`UNet` for ``config`` (the jitted initializer is cached per config)."""
    import jax

    size = config.image_size
    args = (jax.random.PRNGKey(seed), jnp.zeros((1,) + (size,) * config.dim), jnp.zeros((1,), jnp.int32))
    return _jitted_init(config)(*args)["params"]


def param_shapes(config: UNetConfig):
    """Parameter tree of ``config`` as ``jax.ShapeDtypeStruct`` leaves (no computation; a template for loading)."""
    import jax

    model = UNet(config)
    size = config.image_size
    args = (jax.random.PRNGKey(0), jnp.zeros((1,) + (size,) * config.dim), jnp.zeros((1,), jnp.int32))
    return jax.eval_shape(model.init, *args)["params"]


def count_params(params) -> int:
    import jax

    return int(sum(p.size for p in jax.tree_util.tree_leaves(params)))
