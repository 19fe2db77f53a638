"""Datasets of random particle-matrix microstructures (the paper's training and target-selection sets).

Sample ``i`` of a dataset with seed ``s`` is drawn from ``numpy.random.default_rng([s, i])`` alone, so a
dataset is the same however often its build was interrupted and resumed. Per sample: matrix and
particle materials drawn chunk-balanced from the table (a uniform non-empty chunk, then a uniform
material in it; the same distribution for both), volume fraction and diameter uniform in `RANGES` [dim]
(2D: f in [0.05, 0.5], diameter in [0.15, 0.4] of the side; 3D: [0.05, 0.45] and [0.15, 0.35], the paper's
Sec. 6.1, because 15 spheres of diameter 0.4 (f = 0.5) do not fit in the unit cube at all), ``round(f / V(r))``
particles at random non-overlapping positions. ``dim=2`` gives 64 x 64 pixel samples, ``dim=3`` 32 x 32 x 32
voxel samples (the paper's sizes; the paper trains on 10,000 of each).

HDF5 layout (schema version 1; ``G = (64, 64)`` in 2D, ``(32, 32, 32)`` in 3D)::

    /                   attrs: format, schema_version, n_samples, target, resolution, dim (absent: 2), seed,
                               command, table (JSON: path, sha256), library_version, created
    /images             (N, 3, *G) float32 (E [GPa], nu, rho [g/cm^3]) per pixel/voxel, axes (y, x) or (z, y, x),
                        row 0 at the bottom
    /matrix, /particle  (N,) int32 indices into the material table
    /radius             (N,) float64 particle radius, fraction of the side
    /volume_fraction_requested (N,) float64 sampled f
    /n_particles        (N,) int32
    /volume_fraction    (N,) float64 particle pixels / all pixels
    /centers            (N, P, dim) float32 particle centres (x, y[, z]), NaN-padded; P = `MAX_PARTICLES` [dim]
    /K                  (N,) float64 bulk modulus of the sample (`bulk_modulus`), GPa (NaN if not computed)

Every batch is written copy-on-write (a complete new file renamed into place).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .._version import __version__
from ..errors import FileFormatError, InvalidValueError
from ..io import atomic_path
from .forward import batch_bulk_modulus
from .materials import MaterialTable, default_table_path, load_table
from .microstructure import RESOLUTIONS, check_dim, compose, particle_count, place_particles, rasterize

FORMAT = "metasys-composites-dataset"
SCHEMA_VERSION = 1
VOLUME_FRACTION = (0.05, 0.5)
DIAMETER = (0.15, 0.4)
RANGES = {2: (VOLUME_FRACTION, DIAMETER), 3: ((0.05, 0.45), (0.15, 0.35))}
"""(volume fraction, diameter as a fraction of the side) ranges by dimension (the paper's Sec. 6.1)."""
PARTICLE_SLOTS = {2: 32, 3: 256}
"""Rows of ``/centers`` by dimension: the largest count, round(f_max / V(d_min / 2)), is 28 in 2D and 255 in 3D."""
MAX_PARTICLES = PARTICLE_SLOTS[2]
_COLUMNS = {"matrix": np.int32, "particle": np.int32, "radius": np.float64, "volume_fraction_requested": np.float64,
            "n_particles": np.int32, "volume_fraction": np.float64, "K": np.float64}


def sample_parameters(table: MaterialTable, seed: int, index: int, dim: int = 2) -> dict:
    """Sample ``index`` of a dataset with ``seed``: materials, geometry, image (3, *G) and centres (n, dim).

    ``G`` is (64, 64) for ``dim=2`` and (32, 32, 32) for ``dim=3``.
    """
    dim = check_dim(dim)
    rng = np.random.default_rng([int(seed), int(index)])
    matrix, particle = table.sample(2, rng)
    fractions, diameters = RANGES[dim]
    f = rng.uniform(*fractions)
    radius = rng.uniform(*diameters) / 2.0
    n = particle_count(f, radius, dim=dim)
    centers = place_particles(n, radius, rng, dim=dim)
    mask = rasterize(centers, radius, RESOLUTIONS[dim], dim)
    image = compose(mask, table.values[matrix], table.values[particle]).astype(np.float32)
    return {"matrix": int(matrix), "particle": int(particle), "radius": radius, "volume_fraction_requested": f,
            "n_particles": n, "volume_fraction": float(mask.mean()), "image": image, "centers": centers}


def _table_id(path: Path) -> str:
    return json.dumps({"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})


def _create(path: Path, seed: int, target: int, table_path: Path, command: str, dim: int) -> None:
    grid, slots = (RESOLUTIONS[dim],) * dim, PARTICLE_SLOTS[dim]
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update({"format": FORMAT, "schema_version": SCHEMA_VERSION, "n_samples": 0, "target": target,
                        "resolution": RESOLUTIONS[dim], "dim": dim, "seed": seed, "command": command,
                        "table": _table_id(table_path), "library_version": __version__,
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        # 16 images per chunk in 2D (256 KB); 4 in 3D (1.5 MB), so that reading one sample stays cheap
        f.create_dataset("images", (0, 3, *grid), np.float32, maxshape=(None, 3, *grid),
                         chunks=(16 if dim == 2 else 4, 3, *grid), compression="gzip", compression_opts=6, shuffle=True)
        f.create_dataset("centers", (0, slots, dim), np.float32, maxshape=(None, slots, dim),
                         chunks=(1024 if dim == 2 else 64, slots, dim), compression="gzip", shuffle=True)
        for name, dtype in _COLUMNS.items():
            f.create_dataset(name, (0,), dtype, maxshape=(None,), chunks=(4096,))


def _append(path: Path, rows: list[dict]) -> int:
    with atomic_path(path) as tmp:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "r+") as f:
            n0, k = int(f.attrs["n_samples"]), len(rows)
            centers = np.full((k, *f["centers"].shape[1:]), np.nan, dtype=np.float32)
            for i, r in enumerate(rows):
                centers[i, : len(r["centers"])] = r["centers"]
            arrays = {"images": np.stack([r["image"] for r in rows]), "centers": centers}
            arrays.update({name: np.array([r[name] for r in rows], dtype=dt) for name, dt in _COLUMNS.items()})
            for name, data in arrays.items():
                f[name].resize(n0 + k, axis=0)
                f[name][n0:] = data
            f.attrs["n_samples"] = n0 + k
    return n0 + len(rows)


def build_dataset(path, n: int, seed: int = 0, *, table_path=None, batch: int = 250, command: str = "",
                  progress: bool = True, compute_k: bool = True, dim: int = 2) -> Path:
    """Create (or resume) a dataset of ``n`` samples at ``path``; returns the path.

    An existing file is resumed if it was made with the same seed, table and ``dim``; asking for more
    samples than it was started with extends it. ``compute_k`` stores each sample's bulk modulus
    (2D: about 0.04 s per sample; 3D: the voxel FE model, see `batch_bulk_modulus`); without it ``K`` is NaN.
    ``dim=3`` builds 32 x 32 x 32 voxel samples of spheres.
    """
    from ..progress import progress_bar

    path = Path(path)
    dim = check_dim(dim)
    if int(n) < 1:
        raise InvalidValueError(f"n: expected a positive number of samples, got {n}")
    table_path = default_table_path() if table_path is None else Path(table_path)
    table = load_table(table_path)
    if path.exists():
        info = dataset_info(path)
        if info["seed"] != int(seed) or json.loads(info["table"])["sha256"] != json.loads(_table_id(table_path))["sha256"]:
            raise FileFormatError(f"out: {str(path)!r} holds a dataset with seed {info['seed']} or another material table; "
                                  f"choose another file to build seed {seed}")
        if int(info.get("dim", 2)) != dim:
            raise FileFormatError(f"out: {str(path)!r} holds a {info.get('dim', 2)}D dataset; choose another file to "
                                  f"build a {dim}D one (--dim {dim})")
        done = info["n_samples"]
    else:
        _create(path, int(seed), int(n), table_path, command, dim)
        done = 0
    with progress_bar(f"composite dataset {path.name}", int(n), progress) as advance:
        advance(min(done, int(n)))
        while done < int(n):
            rows = [sample_parameters(table, seed, i, dim) for i in range(done, min(done + batch, int(n)))]
            if compute_k:
                images = np.stack([r["image"] for r in rows]).astype(np.float64)
                for r, k in zip(rows, batch_bulk_modulus(images[:, 0], images[:, 1], dim)):
                    r["K"] = float(k)
            else:
                for r in rows:
                    r["K"] = np.nan
            done = _append(path, rows)
            advance(len(rows))
    return path


def dataset_info(path) -> dict:
    """Attributes of a dataset file (raises FileFormatError if it is not one)."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise FileFormatError(f"path: {str(path)!r} is not a metasys composites dataset")
            return {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
    except OSError as exc:
        raise FileFormatError(f"path: {str(path)!r} is not a readable HDF5 file ({exc})") from None


@dataclass
class CompositeDataset:
    """A dataset loaded into memory: ``images`` (N, 3, *G) and the per-sample columns (N,); ``dim`` 2 or 3."""

    images: np.ndarray
    matrix: np.ndarray
    particle: np.ndarray
    radius: np.ndarray
    volume_fraction_requested: np.ndarray
    n_particles: np.ndarray
    volume_fraction: np.ndarray
    K: np.ndarray
    centers: np.ndarray
    attrs: dict

    def __len__(self) -> int:
        return len(self.K)

    @property
    def dim(self) -> int:
        """2 (64 x 64 pixel samples) or 3 (32^3 voxel samples); files written before 3D existed are 2D."""
        return int(self.attrs.get("dim", 2))


def load_dataset(path, images: bool = True) -> CompositeDataset:
    """Read a dataset file (``images=False`` skips the images: an empty (0, 3, *G) array)."""
    attrs = dataset_info(path)
    n = int(attrs["n_samples"])
    with h5py.File(path, "r") as f:
        cols = {name: f[name][:n] for name in _COLUMNS}
        imgs = f["images"][:n] if images else np.zeros((0, *f["images"].shape[1:]), np.float32)
        return CompositeDataset(images=imgs, centers=f["centers"][:n], attrs=attrs, **cols)
