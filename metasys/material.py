"""Linear elastic base material of a pixel microstructure."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InvalidValueError


@dataclass(frozen=True)
class Material:
    """Isotropic linear elastic material with a SIMP-style density interpolation.

    A pixel of density ``rho`` in [0, 1] has Young's modulus
    ``E_void*E + (E - E_void*E) * rho**penal``: binary cells use the solid (``rho = 1``) and the
    ersatz void (``rho = 0``); grayscale cells interpolate. A two-phase composite (e.g. E0 = 1,
    E1 = 100) is ``Material(E=100, E_void=0.01)``; see `two_phase`.

    Parameters
    ----------
    E : float
        Young's modulus of the solid phase (> 0).
    nu : float
        Poisson's ratio, in (-1, 0.5).
    E_void : float
        Modulus of the void phase relative to ``E``, in [0, 1]. 0 makes void exactly empty
        (singular homogenization problems for cells with isolated solid; use with care).
    plane : {"stress", "strain"}
        Two-dimensional idealization.
    penal : float
        SIMP exponent (>= 1) applied to grayscale densities.
    """

    E: float = 1.0
    nu: float = 0.49
    E_void: float = 1e-9
    plane: str = "stress"
    penal: float = 1.0

    def __post_init__(self):
        if not np.isfinite(self.E) or self.E <= 0:
            raise InvalidValueError(f"Material: E must be a positive number, got {self.E!r}")
        if not -1.0 < self.nu < 0.5:
            raise InvalidValueError(f"Material: nu must lie in (-1, 0.5), got {self.nu!r}")
        if not 0.0 <= self.E_void <= 1.0:
            raise InvalidValueError(f"Material: E_void (relative to E) must lie in [0, 1], got {self.E_void!r}")
        if self.plane not in ("stress", "strain"):
            raise InvalidValueError(f"Material: plane must be 'stress' or 'strain', got {self.plane!r}")
        if self.penal < 1.0:
            raise InvalidValueError(f"Material: penal must be >= 1, got {self.penal!r}")

    @classmethod
    def two_phase(cls, E0: float, E1: float, nu: float = 0.3, plane: str = "stress") -> Material:
        """Composite of a soft phase ``E0`` (density 0) and a stiff phase ``E1`` (density 1)."""
        if not 0 < E0 <= E1:
            raise InvalidValueError(f"Material.two_phase: expected 0 < E0 <= E1, got E0={E0!r}, E1={E1!r}")
        return cls(E=E1, nu=nu, E_void=E0 / E1, plane=plane)

    def unit_constitutive(self) -> np.ndarray:
        """Constitutive matrix (3, 3) of the solid for ``E = 1``, Voigt with engineering shear."""
        nu = self.nu
        if self.plane == "stress":
            c = 1.0 / (1.0 - nu**2)
            return c * np.array([[1.0, nu, 0.0], [nu, 1.0, 0.0], [0.0, 0.0, (1.0 - nu) / 2.0]])
        c = 1.0 / ((1.0 + nu) * (1.0 - 2.0 * nu))
        return c * np.array([[1.0 - nu, nu, 0.0], [nu, 1.0 - nu, 0.0], [0.0, 0.0, (1.0 - 2.0 * nu) / 2.0]])

    def constitutive(self) -> np.ndarray:
        """Constitutive matrix (3, 3) of the solid phase."""
        return self.E * self.unit_constitutive()

    def modulus(self, density):
        """Young's modulus of pixels with the given densities (array in [0, 1], any shape).

        Works on NumPy and JAX arrays alike (only arithmetic is used).
        """
        e_min = self.E_void * self.E
        return e_min + (self.E - e_min) * density**self.penal

    def modulus_derivative(self, density):
        """d modulus / d density, same shape as ``density``."""
        e_min = self.E_void * self.E
        return (self.E - e_min) * self.penal * density ** (self.penal - 1.0)

    def to_dict(self) -> dict:
        return {"E": self.E, "nu": self.nu, "E_void": self.E_void, "plane": self.plane, "penal": self.penal}
