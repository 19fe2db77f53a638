"""Macroscale design problems as plain data: grid, prescribed displacements and target displacements.

A `Problem` holds a W x H grid of unit cells, the prescribed displacements
(`metasys.fem.Prescribed`) and target displacements on selected degrees of freedom
(``gamma`` and ``u_t`` of paper Eq. 8). Node (x, y) has degrees of freedom ``2 * (y * (W + 1) + x) + c``
with ``c = 0`` for x and ``1`` for y. `bridge`, `smiley` and `graded` are the
three standard problems of DESIGN.md section 3; `load_problem` reads user problems from TOML
or JSON files of the form::

    name = "my problem"
    width = 30
    height = 4

    [[conditions]]          # prescribed displacements
    where = "left"          # "left", "right", "bottom", "top" or a node [x, y]
    component = "x"
    value = 0.0

    [[targets]]             # target displacements
    nodes = [[0, 4], [1, 4]] # or an edge name, e.g. "top"
    component = "y"
    values = [0.0, 0.01]    # one per node, or one number for all
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FileFormatError, InvalidValueError
from ..fem.boundary import COMPONENTS, EDGE_NAMES, Prescribed
from ..io import atomic_path


@dataclass
class Problem:
    """A macroscale design problem.

    Attributes
    ----------
    width, height : int
        Grid of W x H unit cells.
    conditions : list of Prescribed
        Prescribed displacements (they must remove the rigid-body motions).
    target_dofs : int array (k,)
        Degrees of freedom with a target displacement.
    target_values : array (k,)
        Target displacements ``u_t`` on those degrees of freedom.
    name : str
    """

    width: int
    height: int
    conditions: list
    target_dofs: np.ndarray
    target_values: np.ndarray
    name: str = "problem"
    description: str = field(default="", repr=False)

    def __post_init__(self):
        for key in ("width", "height"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise InvalidValueError(f"Problem.{key}: expected a positive integer, got {v!r}")
            setattr(self, key, int(v))
        self.conditions = list(self.conditions)
        for c in self.conditions:
            if not isinstance(c, Prescribed):
                raise InvalidValueError(f"Problem.conditions: expected Prescribed items, got {c!r}")
            c.nodes(self.width, self.height)  # checks that nodes lie on the grid
        self.target_dofs = np.asarray(self.target_dofs, dtype=np.int64).ravel()
        self.target_values = np.asarray(self.target_values, dtype=float).ravel()
        if self.target_dofs.shape != self.target_values.shape or len(self.target_dofs) == 0:
            raise InvalidValueError(f"Problem targets: expected target_dofs (k,) and target_values (k,) with k >= 1, got "
                                    f"{self.target_dofs.shape} and {self.target_values.shape}")
        if self.target_dofs.min() < 0 or self.target_dofs.max() >= self.n_dofs:
            raise InvalidValueError(f"Problem.target_dofs: expected degrees of freedom in [0, {self.n_dofs}), got values in "
                                    f"[{self.target_dofs.min()}, {self.target_dofs.max()}]")
        if len(np.unique(self.target_dofs)) != len(self.target_dofs):
            raise InvalidValueError("Problem.target_dofs: a degree of freedom is listed more than once")
        if not np.all(np.isfinite(self.target_values)):
            raise InvalidValueError("Problem.target_values: contains NaN or infinite values")

    @property
    def n_dofs(self) -> int:
        return 2 * (self.width + 1) * (self.height + 1)

    @property
    def target_nodes(self) -> np.ndarray:
        """Node coordinates (k, 2) as (x, y) of each target degree of freedom."""
        node = self.target_dofs // 2
        return np.stack([node % (self.width + 1), node // (self.width + 1)], axis=1)

    @property
    def target_components(self) -> np.ndarray:
        """Component (k,) of each target degree of freedom: 0 = x, 1 = y."""
        return self.target_dofs % 2

    @classmethod
    def from_targets(cls, width, height, conditions, targets, name="problem", description="") -> Problem:
        """Problem from target entries ``(nodes, component, values)``.

        ``nodes`` is an edge name or a list of (x, y); ``component`` "x" or "y"; ``values`` one per node or a scalar.
        """
        dofs, values = [], []
        for k, entry in enumerate(targets):
            try:
                nodes, component, vals = entry
            except (TypeError, ValueError):
                raise InvalidValueError(f"targets[{k}]: expected (nodes, component, values), got {entry!r}") from None
            xy = _nodes(nodes, int(width), int(height), f"targets[{k}].nodes")
            if component not in COMPONENTS:
                raise InvalidValueError(f"targets[{k}].component: expected 'x' or 'y', got {component!r}")
            v = np.broadcast_to(np.asarray(vals, dtype=float), (len(xy),)) if np.ndim(vals) == 0 else np.asarray(vals, float)
            if v.shape != (len(xy),):
                raise InvalidValueError(f"targets[{k}].values: expected one value per node ({len(xy)}) or a number, "
                                        f"got shape {v.shape}")
            dofs.append(2 * (xy[:, 1] * (int(width) + 1) + xy[:, 0]) + COMPONENTS[component])
            values.append(v)
        if not dofs:
            raise InvalidValueError("targets: expected at least one target entry, got none")
        return cls(width, height, conditions, np.concatenate(dofs), np.concatenate(values), name, description)

    def to_dict(self) -> dict:
        """Plain-data form (JSON/TOML-friendly) with one target entry per component."""
        targets = []
        for comp, c in COMPONENTS.items():
            sel = self.target_components == c
            if sel.any():
                targets.append({"nodes": self.target_nodes[sel].tolist(), "component": comp,
                                "values": self.target_values[sel].tolist()})
        conditions = [{"where": c.where if isinstance(c.where, str) else list(c.where), "component": c.component,
                       "value": c.value} for c in self.conditions]
        return {"name": self.name, "description": self.description, "width": self.width, "height": self.height,
                "conditions": conditions, "targets": targets}

    @classmethod
    def from_dict(cls, data: dict, source: str = "problem") -> Problem:
        """Inverse of `to_dict`; errors name the offending field (prefixed with ``source``)."""
        if not isinstance(data, dict):
            raise FileFormatError(f"{source}: expected a table/object at the top level, got {type(data).__name__}")
        for key in ("width", "height", "conditions", "targets"):
            if key not in data:
                raise FileFormatError(f"{source}: missing required field {key!r}")
        unknown = set(data) - {"name", "description", "width", "height", "conditions", "targets"}
        if unknown:
            raise FileFormatError(f"{source}: unknown field(s) {sorted(unknown)}")
        for key in ("width", "height"):
            v = data[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise FileFormatError(f"{source}: field {key!r}: expected a positive integer, got {v!r}")
        width, height = data["width"], data["height"]
        if not isinstance(data["conditions"], list):
            raise FileFormatError(f"{source}: field 'conditions': expected a list of tables, got {data['conditions']!r}")
        conditions = []
        for k, c in enumerate(data["conditions"]):
            name = f"conditions[{k}]"
            if not isinstance(c, dict) or "where" not in c or "component" not in c:
                raise FileFormatError(f"{source}: field {name!r}: expected a table with 'where', 'component' and 'value', "
                                      f"got {c!r}")
            where = tuple(c["where"]) if isinstance(c["where"], list) else c["where"]
            try:
                cond = Prescribed(where, c["component"], _number(c.get("value", 0.0), f"{name}.value"))
                cond.nodes(width, height)
            except (InvalidValueError, TypeError) as exc:
                raise FileFormatError(f"{source}: field {name!r}: {exc}") from None
            conditions.append(cond)
        if not isinstance(data["targets"], list) or not data["targets"]:
            raise FileFormatError(f"{source}: field 'targets': expected a non-empty list of tables, got {data['targets']!r}")
        entries = []
        for k, t in enumerate(data["targets"]):
            name = f"targets[{k}]"
            if not isinstance(t, dict) or not {"nodes", "component", "values"} <= set(t):
                raise FileFormatError(f"{source}: field {name!r}: expected a table with 'nodes', 'component' and 'values', "
                                      f"got {t!r}")
            values = t["values"]
            if isinstance(values, list):
                values = [_number(v, f"{name}.values") for v in values]
            else:
                values = _number(values, f"{name}.values")
            entries.append((t["nodes"], t["component"], values))
        try:
            return cls.from_targets(width, height, conditions, entries, str(data.get("name", "problem")),
                                    str(data.get("description", "")))
        except InvalidValueError as exc:
            raise FileFormatError(f"{source}: {exc}") from None

    def save(self, path) -> None:
        """Write as ``.toml`` or ``.json`` (by suffix), atomically."""
        path = Path(path)
        if path.suffix not in (".toml", ".json"):
            raise FileFormatError(f"problem file {str(path)!r}: expected suffix .toml or .json, got {path.suffix or 'none'!r}")
        text = json.dumps(self.to_dict(), indent=2) + "\n" if path.suffix == ".json" else _to_toml(self.to_dict())
        with atomic_path(path) as tmp:
            tmp.write_text(text)


def _number(v, name):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise FileFormatError(f"field {name!r}: expected a finite number, got {v!r}")
    return float(v)


def _nodes(nodes, width, height, name) -> np.ndarray:
    if isinstance(nodes, str):
        if nodes not in EDGE_NAMES:
            raise InvalidValueError(f"{name}: expected one of {EDGE_NAMES} or a list of nodes [x, y], got {nodes!r}")
        return Prescribed(nodes, "x").nodes(width, height)
    try:
        xy = np.asarray(nodes, dtype=float)
    except (TypeError, ValueError):
        xy = None
    if xy is None or xy.ndim != 2 or xy.shape[1] != 2 or len(xy) == 0 or np.any(xy != np.round(xy)):
        raise InvalidValueError(f"{name}: expected an edge name or a non-empty list of integer nodes [x, y], got {nodes!r}")
    xy = xy.astype(np.int64)
    bad = (xy[:, 0] < 0) | (xy[:, 0] > width) | (xy[:, 1] < 0) | (xy[:, 1] > height)
    if bad.any():
        raise InvalidValueError(f"{name}: node {xy[bad][0].tolist()} lies outside the grid [0, {width}] x [0, {height}]")
    return xy


def _toml_value(v) -> str:
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _to_toml(data: dict) -> str:
    lines = [f"{k} = {_toml_value(data[k])}" for k in ("name", "description", "width", "height")]
    for key in ("conditions", "targets"):
        for table in data[key]:
            lines += ["", f"[[{key}]]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def load_problem(path) -> Problem:
    """Read a problem from a ``.toml`` or ``.json`` file (format in the module docstring)."""
    path = Path(path)
    if path.suffix not in (".toml", ".json"):
        raise FileFormatError(f"problem file {str(path)!r}: expected suffix .toml or .json, got {path.suffix or 'none'!r}")
    try:
        text = path.read_text()
    except OSError as exc:
        raise FileFormatError(f"problem file {str(path)!r} cannot be read ({exc.strerror})") from None
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"problem file {str(path)!r} is not valid {path.suffix[1:].upper()}: {exc}") from None
    return Problem.from_dict(data, source=f"problem file {str(path)!r}")


def bridge() -> Problem:
    """DESIGN.md section 3: 30 x 4 grid, span shortened by 0.3, top and bottom edges rise as an arch."""
    w, h = 30, 4
    x = np.arange(w + 1)
    arch = 0.3 * (1 - np.cos(2 * np.pi * x / w)) / 2
    conditions = [Prescribed("left", "x", 0.0), Prescribed("right", "x", -0.3), Prescribed((0, 0), "y", 0.0)]
    targets = [("top", "y", arch), ("bottom", "y", arch)]
    return Problem.from_targets(w, h, conditions, targets, "bridge", "arch rising by the span's shortening (full database)")


def smiley() -> Problem:
    """DESIGN.md section 3: 50 x 50 grid squeezed from both sides; mouth and eyes deform into a smile."""
    w = h = 50
    conditions = [Prescribed("left", "x", 0.5), Prescribed("right", "x", -0.5),
                  Prescribed((0, 25), "y", 0.0), Prescribed((50, 25), "y", 0.0)]
    mouth, left, right = np.arange(13, 38), np.arange(13, 22), np.arange(29, 38)
    targets = [([[x, 15] for x in mouth], "y", -0.5 * np.cos(np.pi * (mouth - 25) / 24)),
               ([[x, 35] for x in left], "y", 0.3 * np.cos(np.pi * (left - 17) / 8)),
               ([[x, 35] for x in right], "y", 0.3 * np.cos(np.pi * (right - 33) / 8))]
    return Problem.from_targets(w, h, conditions, targets, "smiley", "smiling mouth and raised eyes (full database)")


def graded() -> Problem:
    """DESIGN.md section 3: 40 x 15 beam squeezed by 0.4 into a barrel bulge (one family, paper Eq. 7)."""
    w, h = 40, 15
    x = np.arange(w + 1)
    bulge = 0.08 * np.sin(np.pi * x / w)
    conditions = [Prescribed("left", "x", 0.0), Prescribed("right", "x", -0.4),
                  Prescribed((0, 7), "y", 0.0), Prescribed((40, 7), "y", 0.0)]
    targets = [("top", "y", bulge), ("bottom", "y", -bulge)]
    return Problem.from_targets(w, h, conditions, targets, "graded", "barrel bulge with the gradation of paper Eq. 7")


STANDARD = {"bridge": bridge, "smiley": smiley, "graded": graded}
