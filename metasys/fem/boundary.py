"""Prescribed displacements on a macro grid, shared by the macroscale and full-scale solves.

The macro grid has W x H cells of side 1; node (x, y) sits at integers x in [0, W], y in [0, H].
A condition applies to a whole edge (``"left"``, ``"right"``, ``"bottom"``, ``"top"``) or to one
node ``(x, y)``. In a full-scale pixel model an edge condition applies to every fine node on that
edge that belongs to a solid pixel, and a node condition to the solid fine node nearest to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidValueError

EDGE_NAMES = ("left", "right", "bottom", "top")
COMPONENTS = {"x": 0, "y": 1}


@dataclass(frozen=True)
class Prescribed:
    """Prescribed displacement ``value`` of ``component`` ("x" or "y") on an edge or at a node."""

    where: str | tuple[int, int]
    component: str
    value: float = 0.0

    def __post_init__(self):
        if isinstance(self.where, str):
            if self.where not in EDGE_NAMES:
                raise InvalidValueError(f"Prescribed.where: expected one of {EDGE_NAMES} or a node (x, y), got {self.where!r}")
        else:
            try:
                x, y = self.where
            except (TypeError, ValueError):
                raise InvalidValueError(f"Prescribed.where: expected an edge name or a node (x, y), got {self.where!r}") from None
            if int(x) != x or int(y) != y:
                raise InvalidValueError(f"Prescribed.where: node coordinates must be integers, got {self.where!r}")
            object.__setattr__(self, "where", (int(x), int(y)))
        if self.component not in COMPONENTS:
            raise InvalidValueError(f"Prescribed.component: expected 'x' or 'y', got {self.component!r}")
        object.__setattr__(self, "value", float(self.value))

    def nodes(self, width: int, height: int) -> np.ndarray:
        """Integer node coordinates (k, 2) as (x, y) on a ``width`` x ``height`` grid of nodes spacing 1."""
        if isinstance(self.where, tuple):
            x, y = self.where
            if not (0 <= x <= width and 0 <= y <= height):
                raise InvalidValueError(f"Prescribed.where: node {self.where} lies outside the grid [0, {width}] x [0, {height}]")
            return np.array([[x, y]])
        if self.where in ("left", "right"):
            ys = np.arange(height + 1)
            return np.stack([np.full_like(ys, 0 if self.where == "left" else width), ys], axis=1)
        xs = np.arange(width + 1)
        return np.stack([xs, np.full_like(xs, 0 if self.where == "bottom" else height)], axis=1)


def prescribed_dofs(conditions, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Degrees of freedom and values of macro-grid conditions (later ones win on overlaps).

    Node (x, y) has degrees of freedom ``2 * (y * (width + 1) + x) + component``.
    Returns (dofs (k,), values (k,)) sorted by dof.
    """
    values = {}
    for cond in conditions:
        if not isinstance(cond, Prescribed):
            raise InvalidValueError(f"conditions: expected Prescribed items, got {cond!r}")
        nodes = cond.nodes(width, height)
        for dof in 2 * (nodes[:, 1] * (width + 1) + nodes[:, 0]) + COMPONENTS[cond.component]:
            values[int(dof)] = cond.value
    dofs = np.array(sorted(values), dtype=np.int64)
    return dofs, np.array([values[d] for d in dofs], dtype=float)
