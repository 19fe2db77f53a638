"""The microstructure database: one HDF5 file of binary cells with their homogenized stiffness.

Layout (schema version 1)::

    /                    attrs: format, schema_version, n_cells, resolution, material (JSON),
                                command, seed, library_version, created, build_state (JSON)
    /cells               (N, ceil(ny*nx/8)) uint8, bit-packed rows of the flattened cells,
                         chunked and gzip-compressed
    /C                   (N, 3, 3) float64 homogenized stiffness
    /properties          (N, 4) float64 (C11, C12, C22, C33)
    /hash                (N, 16) uint8 BLAKE2b digest of the packed cell (no duplicates)
    /provenance/source   (N,) uint8 index into SOURCES
    /provenance/parent   (N,) int64 parent cell (-1: none)
    /provenance/iteration(N,) int32 generation round
    /feasibility         signed-distance field over the property box (see feasibility.py)

Writes are copy-on-write: a commit writes a complete new file next to the old one and renames it
into place, so a crash or a kill at any moment leaves either the old or the new file, both whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .._version import __version__
from ..errors import FileFormatError, InvalidCellError, InvalidValueError, describe
from ..fem import homogenize
from ..fem.element import properties_of
from ..io import publish
from ..material import Material

FORMAT = "metasys-database"
SCHEMA_VERSION = 1
SOURCES = ("seed", "perturbation", "generated", "imported")


def default_path() -> Path:
    """Location of the shipped database: the installed data package, else the source tree's databases/."""
    from importlib.resources import files

    try:
        installed = Path(str(files("metasys.databases") / "default.h5"))
    except ModuleNotFoundError:
        installed = None
    if installed is not None and installed.exists():
        return installed
    return Path(__file__).resolve().parents[2] / "databases" / "default.h5"


def pack_cells(cells: np.ndarray) -> np.ndarray:
    """Bit-pack bool cells (N, ny, nx) into rows (N, ceil(ny*nx/8)) uint8."""
    return np.packbits(cells.reshape(len(cells), -1), axis=1)


def unpack_cells(rows: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of `pack_cells`."""
    n = shape[0] * shape[1]
    return np.unpackbits(rows, axis=1, count=n).reshape(len(rows), *shape).astype(bool)


def cell_hashes(packed: np.ndarray) -> np.ndarray:
    """BLAKE2b-128 digests (N, 16) uint8 of packed cell rows."""
    return np.frombuffer(b"".join(hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in packed),
                         dtype=np.uint8).reshape(len(packed), 16)


def _keys(hashes: np.ndarray) -> list[bytes]:
    data = np.ascontiguousarray(hashes, dtype=np.uint8).tobytes()
    return [data[i : i + 16] for i in range(0, len(data), 16)]


def as_binary_cells(cells, resolution: tuple[int, int], name: str = "cells") -> np.ndarray:
    """Validate binary cells and return them as bool (N, ny, nx)."""
    arr = np.asarray(cells)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != tuple(resolution):
        raise InvalidCellError(f"{name}: expected shape (N, {resolution[0]}, {resolution[1]}), got {describe(cells)}")
    if arr.dtype != bool:
        if not np.issubdtype(arr.dtype, np.number):
            raise InvalidCellError(f"{name}: expected a bool or 0/1 array, got {describe(cells)}")
        if not np.all((arr == 0) | (arr == 1)):
            raise InvalidCellError(f"{name}: the database stores binary cells (0/1); got non-binary values, "
                                   f"e.g. {arr[(arr != 0) & (arr != 1)][0]!r}")
        arr = arr.astype(bool)
    return arr


@dataclass
class VerificationReport:
    """Result of `Database.verify`: ``ok`` and a list of human-readable problems."""

    path: str
    n_cells: int
    problems: list = field(default_factory=list)
    checked: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        head = f"{self.path}: {self.n_cells} cells, " + ("OK" if self.ok else f"{len(self.problems)} problem(s)")
        return "\n".join([head] + [f"  checked: {c}" for c in self.checked] + [f"  PROBLEM: {p}" for p in self.problems])


class Database:
    """A database of binary microstructures and their homogenized stiffness.

    Open one with `open`, `create` or `default`. Metadata, properties, stiffness,
    hashes and provenance are held in memory; cells are read from the file on demand.

    Examples
    --------
    >>> db = Database.create("cells.h5", material=Material())          # doctest: +SKIP
    >>> db.append(cells)                                               # doctest: +SKIP
    >>> d, idx = db.nearest([0.3, 0.1, 0.3, 0.08], k=5)                # doctest: +SKIP
    """

    def __init__(self, path: Path, writable: bool):
        self.path = Path(path)
        self.writable = writable
        self._load()

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(cls, path, mode: str = "r") -> Database:
        """Open an existing database; ``mode`` is ``"r"`` (default) or ``"a"`` (appendable)."""
        if mode not in ("r", "a"):
            raise InvalidValueError(f"Database.open: mode must be 'r' or 'a', got {mode!r}")
        path = Path(path)
        if not path.exists():
            raise FileFormatError(f"database file {str(path)!r} does not exist")
        return cls(path, writable=mode == "a")

    @classmethod
    def create(cls, path, material: Material = Material(), resolution=(50, 50), command: str | None = None,
               seed: int | None = None, overwrite: bool = False) -> Database:
        """Create an empty database file (refuses to overwrite unless ``overwrite``)."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileFormatError(f"database file {str(path)!r} already exists (pass overwrite=True to replace it)")
        ny, nx = (int(r) for r in resolution)
        n_bytes = (ny * nx + 7) // 8
        with _atomic_h5(path, copy_from=None) as f:
            f.attrs.update({
                "format": FORMAT, "schema_version": SCHEMA_VERSION, "n_cells": 0, "resolution": [ny, nx],
                "material": json.dumps(material.to_dict()), "command": command or "", "seed": -1 if seed is None else int(seed),
                "library_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "build_state": "{}",
            })
            chunk = max(1, min(4096, 2**20 // n_bytes))
            f.create_dataset("cells", (0, n_bytes), np.uint8, maxshape=(None, n_bytes), chunks=(chunk, n_bytes),
                             compression="gzip", compression_opts=4, shuffle=True)
            f.create_dataset("C", (0, 3, 3), np.float64, maxshape=(None, 3, 3), chunks=(4096, 3, 3))
            f.create_dataset("properties", (0, 4), np.float64, maxshape=(None, 4), chunks=(4096, 4))
            f.create_dataset("hash", (0, 16), np.uint8, maxshape=(None, 16), chunks=(4096, 16))
            prov = f.create_group("provenance")
            prov.attrs["sources"] = json.dumps(SOURCES)
            prov.create_dataset("source", (0,), np.uint8, maxshape=(None,), chunks=(8192,))
            prov.create_dataset("parent", (0,), np.int64, maxshape=(None,), chunks=(8192,))
            prov.create_dataset("iteration", (0,), np.int32, maxshape=(None,), chunks=(8192,))
        return cls(path, writable=True)

    @classmethod
    def default(cls) -> Database:
        """The database shipped with metasys (``databases/default.h5``)."""
        path = default_path()
        if not path.exists():
            raise FileFormatError(f"the default database {str(path)!r} is missing; see databases/README.md to rebuild it")
        return cls.open(path)

    def _load(self):
        try:
            f = h5py.File(self.path, "r")
        except OSError as exc:
            raise FileFormatError(f"{str(self.path)!r} is not a readable HDF5 file ({exc})") from None
        with f:
            if f.attrs.get("format") != FORMAT:
                raise FileFormatError(f"{str(self.path)!r} is an HDF5 file but not a metasys database "
                                      f"(no format={FORMAT!r} attribute)")
            version = int(f.attrs["schema_version"])
            if version > SCHEMA_VERSION:
                raise FileFormatError(f"{str(self.path)!r} has database schema version {version}, newer than this metasys "
                                      f"({__version__}) reads (<= {SCHEMA_VERSION}); upgrade metasys")
            n = int(f.attrs["n_cells"])
            self.resolution = tuple(int(r) for r in f.attrs["resolution"])
            self.material = Material(**json.loads(f.attrs["material"]))
            self.metadata = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items() if k != "resolution"}
            self.metadata["resolution"] = list(self.resolution)
            self.C = f["C"][:n]
            self.properties = f["properties"][:n]
            self.hashes = f["hash"][:n]
            self.source = f["provenance/source"][:n]
            self.parent = f["provenance/parent"][:n]
            self.iteration = f["provenance/iteration"][:n]
            self._feasibility = None
            if "feasibility" in f:
                from .feasibility import FeasibilityField

                self._feasibility = FeasibilityField.read(f["feasibility"])
        self._keys = set(_keys(self.hashes))

    # ----------------------------------------------------------------- reading
    def __len__(self) -> int:
        return len(self.properties)

    def __repr__(self) -> str:
        return f"Database({str(self.path)!r}, n_cells={len(self)}, resolution={self.resolution})"

    @property
    def build_state(self) -> dict:
        """Resumable state of the builder that wrote this file (empty when none)."""
        return json.loads(self.metadata.get("build_state") or "{}")

    @property
    def fingerprint(self) -> str:
        """Hex digest identifying the content (cells and their order); models record it."""
        return hashlib.blake2b(np.ascontiguousarray(self.hashes).tobytes(), digest_size=16).hexdigest()

    def get_cells(self, indices=None) -> np.ndarray:
        """Cells as bool (k, ny, nx) for ``indices`` (int array or slice; all when None)."""
        n = len(self)
        if indices is None:
            indices = np.arange(n)
        idx = np.arange(n)[indices] if isinstance(indices, slice) else np.asarray(indices, dtype=np.int64)
        scalar = idx.ndim == 0
        idx = np.atleast_1d(idx)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise InvalidValueError(f"get_cells: indices must lie in [0, {n}), got values in [{idx.min()}, {idx.max()}]")
        idx = idx % max(n, 1)
        order = np.argsort(idx, kind="stable")
        with h5py.File(self.path, "r") as f:
            ds = f["cells"]
            rows = np.empty((len(idx), ds.shape[1]), np.uint8)
            if len(idx):
                uniq, inverse = np.unique(idx[order], return_inverse=True)
                # Read whole windows of rows: h5py point selection on chunked data is ~15x slower
                # (25,000 scattered cells: 11.5 s against 0.7 s).
                window = 4096
                got = np.empty((len(uniq), ds.shape[1]), np.uint8)
                starts = np.flatnonzero(np.r_[True, np.diff(uniq // window) > 0])
                for a, b in zip(starts, np.r_[starts[1:], len(uniq)]):
                    lo, hi = int(uniq[a]), int(uniq[b - 1]) + 1
                    got[a:b] = ds[lo:hi][uniq[a:b] - lo]
                rows[order] = got[inverse]
        cells = unpack_cells(rows, self.resolution)
        return cells[0] if scalar else cells

    def provenance(self, indices=None) -> dict:
        """Provenance of cells: ``source`` names, ``parent`` indices, ``iteration``."""
        idx = slice(None) if indices is None else indices
        return {"source": np.array(SOURCES)[self.source[idx]], "parent": self.parent[idx], "iteration": self.iteration[idx]}

    def normalization(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, scale) of the normalized property space: ``(p - lower) / scale`` in [0, 1]."""
        if not len(self):
            raise InvalidValueError("the database is empty")
        lower, upper = self.properties.min(axis=0), self.properties.max(axis=0)
        return lower, np.where(upper > lower, upper - lower, 1.0)

    def nearest(self, p, k: int = 1):
        """The ``k`` cells nearest to property vectors ``p`` (4,) or (M, 4) in normalized property space.

        Returns (distances, indices), each (k,) or (M, k), nearest first.
        """
        from sklearn.neighbors import NearestNeighbors

        q = np.asarray(p, dtype=float)
        single = q.ndim == 1
        q = np.atleast_2d(q)
        if q.shape[1] != 4:
            raise InvalidValueError(f"nearest: expected property vectors (4,) or (M, 4), got {describe(p)}")
        if not 1 <= k <= len(self):
            raise InvalidValueError(f"nearest: k must lie in [1, {len(self)}], got {k}")
        lower, scale = self.normalization()
        if getattr(self, "_nn_size", None) != len(self):
            self._nn = NearestNeighbors().fit((self.properties - lower) / scale)
            self._nn_size = len(self)
        dist, idx = self._nn.kneighbors((q - lower) / scale, n_neighbors=k)
        return (dist[0], idx[0]) if single else (dist, idx)

    def feasibility(self, p):
        """Signed distance to the boundary of the property cloud (positive inside) and its gradient.

        Parameters
        ----------
        p : array (4,) or (M, 4)
            Property vectors (C11, C12, C22, C33).

        Returns
        -------
        distance : float or array (M,)
            In normalized property units (each property scaled by its database range).
        gradient : array (4,) or (M, 4)
            d distance / d p (in 1 / property units).
        """
        if self._feasibility is None:
            raise InvalidValueError(f"{str(self.path)!r} has no feasibility field; run `metasys db build` or "
                                    "Database.build_feasibility()")
        return self._feasibility(p)

    # ----------------------------------------------------------------- writing
    def _require_writable(self):
        if not self.writable:
            raise InvalidValueError(f"{str(self.path)!r} is open read-only; use Database.open(path, mode='a')")

    def append(self, cells, source: str = "imported", parent=None, iteration=0, stiffness=None, build_state=None) -> np.ndarray:
        """Add binary cells (homogenized unless ``stiffness`` is given), skipping duplicates.

        Parameters
        ----------
        cells : bool array (k, ny, nx)
        source : one of ``SOURCES``
        parent : int array (k,), optional
            Index of the cell each new cell was derived from (-1 for none).
        iteration : int or int array (k,)
        stiffness : array (k, 3, 3), optional
            Precomputed C with the database material (skips homogenization).
        build_state : dict, optional
            Builder checkpoint stored with the same commit.

        Returns
        -------
        indices : int array
            Database indices of the cells that were new (duplicates of stored cells or within the batch are dropped).
        """
        self._require_writable()
        cells = as_binary_cells(cells, self.resolution)
        if source not in SOURCES:
            raise InvalidValueError(f"append: source must be one of {SOURCES}, got {source!r}")
        k = len(cells)
        parent = np.full(k, -1, np.int64) if parent is None else np.broadcast_to(np.asarray(parent, np.int64), (k,))
        iteration = np.broadcast_to(np.asarray(iteration, np.int32), (k,))
        packed = pack_cells(cells)
        hashes = cell_hashes(packed)
        batch = set()
        new = []
        for i, key in enumerate(_keys(hashes)):
            if key not in self._keys and key not in batch:
                batch.add(key)
                new.append(i)
        new = np.array(new, dtype=np.int64)
        if stiffness is None:
            c = homogenize(cells[new], self.material) if len(new) else np.zeros((0, 3, 3))
        else:
            c = np.asarray(stiffness, dtype=float).reshape(k, 3, 3)[new]
        self._commit(packed[new], c, hashes[new], SOURCES.index(source), parent[new], iteration[new], build_state)
        return np.arange(len(self) - len(new), len(self))

    def set_build_state(self, state: dict) -> None:
        """Store the builder checkpoint (atomically, like every write)."""
        self._require_writable()
        self._commit(np.zeros((0, 1), np.uint8), np.zeros((0, 3, 3)), np.zeros((0, 16), np.uint8), 0,
                     np.zeros(0, np.int64), np.zeros(0, np.int32), state)

    def _commit(self, packed, c, hashes, source, parent, iteration, build_state):
        n0, k = len(self), len(c)
        columns = {"C": c, "properties": properties_of(c), "hashes": hashes, "source": np.full(k, source, np.uint8),
                   "parent": parent, "iteration": iteration}
        with _atomic_h5(self.path, copy_from=self.path) as f:
            if k:
                for name, data in (("cells", packed), ("C", c), ("properties", columns["properties"]), ("hash", hashes),
                                   ("provenance/source", columns["source"]), ("provenance/parent", parent),
                                   ("provenance/iteration", iteration)):
                    ds = f[name]
                    ds.resize(n0 + k, axis=0)
                    ds[n0:] = data
                f.attrs["n_cells"] = n0 + k
            if build_state is not None:
                f.attrs["build_state"] = json.dumps(build_state)
        # The file now holds exactly the old content plus this batch: extend the in-memory copy.
        for name, data in columns.items():
            setattr(self, name, np.concatenate([getattr(self, name), data.astype(getattr(self, name).dtype)]))
        self._keys.update(_keys(hashes))
        self.metadata["n_cells"] = n0 + k
        if build_state is not None:
            self.metadata["build_state"] = json.dumps(build_state)

    def set_metadata(self, **attrs) -> None:
        """Update file-level metadata such as ``command`` and ``seed``."""
        self._require_writable()
        with _atomic_h5(self.path, copy_from=self.path) as f:
            for key, value in attrs.items():
                f.attrs[key] = value
        self._load()

    def build_feasibility(self, n_grid: int = 24) -> None:
        """Compute the signed-distance feasibility field of the current cells and store it."""
        self._require_writable()
        from .feasibility import FeasibilityField

        field_ = FeasibilityField.from_points(self.properties, n_grid=n_grid)
        with _atomic_h5(self.path, copy_from=self.path) as f:
            if "feasibility" in f:
                del f["feasibility"]
            field_.write(f.create_group("feasibility"))
        self._load()

    # ----------------------------------------------------------------- checking
    def verify(self, sample: int = 200, seed: int = 0, rtol: float = 1e-6) -> VerificationReport:
        """Check integrity and say precisely what is wrong.

        Checks shapes and counts, hashes against cell contents, duplicates, mirror symmetry and
        validity of every cell, C symmetric and consistent with the properties, and C recomputed
        for a random sample of ``sample`` cells.
        """
        from .repair import validity_report

        report = VerificationReport(str(self.path), len(self))
        n = len(self)
        with h5py.File(self.path, "r") as f:
            for name in ("cells", "C", "properties", "hash", "provenance/source", "provenance/parent", "provenance/iteration"):
                if f[name].shape[0] < n:
                    report.problems.append(f"dataset {name} has {f[name].shape[0]} rows, fewer than n_cells = {n}")
            report.checked.append("dataset lengths")
            packed = f["cells"][:n]
        if report.problems:
            return report
        bad = np.flatnonzero(np.any(cell_hashes(packed) != self.hashes, axis=1))
        if len(bad):
            report.problems.append(f"{len(bad)} cell(s) do not match their stored hash, first indices {bad[:10].tolist()}")
        n_duplicates = n - len(set(_keys(self.hashes)))
        if n_duplicates:
            report.problems.append(f"{n_duplicates} duplicate cell(s)")
        report.checked.append("hashes and duplicates")
        cells = unpack_cells(packed, self.resolution)
        checks = validity_report(cells)
        for name, ok in checks.items():
            if not ok.all():
                first = np.flatnonzero(~ok)[:10].tolist()
                report.problems.append(f"{int((~ok).sum())} cell(s) fail '{name}', first indices {first}")
        report.checked.append("validity of every cell (" + ", ".join(checks) + ")")
        if not np.allclose(self.C, np.swapaxes(self.C, 1, 2), atol=1e-12):
            report.problems.append("some stored C are not symmetric")
        if not np.allclose(properties_of(self.C), self.properties, rtol=0, atol=1e-15):
            report.problems.append("stored properties differ from the stored C")
        if len(self.source) and self.source.max() >= len(SOURCES):
            report.problems.append("unknown provenance source codes")
        if np.any(self.parent >= np.arange(n)):
            report.problems.append("some cells name a parent that is not an earlier cell")
        report.checked.append("C symmetry, properties, provenance")
        if n:
            idx = np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False)
            c = homogenize(cells[idx], self.material)
            err = np.abs(c - self.C[idx]).max(axis=(1, 2)) / np.abs(self.C[idx]).max(axis=(1, 2)).clip(1e-12)
            if np.any(err > rtol):
                report.problems.append(f"{int((err > rtol).sum())} of {len(idx)} sampled cells re-homogenize differently "
                                       f"(max relative error {err.max():.2e}), first index {int(idx[np.argmax(err)])}")
            report.checked.append(f"C re-homogenized for {len(idx)} random cells (rtol {rtol:g})")
        if self._feasibility is None:
            report.checked.append("no feasibility field stored")
        return report


class _atomic_h5:
    """Context manager: an h5py file written at a temporary path and renamed over ``path`` on success."""

    def __init__(self, path: Path, copy_from: Path | None):
        self.path, self.copy_from = Path(path), copy_from

    def __enter__(self) -> h5py.File:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        if self.copy_from is not None:
            shutil.copyfile(self.copy_from, self.tmp)
        self.file = h5py.File(self.tmp, "r+" if self.copy_from is not None else "w")
        return self.file

    def __exit__(self, exc_type, exc, tb):
        self.file.close()
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)
            return False
        with open(self.tmp, "rb") as fh:
            os.fsync(fh.fileno())
        publish(self.tmp, self.path)
        return False
