"""Metamaterial families: for now, the property gradation of the VAE paper (Eq. 7).

A gradation is a curve ``t -> p(t)`` in the property space (C11, C12, C22, C33), ``t`` in [0, 1].
The macro optimizer's family mode (:func:`metasys.optimize_properties` with ``family=``) uses one
variable ``t`` per element, so the equality constraint ``tau`` of paper Eq. 8 holds by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InvalidValueError


@dataclass(frozen=True)
class Gradation:
    """Property gradation of paper Eq. 7, parametrized by ``t`` in [0, 1].

    ``C11 = C11_M * (c11_min + t * (c11_max - c11_min))`` (fractions of the solid ``C11_M``), and

    - ``C22 = C11``,
    - ``C12 = [(1 - nu_M) (1 - C11 / C11_M)^4 + nu_M] C11``,
    - ``C33 = 0.25 C11^3 - 0.65 C11^2 + 0.6775 C11``.

    ``c11_min`` is kept above zero so that every element stays positive definite.
    """

    nu_M: float = 0.49
    C11_M: float = 1.31596
    c11_min: float = 0.02
    c11_max: float = 1.0

    def __post_init__(self):
        if not 0.0 < self.C11_M:
            raise InvalidValueError(f"Gradation.C11_M: expected a positive value, got {self.C11_M!r}")
        if not -1.0 < self.nu_M < 1.0:
            raise InvalidValueError(f"Gradation.nu_M: expected a value in (-1, 1), got {self.nu_M!r}")
        if not 0.0 < self.c11_min < self.c11_max <= 1.0:
            raise InvalidValueError(f"Gradation: expected 0 < c11_min < c11_max <= 1, got {self.c11_min!r}, {self.c11_max!r}")

    def _c11(self, t):
        t = np.asarray(t, dtype=float)
        return self.C11_M * (self.c11_min + t * (self.c11_max - self.c11_min))

    def __call__(self, t) -> np.ndarray:
        """Properties (..., 4) at positions ``t`` (...)."""
        c = self._c11(t)
        f = (1.0 - self.nu_M) * (1.0 - c / self.C11_M) ** 4 + self.nu_M
        return np.stack([c, f * c, c, 0.25 * c**3 - 0.65 * c**2 + 0.6775 * c], axis=-1)

    def derivative(self, t) -> np.ndarray:
        """dp / dt (..., 4) at positions ``t`` (...)."""
        c = self._c11(t)
        dc = self.C11_M * (self.c11_max - self.c11_min)
        s = 1.0 - c / self.C11_M
        f = (1.0 - self.nu_M) * s**4 + self.nu_M
        df = -4.0 * (1.0 - self.nu_M) * s**3 / self.C11_M
        dp_dc = np.stack([np.ones_like(c), f + c * df, np.ones_like(c), 0.75 * c**2 - 1.3 * c + 0.6775], axis=-1)
        return dp_dc * dc


def paper_gradation(nu_M: float = 0.49, C11_M: float = 1.31596, c11_min: float = 0.02, c11_max: float = 1.0) -> Gradation:
    """The gradation of paper Eq. 7 for a base material with Poisson's ratio ``nu_M`` and solid ``C11_M``."""
    return Gradation(float(nu_M), float(C11_M), float(c11_min), float(c11_max))
