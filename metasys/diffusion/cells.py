"""The pieces shared by the diffusion designers (noise-input optimization and loss-guided sampling): the result
type `GeneratedCells`, the binarization measure B(tau), stiffness targets and the quarter-mirror map."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidTypeError, InvalidValueError, describe
from ..material import Material


@dataclass
class GeneratedCells:
    """Result of :func:`generate_cells`.

    Attributes
    ----------
    cells : bool (n, 50, 50)  final binary cells (row 0 at the bottom)
    stiffness : (n, 3, 3)     homogenized C of ``cells`` (``metasys.homogenize``, 50x50, given material)
    loss : (n,)               loss of the binary cells (their ``stiffness``)
    binarization : (n,)       B(tau = 1e-3): share of projected densities <= tau or >= 1 - tau (last gamma)
    relaxed_loss : (n,)       loss of the projected grayscale design at the last gamma
    density : (n, 50, 50)     projected densities at the last gamma
    noise : (n, 32, 32)       optimized noise inputs (noise mode) / initial noise (guided mode)
    history : list of dict    per stage: gamma, iterations (n,), loss (initial, then after each iteration), time_s
    wall_time_s : float
    responses : tuple of (n, ...) arrays   with ``response=``: the response outputs of the final binary cells
    flips : int (n,)          pixel flips made by the discrete polish (``polish=``; zeros without it)
    thresholded_loss : (n,)   loss of the thresholded cells before the polish
    """

    cells: np.ndarray
    stiffness: np.ndarray
    loss: np.ndarray
    binarization: np.ndarray
    relaxed_loss: np.ndarray
    density: np.ndarray
    noise: np.ndarray
    history: list = field(default_factory=list)
    target: np.ndarray | None = None
    method: str = "noise"
    wall_time_s: float = 0.0
    material: Material | None = None
    responses: tuple | None = None
    flips: np.ndarray | None = None
    thresholded_loss: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.cells)

    @property
    def properties(self) -> np.ndarray:
        """(n, 4) property vectors (C11, C12, C22, C33) of the binary cells."""
        c = self.stiffness
        return np.stack([c[:, 0, 0], c[:, 0, 1], c[:, 1, 1], c[:, 2, 2]], axis=1)


def binarization(density, tau: float = 1e-3) -> np.ndarray:
    """B(tau) (paper Eq. 25) per sample of densities (n, ...) or for one array (...)."""
    d = np.asarray(density, dtype=float)
    ok = (d <= tau) | (d >= 1.0 - tau)
    return ok.reshape(len(d), -1).mean(axis=1) if d.ndim == 3 else float(ok.mean())


def p_to_matrix(p) -> np.ndarray:
    """Orthotropic stiffness (..., 3, 3) from property vectors (..., 4) = (C11, C12, C22, C33)."""
    p = np.asarray(p, dtype=float)
    c = np.zeros(p.shape[:-1] + (3, 3))
    c[..., 0, 0], c[..., 0, 1], c[..., 1, 0], c[..., 1, 1], c[..., 2, 2] = p[..., 0], p[..., 1], p[..., 1], p[..., 2], p[..., 3]
    return c


def as_targets(target, n: int) -> np.ndarray:
    """Targets (n, 3, 3) from a C (3, 3), a property vector (4,), or per-sample (n, 3, 3) / (n, 4)."""
    if target is None:
        raise InvalidValueError("target: a stiffness (3, 3) or property vector (4,) is needed unless loss= is given")
    try:
        arr = np.asarray(target, dtype=float)
    except (TypeError, ValueError):
        raise InvalidTypeError(f"target: expected a (3, 3) stiffness or a (4,) property vector, got {describe(target)}") from None
    if arr.shape[-1:] == (4,) and arr.ndim in (1, 2):
        arr = p_to_matrix(arr)
    if arr.shape == (3, 3):
        arr = np.broadcast_to(arr, (n, 3, 3))
    if arr.shape != (n, 3, 3):
        raise InvalidValueError(f"target: expected a (3, 3) stiffness, a (4,) property vector or one per sample "
                                f"((n, 3, 3) / (n, 4) with n = {n}), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InvalidValueError("target: must be finite")
    return np.ascontiguousarray(arr)


def mirror_quarter_jax(x):
    """Doubly mirror-symmetric fields (n, 2a, 2b) from the lower-left quarter of (n, 2a, 2b) (even sizes)."""
    import jax.numpy as jnp

    a, b = x.shape[-2] // 2, x.shape[-1] // 2
    q = x[..., :a, :b]
    half = jnp.concatenate([q, q[..., ::-1, :]], axis=-2)
    return jnp.concatenate([half, half[..., :, ::-1]], axis=-1)
