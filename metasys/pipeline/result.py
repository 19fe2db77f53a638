"""`Design`, the result of `metasys.design`: its report, and saving and loading it as a folder of files."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._version import __version__
from ..errors import FileFormatError
from ..io import atomic_path, write_json
from ..macro.problems import Problem

FORMAT = "metasys-design"
FORMAT_VERSION = 1


@dataclass
class Design:
    """A verified multiscale design (the result of `design`).

    Attributes
    ----------
    problem : Problem
    properties : array (H, W, 4)
        Target properties (C11, C12, C22, C33) of each macro element from the macro stage.
    candidate_indices : array (H, W, L)
        Database indices of each element's candidates (-1: a generated cell): the ``k`` of the candidate stage,
        then those the refinement added (`metasys.pipeline.sensitivity`), so ``L >= k``.
    labels : array (H, W)
        Chosen candidate of each element.
    cells : bool array (H, W, 50, 50)
        The chosen cells (row 0 at the bottom).
    cell_properties : array (H, W, 4)
        Homogenized properties of the chosen cells.
    structure : bool array (50 H, 50 W)
        The assembled structure, row 0 at the bottom.
    macro_displacement : array (H + 1, W + 1, 2)
        Displacements of the macro model with the optimized properties.
    full_displacement : array (H + 1, W + 1, 2)
        Full-scale displacements at the macro nodes (nearest solid fine node).
    rrmse_macro, rrmse_full : float
        ``||u[gamma] - u_t|| / ||u_t||`` of the macro stage's optimum and of the full-scale structure. After
        space-mapping rounds of the refinement, ``properties`` and ``macro_displacement`` are those of the
        re-targeted macro optimum (targets shifted by the full-scale/macro discrepancy), ``rrmse_macro`` stays the
        macro stage's.
    compatibility : dict
        ``theta_G_zero_fraction``, ``theta_G_mean``, ``theta_M_mean``, ``n_components`` (solid
        components of the structure), MRF ``energy``/``lower_bound``/``iterations``.
    uncovered : int
        Elements whose target had fewer than k database cells within the tolerance.
    timings : dict
        Wall-clock seconds per stage and ``total``.
    seed : int
    versions : dict
    mode : "database" or "family"
    families : list of dict or None
        Family mode: for each family tried, ``members``, ``rrmse_macro``, ``rrmse_full`` and ``chosen``
        (the design kept is the family's with the lowest full-scale RRMSE).
    starts : list of dict or None
        Database mode with a multi-start macro stage: for each start, ``rrmse_macro``, ``rrmse_full``
        (None when not verified), ``generator`` (whether generated cells were offered) and ``chosen``.
    refinement : list of dict or None
        History of the full-scale refinement: entry 0 the verified structure (``stage`` "start", with
        ``unrefined``), then one entry per full-scale solve with ``stage`` ("relabel", "space mapping", "connect" or
        "swap"), ``rrmse_full`` (of the design kept after it), ``tried``, ``swaps`` (cells changed), ``accepted``,
        ``estimate`` (the predicted change), ``n_components`` and ``time_s``; relabel steps add ``weight``, space
        mapping rounds ``step``. None when it did not run.
    fine_displacement : array (50 H + 1, 50 W + 1, 2) or None
        Full-scale displacement of every fine node (NaN where no kept solid pixel), for plots and VTU.
    """

    problem: Problem
    properties: np.ndarray
    candidate_indices: np.ndarray
    labels: np.ndarray
    cells: np.ndarray
    cell_properties: np.ndarray
    structure: np.ndarray
    macro_displacement: np.ndarray
    full_displacement: np.ndarray
    rrmse_macro: float
    rrmse_full: float
    compatibility: dict
    uncovered: int
    timings: dict
    seed: int
    versions: dict
    mode: str = "database"
    families: list | None = None
    starts: list | None = None
    refinement: list | None = None
    fine_displacement: np.ndarray | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return (f"Design({self.problem.name!r}, {self.problem.width}x{self.problem.height} cells, rrmse_macro="
                f"{self.rrmse_macro:.4f}, rrmse_full={self.rrmse_full:.4f}, components={self.compatibility.get('n_components')})")

    @property
    def n_not_in_database(self) -> int:
        """Chosen cells that are not database cells: generated (database mode) or decoded family cells."""
        chosen = np.take_along_axis(np.asarray(self.candidate_indices), np.asarray(self.labels)[..., None], axis=-1)
        return int(np.count_nonzero(chosen < 0))

    def report(self) -> dict:
        """The summary written to ``report.json`` (plain JSON types)."""
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "problem": self.problem.name,
            "grid": [self.problem.width, self.problem.height], "mode": self.mode,
            "rrmse_macro": float(self.rrmse_macro), "rrmse_full": float(self.rrmse_full),
            "n_components": int(self.compatibility.get("n_components", -1)),
            "theta_G_zero_fraction": float(self.compatibility.get("theta_G_zero_fraction", float("nan"))),
            "compatibility": {k: (float(v) if isinstance(v, float | np.floating) else v) for k, v in self.compatibility.items()},
            "candidates_per_element": int(np.shape(self.candidate_indices)[-1]),
            "uncovered_elements": int(self.uncovered), "cells_not_in_database": self.n_not_in_database,
            "timings": {k: round(float(v), 3) for k, v in self.timings.items()},
            "seed": int(self.seed), "versions": self.versions,
            **({"families": self.families} if self.families is not None else {}),
            **({"starts": self.starts} if self.starts is not None else {}),
            **({"refinement": self.refinement} if self.refinement is not None else {}),
        }

    def save(self, directory) -> Path:
        """Write the design to ``directory``: ``report.json``, ``problem.json``, ``structure.npy``, ``design.npz``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        arrays = {name: getattr(self, name) for name in ("properties", "candidate_indices", "labels", "cells", "cell_properties",
                                                          "macro_displacement", "full_displacement")}
        if self.fine_displacement is not None:
            arrays["fine_displacement"] = self.fine_displacement.astype(np.float32)
        with atomic_path(out / "design.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        with atomic_path(out / "structure.npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, self.structure.astype(bool))
        write_json(out / "problem.json", self.problem.to_dict())
        write_json(out / "report.json", self.report())
        return out

    @classmethod
    def load(cls, directory) -> Design:
        """Read a design written by `save`."""
        d = Path(directory)
        for name in ("report.json", "problem.json", "structure.npy", "design.npz"):
            if not (d / name).exists():
                raise FileFormatError(f"{str(d)!r} is not a saved design: {name} is missing")
        report = json.loads((d / "report.json").read_text())
        if report.get("format") != FORMAT:
            raise FileFormatError(f"{str(d / 'report.json')!r}: expected format {FORMAT!r}, got {report.get('format')!r}")
        if report.get("format_version", 0) > FORMAT_VERSION:
            raise FileFormatError(f"{str(d)!r} was written by a newer metasys (format version {report['format_version']})")
        problem = Problem.from_dict(json.loads((d / "problem.json").read_text()), source=str(d / "problem.json"))
        with np.load(d / "design.npz") as z:
            arrays = {k: z[k] for k in z.files}
        return cls(problem=problem, structure=np.load(d / "structure.npy"), rrmse_macro=report["rrmse_macro"],
                   rrmse_full=report["rrmse_full"], compatibility=report["compatibility"],
                   uncovered=report["uncovered_elements"], timings=report["timings"], seed=report["seed"],
                   versions=report["versions"], mode=report["mode"], families=report.get("families"),
                   starts=report.get("starts"), refinement=report.get("refinement"),
                   fine_displacement=arrays.pop("fine_displacement", None),
                   **arrays)

    def export(self, path, **options) -> Path:
        """Export the structure by extension: ``.npy``, ``.png`` (``deformed=True`` overlays the full-scale
        deformed shape on the target), ``.svg``, ``.vtu`` (with the displacement field) or ``.stl``
        (extruded by ``thickness``). See `metasys.pipeline.export.export_structure`. Pixels of parts that the
        full-scale model removed (not connected to the supports) carry NaN displacements in the ``.vtu``
        unless ``missing="drop"`` is passed."""
        from .export import export_structure

        options.setdefault("missing", "nan")
        return export_structure(self.structure, path, displacement=self.fine_displacement, problem=self.problem, **options)


def versions() -> dict:
    """Versions of metasys, Python and the numerical libraries a design depends on."""
    import importlib.metadata as md

    out = {"metasys": __version__, "python": platform.python_version()}
    for name in ("numpy", "scipy", "nlopt", "scikit-learn", "tensorflow", "pyamg"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out
