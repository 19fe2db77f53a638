"""A trained diffusion prior loaded from a model directory (see :mod:`metasys.diffusion.train`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import FileFormatError, InvalidTypeError, InvalidValueError
from .schedule import Schedule
from .unet import UNetConfig

SHIPPED_MODELS = {"default": "diffusion", "digits": "diffusion-digits"}
"""Names of the shipped priors (``DiffusionModel.named``, ``generate_cells(model="digits")``) -> folder in databases/."""


def _shipped_path(folder: str) -> Path:
    from importlib.resources import files

    try:
        installed = Path(str(files("metasys.databases") / folder))
    except ModuleNotFoundError:
        installed = None
    if installed is not None and (installed / "model.json").exists():
        return installed
    return Path(__file__).resolve().parents[2] / "databases" / folder


def default_model_path() -> Path:
    """Location of the shipped weights: ``databases/diffusion`` (installed data package first)."""
    return _shipped_path(SHIPPED_MODELS["default"])


def digits_model_path() -> Path:
    """Location of the shipped digit-style prior: ``databases/diffusion-digits`` (scikit-learn's handwritten digits)."""
    return _shipped_path(SHIPPED_MODELS["digits"])


class DiffusionModel:
    """U-Net parameters + schedule + preprocessing settings; samples and the deterministic DDIM generator.

    Open with :meth:`load` (a directory written by ``metasys train diffusion``, from a database or from any
    image stack: a *style prior*), :meth:`default` (the shipped weights, trained on the database),
    :meth:`digits` (the shipped digit-style prior), :meth:`open` (a directory or a shipped name) or build from
    parameters directly (tests). Every prior maps to cells the same way (``images_to_density`` /
    ``images_to_cells``: upsample to 50 x 50, positive = solid), so any of them serves every
    ``generate_cells`` target.
    """

    def __init__(self, config: UNetConfig, params, schedule: Schedule | None = None, preprocess: dict | None = None,
                 meta: dict | None = None, path=None):
        self.config = config
        self.params = params
        self.schedule = schedule or Schedule()
        self.preprocess = dict(preprocess or {})
        self.meta = dict(meta or {})
        self.path = None if path is None else Path(path)
        self._jit_cache = {}

    def __repr__(self) -> str:
        return f"DiffusionModel({str(self.path) if self.path else 'in memory'!r}, channels={self.config.channels})"

    @classmethod
    def load(cls, path) -> DiffusionModel:
        from flax import serialization

        from .train import FORMAT, FORMAT_VERSION, WEIGHTS
        from .unet import param_shapes

        path = Path(path)
        meta_path = path / "model.json"
        if not meta_path.exists():
            raise FileFormatError(f"{str(path)!r} is not a diffusion model directory (no model.json)")
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError as exc:
            raise FileFormatError(f"{str(meta_path)!r} is not valid JSON ({exc})") from None
        if meta.get("format") != FORMAT:
            raise FileFormatError(f"{str(meta_path)!r} is not a {FORMAT!r} file (format={meta.get('format')!r})")
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise FileFormatError(f"{str(meta_path)!r} has format_version {meta['format_version']}, newer than this "
                                  f"metasys reads (<= {FORMAT_VERSION})")
        config = UNetConfig.from_dict(meta["unet"])
        sched = meta["schedule"]
        schedule = Schedule(T=sched["T"], beta_start=sched["beta_start"], beta_end=sched["beta_end"])
        weights = path / meta.get("weights", WEIGHTS)
        if not weights.exists():
            raise FileFormatError(f"{str(weights)!r} is missing (the model directory is incomplete)")
        try:
            params = serialization.from_bytes(param_shapes(config), weights.read_bytes())
        except Exception as exc:
            raise FileFormatError(f"{str(weights)!r} does not hold weights of the U-Net in model.json ({exc})") from None
        return cls(config, params, schedule, meta.get("preprocess"), meta, path)

    @classmethod
    def default(cls) -> DiffusionModel:
        """The shipped model (``databases/diffusion``)."""
        path = default_model_path()
        if not (path / "model.json").exists():
            raise FileFormatError(f"the shipped diffusion model {str(path)!r} is missing; train one with "
                                  "`metasys train diffusion --out databases/diffusion` or pass model=...")
        return cls.load(path)

    @classmethod
    def digits(cls) -> DiffusionModel:
        """The shipped digit-style prior (``databases/diffusion-digits``, scikit-learn's handwritten digits, ink = void)."""
        path = digits_model_path()
        if not (path / "model.json").exists():
            raise FileFormatError(f"the shipped digit-style prior {str(path)!r} is missing; train one with "
                                  "`metasys train diffusion --images digits.npy --out databases/diffusion-digits` "
                                  "(databases/README.md)")
        return cls.load(path)

    @classmethod
    def open(cls, model) -> DiffusionModel:
        """A model directory, or the name of a shipped prior ("default", "digits") when no such directory exists."""
        if isinstance(model, bytes):
            model = model.decode()
        path = Path(model)
        if not (path / "model.json").exists() and str(model) in SHIPPED_MODELS:
            return cls.default() if str(model) == "default" else cls.digits()
        return cls.load(path)

    @property
    def source(self) -> dict:
        """What the prior was trained on: ``{"kind": "database" | "images" | "cells", "path", "fingerprint", ...}``."""
        if "source" in self.meta:
            return dict(self.meta["source"])
        if "database_fingerprint" in self.meta:
            return {"kind": "database", "path": self.meta.get("database_path"),
                    "fingerprint": self.meta["database_fingerprint"], "cells": self.meta.get("database_cells")}
        return {}

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def eps_fn(self, params=None):
        """``eps(x, t)`` closure over the parameters (for the DDIM functions)."""
        from .unet import UNet

        net = UNet(self.config)
        params = self.params if params is None else params
        return lambda x, t: net.apply({"params": params}, x, t)

    def noise(self, n: int, seed: int = 0) -> np.ndarray:
        """Standard normal noise inputs (n, size, size) float32 from ``numpy.random.default_rng(seed)``."""
        size = self.image_size
        return np.random.default_rng(seed).standard_normal((n, size, size)).astype(np.float32)

    def generate_images(self, noise, steps: int = 10, eta: float = 0.0, seed: int = 0) -> np.ndarray:
        """DDIM from noise inputs (n, size, size) to images in about [-1, 1] (deterministic for ``eta = 0``)."""
        import jax
        import jax.numpy as jnp

        from .schedule import ddim_sample

        w = jnp.asarray(noise, jnp.float32)
        if w.ndim != 3 or w.shape[1:] != (self.image_size,) * 2:
            raise InvalidValueError(f"noise: expected shape (n, {self.image_size}, {self.image_size}), got {tuple(w.shape)}")
        key = ("sample", int(steps), float(eta))
        if key not in self._jit_cache:
            self._jit_cache[key] = jax.jit(lambda p, x, k: ddim_sample(self.eps_fn(p), x, self.schedule, steps, eta, k))
        return np.asarray(self._jit_cache[key](self.params, w, jax.random.PRNGKey(seed)))

    def sample_images(self, n: int = 1, seed: int = 0, steps: int = 10, eta: float = 0.0) -> np.ndarray:
        """Unconditional samples (n, size, size) from seeded noise."""
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
            raise InvalidTypeError(f"n: expected an integer, got {n!r}")
        if n < 1:
            raise InvalidValueError(f"n must be >= 1, got {n}")
        return self.generate_images(self.noise(n, seed), steps=steps, eta=eta, seed=seed)

    def sample_cells(self, n: int = 1, seed: int = 0, steps: int = 10, eta: float = 0.0, shape=(50, 50)) -> np.ndarray:
        """Unconditional binary cells (n, 50, 50): samples upsampled and thresholded at 0."""
        from .preprocess import images_to_cells

        return images_to_cells(self.sample_images(n, seed, steps, eta), shape)
