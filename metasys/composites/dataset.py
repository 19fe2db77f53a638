"""Datasets of random particle-matrix microstructures (the paper's training and target-selection sets).

Sample ``i`` of a dataset with seed ``s`` is drawn from ``numpy.random.default_rng([s, i])`` alone, so a
dataset is the same however often its build was interrupted and resumed. Per sample: matrix and
particle materials drawn chunk-balanced from the table (a uniform non-empty chunk, then a uniform
material in it; the same distribution for both), volume fraction ``U[0.05, 0.5]``, diameter
``U[0.15, 0.4]`` of the side, ``round(f / (pi r^2))`` particles at random non-overlapping positions.

HDF5 layout (schema version 1)::

    /                   attrs: format, schema_version, n_samples, target, resolution, seed, command,
                               table (JSON: path, sha256), library_version, created
    /images             (N, 3, 64, 64) float32 (E [GPa], nu, rho [g/cm^3]) per pixel, row 0 at the bottom
    /matrix, /particle  (N,) int32 indices into the material table
    /radius             (N,) float64 particle radius, fraction of the side
    /volume_fraction_requested (N,) float64 sampled f
    /n_particles        (N,) int32
    /volume_fraction    (N,) float64 particle pixels / all pixels
    /centers            (N, 32, 2) float32 particle centres (x, y), NaN-padded
    /K                  (N,) float64 bulk modulus of the sample (`bulk_modulus`), GPa

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
from .homogenize import bulk_modulus
from .materials import MaterialTable, default_table_path, load_table
from .microstructure import RESOLUTION, compose, particle_count, place_circles, rasterize

FORMAT = "metasys-composites-dataset"
SCHEMA_VERSION = 1
MAX_PARTICLES = 32
VOLUME_FRACTION = (0.05, 0.5)
DIAMETER = (0.15, 0.4)
_COLUMNS = {"matrix": np.int32, "particle": np.int32, "radius": np.float64, "volume_fraction_requested": np.float64,
            "n_particles": np.int32, "volume_fraction": np.float64, "K": np.float64}


def sample_parameters(table: MaterialTable, seed: int, index: int) -> dict:
    """Sample ``index`` of a dataset with ``seed``: materials, geometry, mask, image (3, 64, 64) and centres."""
    rng = np.random.default_rng([int(seed), int(index)])
    matrix, particle = table.sample(2, rng)
    f = rng.uniform(*VOLUME_FRACTION)
    radius = rng.uniform(*DIAMETER) / 2.0
    n = particle_count(f, radius)
    centers = place_circles(n, radius, rng)
    mask = rasterize(centers, radius, RESOLUTION)
    image = compose(mask, table.values[matrix], table.values[particle]).astype(np.float32)
    return {"matrix": int(matrix), "particle": int(particle), "radius": radius, "volume_fraction_requested": f,
            "n_particles": n, "volume_fraction": float(mask.mean()), "image": image, "centers": centers}


def _table_id(path: Path) -> str:
    return json.dumps({"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})


def _create(path: Path, seed: int, target: int, table_path: Path, command: str) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update({"format": FORMAT, "schema_version": SCHEMA_VERSION, "n_samples": 0, "target": target,
                        "resolution": RESOLUTION, "seed": seed, "command": command, "table": _table_id(table_path),
                        "library_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        f.create_dataset("images", (0, 3, RESOLUTION, RESOLUTION), np.float32, maxshape=(None, 3, RESOLUTION, RESOLUTION),
                         chunks=(16, 3, RESOLUTION, RESOLUTION), compression="gzip", compression_opts=6, shuffle=True)
        f.create_dataset("centers", (0, MAX_PARTICLES, 2), np.float32, maxshape=(None, MAX_PARTICLES, 2),
                         chunks=(1024, MAX_PARTICLES, 2), compression="gzip", shuffle=True)
        for name, dtype in _COLUMNS.items():
            f.create_dataset(name, (0,), dtype, maxshape=(None,), chunks=(4096,))


def _append(path: Path, rows: list[dict]) -> int:
    with atomic_path(path) as tmp:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "r+") as f:
            n0, k = int(f.attrs["n_samples"]), len(rows)
            centers = np.full((k, MAX_PARTICLES, 2), np.nan, dtype=np.float32)
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
                  progress: bool = True, compute_k: bool = True) -> Path:
    """Create (or resume) a dataset of ``n`` samples at ``path``; returns the path.

    An existing file is resumed if it was made with the same seed and table; asking for more
    samples than it was started with extends it. ``compute_k`` stores each sample's bulk modulus
    (about 0.04 s per sample); without it ``K`` is NaN.
    """
    from ..progress import progress_bar

    path = Path(path)
    if int(n) < 1:
        raise InvalidValueError(f"n: expected a positive number of samples, got {n}")
    table_path = default_table_path() if table_path is None else Path(table_path)
    table = load_table(table_path)
    if path.exists():
        info = dataset_info(path)
        if info["seed"] != int(seed) or json.loads(info["table"])["sha256"] != json.loads(_table_id(table_path))["sha256"]:
            raise FileFormatError(f"out: {str(path)!r} holds a dataset with seed {info['seed']} or another material table; "
                                  f"choose another file to build seed {seed}")
        done = info["n_samples"]
    else:
        _create(path, int(seed), int(n), table_path, command)
        done = 0
    with progress_bar(f"composite dataset {path.name}", int(n), progress) as advance:
        advance(min(done, int(n)))
        while done < int(n):
            rows = [sample_parameters(table, seed, i) for i in range(done, min(done + batch, int(n)))]
            if compute_k:
                images = np.stack([r["image"] for r in rows]).astype(np.float64)
                for r, k in zip(rows, bulk_modulus(images[:, 0], images[:, 1])):
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
    """A dataset loaded into memory: ``images`` (N, 3, 64, 64) and the per-sample columns (N,)."""

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


def load_dataset(path, images: bool = True) -> CompositeDataset:
    """Read a dataset file (``images=False`` skips the images: an empty (0, 3, 64, 64) array)."""
    attrs = dataset_info(path)
    n = int(attrs["n_samples"])
    with h5py.File(path, "r") as f:
        cols = {name: f[name][:n] for name in _COLUMNS}
        imgs = f["images"][:n] if images else np.zeros((0, 3, RESOLUTION, RESOLUTION), np.float32)
        return CompositeDataset(images=imgs, centers=f["centers"][:n], attrs=attrs, **cols)
