"""Preprocessing of binary cells into diffusion training images (paper Sec. 3.1.1) and back.

binary (N, 50, 50) -> + Gaussian noise (std 0.01) -> Gaussian filter (sigma 1.2 pixels, periodic)
-> rescale [0, 1] to [-1, 1] -> resize to 32 x 32 (linear, antialiased). Row 0 stays at the bottom.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidCellError, describe

DEFAULT_PREPROCESS = {"noise_std": 0.01, "sigma": 1.2, "size": 32, "filter_mode": "wrap"}


def _as_cells(cells) -> np.ndarray:
    arr = np.asarray(cells)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.dtype == object or not (arr.dtype == bool or np.issubdtype(arr.dtype, np.number)):
        raise InvalidCellError(f"cells: expected a numeric array (N, ny, nx), got {describe(cells)}")
    return arr.astype(np.float32)


def resize(images, size: int | tuple[int, int]):
    """Resize images (N, h, w) (NumPy or JAX) with linear interpolation (antialiased when shrinking)."""
    import jax
    import jax.numpy as jnp

    size = (size, size) if np.isscalar(size) else tuple(size)
    images = jnp.asarray(images)
    return jax.image.resize(images, images.shape[:-2] + size, method="linear", antialias=True)


def preprocess_cells(cells, seed: int = 0, noise_std: float = 0.01, sigma: float = 1.2, size: int = 32,
                     filter_mode: str = "wrap", chunk: int = 8192) -> np.ndarray:
    """Binary cells (N, ny, nx) -> float32 images (N, size, size) in [-1, 1] (deterministic in ``seed``)."""
    from scipy.ndimage import gaussian_filter

    arr = _as_cells(cells)
    rng = np.random.default_rng(seed)
    out = np.empty((len(arr), size, size), np.float32)
    for s in range(0, len(arr), chunk):
        block = arr[s:s + chunk] + noise_std * rng.standard_normal(arr[s:s + chunk].shape).astype(np.float32)
        block = gaussian_filter(block, sigma=(0, sigma, sigma), mode=filter_mode)
        out[s:s + chunk] = np.clip(np.asarray(resize(2.0 * block - 1.0, size)), -1.0, 1.0)
    return out


def images_to_density(images, shape=(50, 50), gamma: float | None = None):
    """Images (N, h, w) in [-1, 1] -> upsampled (N, *shape); with ``gamma`` also projected (Eq. 24) to [0, 1]."""
    import jax.numpy as jnp

    x = resize(images, shape)
    return x if gamma is None else 0.5 * (jnp.tanh(gamma * x) + 1.0)


def images_to_cells(images, shape=(50, 50)) -> np.ndarray:
    """Binary cells (N, *shape): upsample and threshold at 0 (the limit of the projection as gamma grows)."""
    return np.asarray(images_to_density(images, shape)) > 0.0
