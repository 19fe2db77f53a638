"""Preprocessing of binary cells into diffusion training images (paper Sec. 3.1.1) and back.

binary (N, 50, 50) -> + Gaussian noise (std 0.01) -> Gaussian filter (sigma 1.2 pixels, periodic)
-> rescale [0, 1] to [-1, 1] -> resize to 32 x 32 (linear, antialiased). Row 0 stays at the bottom.

Image stacks of any style (a ``.npy`` (N, H, W) or a folder of PNGs, :class:`ImageStack`) go through the same
steps (:func:`preprocess_images`): values are first brought to [0, 1] (1 = solid, the phase that
``images_to_density`` maps to density 1), images smaller than 32 x 32 are first upsampled to 32 x 32 (so that
the filter's 1.2 pixels are pixels of the training resolution), and the filter does not wrap around.
"""

from __future__ import annotations

import numpy as np

from ..errors import FileFormatError, InvalidCellError, InvalidValueError, describe

DEFAULT_PREPROCESS = {"noise_std": 0.01, "sigma": 1.2, "size": 32, "filter_mode": "wrap"}
IMAGE_PREPROCESS = {"noise_std": 0.01, "sigma": 1.2, "size": 32, "filter_mode": "nearest", "invert": False}


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


# ---------------------------------------------------------------------------------------------------------
# image stacks (style priors from any dataset)


def _fingerprint_images(images: np.ndarray) -> str:
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    h.update(repr(images.shape).encode())
    h.update(np.ascontiguousarray(images, np.float32).tobytes())
    return h.hexdigest()


def _read_png(path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, np.float64) / (65535.0 if img.mode.startswith("I;16") else max(1.0, np.asarray(img).max()))
            elif img.mode == "F":
                arr = np.asarray(img, np.float64)
            else:
                if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                    img = img.convert("RGBA")
                    background = Image.new("RGBA", img.size, (255, 255, 255, 255))
                    img = Image.alpha_composite(background, img)
                arr = np.asarray(img.convert("L"), np.float64) / 255.0
    except Exception as exc:
        raise FileFormatError(f"{str(path)!r} could not be read as a PNG image ({exc})") from None
    return arr[::-1]                                           # image row 0 is the top; metasys row 0 the bottom


class ImageStack:
    """A stack of grayscale training images (N, H, W), float32 in [0, 1], row 0 at the bottom.

    ``ImageStack.load(path)`` reads a ``.npy`` array (N, H, W) (taken as metasys arrays: row 0 at the bottom) or
    a folder of ``*.png`` files (sorted by name; RGB converted to grayscale, transparent pixels on white;
    image row 0 is the top, so the rows are flipped). Values: bool and arrays within [0, 1] are kept,
    PNGs are divided by their bit depth, other arrays are rescaled linearly from the stack's [min, max] to
    [0, 1]. 1 is the solid (stiff) phase; pass ``invert=True`` to :func:`preprocess_images` for stacks drawn the
    other way round (e.g. white strokes that should be void). Bad stacks raise ``FileFormatError`` /
    ``InvalidValueError`` naming the path.
    """

    def __init__(self, images, path=None, name: str = "images"):
        self.path = None if path is None else str(path)
        where = repr(self.path) if self.path is not None else name
        arr = np.asarray(images)
        if arr.dtype == object or not (arr.dtype == bool or np.issubdtype(arr.dtype, np.number)):
            raise FileFormatError(f"{where}: expected a numeric image stack (N, H, W), got {describe(images)}")
        if arr.ndim != 3:
            raise FileFormatError(f"{where}: expected an image stack of shape (N, H, W), got shape {arr.shape}")
        if len(arr) < 2:
            raise InvalidValueError(f"{where}: at least 2 images are needed to train, got {len(arr)}")
        if min(arr.shape[1:]) < 2:
            raise FileFormatError(f"{where}: images must be at least 2 x 2 pixels, got {arr.shape[1]} x {arr.shape[2]}")
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            raise InvalidValueError(f"{where}: the image stack holds {bad} NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            if hi <= lo:
                raise InvalidValueError(f"{where}: every pixel of the stack has the value {lo}; nothing to learn")
            arr = (arr - lo) / (hi - lo)
        self.images = arr.astype(np.float32)
        self.fingerprint = _fingerprint_images(self.images)

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return f"ImageStack({self.path or 'in memory'!r}, {len(self)} images {self.images.shape[1]}x{self.images.shape[2]})"

    @classmethod
    def load(cls, path) -> ImageStack:
        from pathlib import Path

        p = Path(path)
        if not p.exists():
            raise FileFormatError(f"{str(p)!r} does not exist (expected a .npy image stack or a folder of PNGs)")
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() == ".png" and f.is_file())
            if not files:
                raise FileFormatError(f"{str(p)!r} holds no .png files (expected a folder of PNG images)")
            images = [_read_png(f) for f in files]
            first = images[0].shape
            for f, a in zip(files, images):
                if a.shape != first:
                    raise FileFormatError(f"{str(p)!r}: the PNGs differ in size ({str(f)!r} is {a.shape[1]} x {a.shape[0]} "
                                          f"pixels, {str(files[0])!r} is {first[1]} x {first[0]})")
            return cls(np.stack(images), p)
        if p.suffix.lower() != ".npy":
            raise FileFormatError(f"{str(p)!r}: expected a .npy file (N, H, W) or a folder of PNG images")
        try:
            arr = np.load(p, allow_pickle=False)
        except Exception as exc:
            raise FileFormatError(f"{str(p)!r} could not be read as a .npy array ({exc})") from None
        if not isinstance(arr, np.ndarray):
            raise FileFormatError(f"{str(p)!r}: expected one array (N, H, W), got {type(arr).__name__}")
        return cls(arr, p)


def preprocess_images(images, seed: int = 0, noise_std: float = 0.01, sigma: float = 1.2, size: int = 32,
                      filter_mode: str = "nearest", invert: bool = False) -> np.ndarray:
    """Image stack (N, H, W) in [0, 1] (or an :class:`ImageStack`) -> float32 (N, size, size) in [-1, 1].

    The paper's steps (:func:`preprocess_cells`: noise, Gaussian filter, [-1, 1], resize), after bringing images
    smaller than ``size`` up to ``size`` x ``size`` (linear) so that ``sigma`` counts training pixels;
    ``invert`` maps v -> 1 - v first.
    """
    stack = images if isinstance(images, ImageStack) else ImageStack(images)
    arr = stack.images
    if invert:
        arr = 1.0 - arr
    if min(arr.shape[1:]) < size:
        arr = np.clip(np.asarray(resize(arr, size)), 0.0, 1.0).astype(np.float32)
    return preprocess_cells(arr, seed=seed, noise_std=noise_std, sigma=sigma, size=size, filter_mode=filter_mode)
