"""Benchmark of the structure exports (`metasys.pipeline.export`): time and file size per format.

Builds a structure of random mirror-symmetric 50 x 50 cells (each a thresholded smooth random
field on a 25 x 25 quarter, mirrored; about half solid, with holes and diagonal contacts) for a
4 x 30 grid (200 x 1500 pixels, bridge-sized) and a 50 x 50 grid (2500 x 2500 pixels, smiley-sized),
with a smooth synthetic displacement field, and writes every format into a temporary directory:
``.npy``, ``.png``, deformed ``.png`` (with the bridge/smiley problem's targets), ``.svg``,
``.vtu`` and ``.stl``. Prints seconds, file size, and for the STL the triangle count.

    python benchmarks/export.py                      # both sizes
    python benchmarks/export.py --sizes 200x1500
    python benchmarks/export.py --cells solid        # every pixel solid
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from metasys import problems
from metasys.pipeline.export import export_structure, stl_triangles

SIZES = {"200x1500": (30, 4, "bridge"), "2500x2500": (50, 50, "smiley")}


def random_cells(n: int, seed: int = 0, smoothing: float = 2.0) -> np.ndarray:
    """(n, 50, 50) bool cells: thresholded smooth random quarters, mirrored about both mid-lines."""
    rng = np.random.default_rng(seed)
    q = ndimage.gaussian_filter(rng.standard_normal((n, 25, 25)), (0, smoothing, smoothing), mode="wrap")
    q = q > np.median(q, axis=(1, 2), keepdims=True)
    half = np.concatenate([q, q[:, :, ::-1]], axis=2)
    return np.concatenate([half, half[:, ::-1]], axis=1)


def structure(width: int, height: int, kind: str, seed: int = 0) -> np.ndarray:
    if kind == "solid":
        return np.ones((50 * height, 50 * width), dtype=bool)
    cells = random_cells(width * height, seed)
    return cells.reshape(height, width, 50, 50).transpose(0, 2, 1, 3).reshape(50 * height, 50 * width)


def displacement(s: np.ndarray) -> np.ndarray:
    ny, nx = s.shape
    y, x = np.mgrid[0 : ny + 1, 0 : nx + 1] / 50.0
    w = nx / 50.0
    u = np.stack([-0.3 * x / w, 0.15 * (1 - np.cos(2 * np.pi * x / w))], axis=2)
    used = np.zeros((ny + 1, nx + 1), dtype=bool)
    for dy in (0, 1):
        for dx in (0, 1):
            used[dy : dy + ny, dx : dx + nx] |= s
    u[~used] = np.nan
    return u


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--cells", default="random", choices=["random", "solid"])
    args = parser.parse_args()
    for name in args.sizes.split(","):
        width, height, problem_name = SIZES[name]
        s = structure(width, height, args.cells)
        u = displacement(s)
        problem = getattr(problems, problem_name)()
        print(f"== {name} pixels ({width} x {height} cells, {args.cells}), {int(s.sum())} solid pixels")
        with tempfile.TemporaryDirectory() as tmp:
            jobs = [("structure.npy", {}), ("structure.png", {}),
                    ("deformed.png", {"deformed": True, "displacement": u, "problem": problem}),
                    ("structure.svg", {}), ("structure.vtu", {"displacement": u}), ("structure.stl", {})]
            for fname, kwargs in jobs:
                t0 = time.perf_counter()
                path = export_structure(s, Path(tmp) / fname, **kwargs)
                dt = time.perf_counter() - t0
                extra = ""
                if fname.endswith(".stl"):
                    n_tri = (path.stat().st_size - 84) // 50
                    extra = f", {n_tri} triangles ({n_tri / max(int(s.sum()), 1):.2f} per solid pixel)"
                print(f"{fname:15s} {dt:7.2f} s  {path.stat().st_size / 1e6:9.2f} MB{extra}")
            t0 = time.perf_counter()
            tri = stl_triangles(s)
            print(f"{'(stl mesh only)':15s} {time.perf_counter() - t0:7.2f} s  {len(tri)} triangles")


if __name__ == "__main__":
    main()
