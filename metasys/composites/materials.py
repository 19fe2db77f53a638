"""The composite designer's material table: (E, nu, rho) of base materials, sliced into chunks.

Units: Young's modulus ``E`` in GPa, Poisson's ratio ``nu`` dimensionless, density ``rho`` in g/cm^3.
The table lives in the box ``0 < E <= 500``, ``0 < nu < 0.5``, ``0 < rho < 10`` (the loss-guided
paper, Sec. 6.1). Each axis of the box is cut into 10 equal segments, giving 1000 chunks; a chunk is
``(iE, inu, irho)`` and its flat id is ``100 iE + 10 inu + irho``. The normalized space is the box
mapped affinely onto ``[-1, 1]^3`` (``x_n = 2 x / hi - 1`` with ``hi = (500, 0.5, 10)``): the space in
which the diffusion prior works and nearest materials are found.

The shipped table is ``databases/composites/materials.csv`` (see databases/README.md and
`metasys.composites.recipe` for how it is made).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FileFormatError, InvalidValueError, describe
from ..io import atomic_path

BOX_HIGH = np.array([500.0, 0.5, 10.0])
"""Upper bounds (E [GPa], nu [-], rho [g/cm^3]) of the material box; the lower bounds are 0."""
N_SEGMENTS = 10
"""Segments per axis: 10 x 10 x 10 chunks."""
COLUMNS = ("name", "source", "E", "nu", "rho")


def default_table_path() -> Path:
    """The shipped table: the installed data package, else the source tree's databases/composites/."""
    from importlib.resources import files

    try:
        installed = Path(str(files("metasys.databases") / "composites" / "materials.csv"))
    except ModuleNotFoundError:
        installed = None
    if installed is not None and installed.exists():
        return installed
    return Path(__file__).resolve().parents[2] / "databases" / "composites" / "materials.csv"


def normalize(values) -> np.ndarray:
    """Map (..., 3) materials (E, nu, rho) in physical units to the normalized box [-1, 1]^3."""
    return 2.0 * np.asarray(values, dtype=float) / BOX_HIGH - 1.0


def denormalize(values) -> np.ndarray:
    """Inverse of `normalize`: (..., 3) normalized values to (E [GPa], nu, rho [g/cm^3])."""
    return (np.asarray(values, dtype=float) + 1.0) * BOX_HIGH / 2.0


def chunk_of(values) -> np.ndarray:
    """Flat chunk ids (...,) of materials (..., 3); the upper edge (E = 500) belongs to the last segment."""
    idx = np.floor(np.asarray(values, dtype=float) / BOX_HIGH * N_SEGMENTS).astype(int)
    idx = np.clip(idx, 0, N_SEGMENTS - 1)
    return idx[..., 0] * N_SEGMENTS**2 + idx[..., 1] * N_SEGMENTS + idx[..., 2]


def in_box(values) -> np.ndarray:
    """Bool (...,): the material lies in 0 < E <= 500, 0 < nu < 0.5, 0 < rho < 10."""
    v = np.asarray(values, dtype=float)
    return (v[..., 0] > 0) & (v[..., 0] <= BOX_HIGH[0]) & (v[..., 1] > 0) & (v[..., 1] < BOX_HIGH[1]) \
        & (v[..., 2] > 0) & (v[..., 2] < BOX_HIGH[2])


@dataclass(frozen=True)
class MaterialTable:
    """Base materials: ``values`` (M, 3) = (E [GPa], nu, rho [g/cm^3]), ``names`` and ``sources`` (M,).

    ``metadata`` holds the provenance lines of the file (seed, command, package versions).
    """

    values: np.ndarray
    names: tuple = ()
    sources: tuple = ()
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        v = np.array(self.values, dtype=float)  # a copy: the caller's array stays writable
        if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
            raise InvalidValueError(f"values: expected a non-empty (M, 3) array of (E, nu, rho), got {describe(self.values)}")
        if not in_box(v).all():
            bad = v[~in_box(v)][0]
            raise InvalidValueError(f"values: every material must lie in 0 < E <= 500, 0 < nu < 0.5, 0 < rho < 10; got {bad}")
        v.setflags(write=False)
        object.__setattr__(self, "values", v)
        object.__setattr__(self, "names", tuple(self.names) or tuple(f"m{i}" for i in range(len(v))))
        object.__setattr__(self, "sources", tuple(self.sources) or ("",) * len(v))

    def __len__(self) -> int:
        return len(self.values)

    @property
    def normalized(self) -> np.ndarray:
        """(M, 3) materials in [-1, 1]^3."""
        return normalize(self.values)

    @property
    def chunk_ids(self) -> np.ndarray:
        """(M,) flat chunk id of each material."""
        return chunk_of(self.values)

    @property
    def chunks(self) -> np.ndarray:
        """Sorted flat ids of the non-empty chunks (the paper's table: 168 of them)."""
        return np.unique(self.chunk_ids)

    def nearest(self, values, normalized: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Nearest table material of each query (..., 3), Euclidean in the normalized space.

        Returns ``(index (...,), distance (...,))``; the distance is measured in [-1, 1]^3.
        """
        q = np.asarray(values, dtype=float)
        if q.shape[-1:] != (3,):
            raise InvalidValueError(f"values: expected (..., 3) materials (E, nu, rho), got {describe(values)}")
        qn = q if normalized else normalize(q)
        d = np.linalg.norm(qn[..., None, :] - self.normalized, axis=-1)
        idx = np.argmin(d, axis=-1)
        return idx, np.take_along_axis(d, idx[..., None], axis=-1)[..., 0]

    def sample(self, n: int, rng) -> np.ndarray:
        """Chunk-balanced draws (n,) of material indices: a uniform non-empty chunk, then a uniform material in it."""
        rng = np.random.default_rng(rng)
        ids = self.chunk_ids
        chunks = self.chunks
        picked = chunks[rng.integers(len(chunks), size=int(n))]
        order = np.argsort(ids, kind="stable")
        start = np.searchsorted(ids[order], picked, side="left")
        count = np.searchsorted(ids[order], picked, side="right") - start
        return order[start + np.floor(rng.random(int(n)) * count).astype(int)]

    # ------------------------------------------------------------------ files
    def save(self, path) -> Path:
        """Write a CSV (``# key: value`` provenance lines, then name,source,E,nu,rho), atomically."""
        path = Path(path)
        buf = io.StringIO()
        for key, value in self.metadata.items():
            buf.write(f"# {key}: {value}\n")
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(COLUMNS)
        for name, src, (e, nu, rho) in zip(self.names, self.sources, self.values):
            writer.writerow([name, src, repr(float(e)), repr(float(nu)), repr(float(rho))])
        with atomic_path(path) as tmp:
            Path(tmp).write_text(buf.getvalue())
        return path


def load_table(path=None) -> MaterialTable:
    """Read a material table CSV (default: the shipped ``databases/composites/materials.csv``)."""
    path = default_table_path() if path is None else Path(path)
    if not path.exists():
        raise FileFormatError(f"path: material table {str(path)!r} does not exist")
    metadata, rows = {}, []
    try:
        lines = path.read_text().splitlines()
        body = []
        for line in lines:
            if line.startswith("#"):
                key, _, value = line[1:].partition(":")
                metadata[key.strip()] = value.strip()
            elif line.strip():
                body.append(line)
        reader = csv.reader(body)
        header = next(reader)
        if tuple(header) != COLUMNS:
            raise FileFormatError(f"path: {str(path)!r} has columns {header}, expected {list(COLUMNS)}")
        rows = [(r[0], r[1], float(r[2]), float(r[3]), float(r[4])) for r in reader]
    except (StopIteration, IndexError, ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, FileFormatError):
            raise
        raise FileFormatError(f"path: {str(path)!r} is not a material table CSV ({exc})") from None
    if not rows:
        raise FileFormatError(f"path: {str(path)!r} holds no materials")
    names, sources, e, nu, rho = zip(*rows)
    return MaterialTable(np.column_stack([e, nu, rho]), names, sources, metadata)
