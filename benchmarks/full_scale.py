"""Benchmark of the full-scale solve (`metasys.fem.full_scale.solve_full_scale`).

Tiles a connected, mirror-symmetric 50 x 50 cell (a square frame around a round hole, 55% solid;
``--cell solid`` for the worst case of every pixel solid) over three macro grids and applies the
smiley-like conditions (left edge u_x = +0.5, right edge u_x = -0.5, nodes (0, H // 2) and
(W, H // 2) u_y = 0). Each size runs in a fresh subprocess so that its peak resident memory
(ru_maxrss) is its own. Target (DESIGN.md section 6): 6.25M pixels in under 5 min and 16 GB on a
2-core, 24 GB machine.

    python benchmarks/full_scale.py                   # all sizes
    python benchmarks/full_scale.py --sizes 0.3M,1.5M
    python benchmarks/full_scale.py --sizes 6.25M --cell solid
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

SIZES = {"0.3M": (30, 4), "1.5M": (25, 25), "6.25M": (50, 50)}
"""Size name -> macro grid (W, H); 50 x 50 pixels per cell."""


def benchmark_cell(kind: str = "frame") -> np.ndarray:
    """(50, 50) bool cell: ``"frame"``, a square frame around a round hole of diameter 0.76 (55% solid),
    or ``"solid"`` (every pixel solid: the most unknowns a structure of this size can have)."""
    if kind == "solid":
        return np.ones((50, 50), dtype=bool)
    y, x = np.mgrid[0:50, 0:50] + 0.5
    return (x - 25) ** 2 + (y - 25) ** 2 > (0.378 * 50) ** 2


def run_one(name: str, tol: float, cell: str) -> dict:
    """Solve one size in this process; returns its figures."""
    from metasys.fem.boundary import Prescribed
    from metasys.fem.full_scale import solve_full_scale

    width, height = SIZES[name]
    structure = np.tile(benchmark_cell(cell), (height, width))
    conditions = [
        Prescribed("left", "x", 0.5),
        Prescribed("right", "x", -0.5),
        Prescribed((0, height // 2), "y", 0.0),
        Prescribed((width, height // 2), "y", 0.0),
    ]
    start = time.perf_counter()
    result = solve_full_scale(structure, conditions, tol=tol)
    total = time.perf_counter() - start
    return {
        "size": name,
        "grid": f"{width}x{height}",
        "pixels": int(structure.size),
        "solid": float(structure.mean()),
        "dofs": result.n_dofs,
        **{key: round(value, 2) for key, value in result.timings.items()},
        "total": round(total, 2),
        "iterations": result.iterations,
        "residual": result.residual,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux reports KiB
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"comma-separated subset of {', '.join(SIZES)}")
    parser.add_argument("--tol", type=float, default=1e-8, help="relative residual of the CG solve")
    parser.add_argument("--cell", choices=("frame", "solid"), default="frame", help="tiled cell (see benchmark_cell)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one size, print JSON
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_one(args.worker, args.tol, args.cell)))
        return
    names = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in names if s not in SIZES]
    if unknown:
        parser.error(f"--sizes: unknown {unknown}; choose from {list(SIZES)}")
    header = f"{'size':>6} {'grid':>6} {'pixels':>10} {'solid':>6} {'DOFs':>10} {'assembly':>9} {'setup':>7} {'solve':>7} " \
             f"{'total':>7} {'iters':>5} {'residual':>9} {'peak MB':>8}"
    print(header, flush=True)
    for name in names:
        command = [sys.executable, __file__, "--worker", name, "--tol", str(args.tol), "--cell", args.cell]
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode != 0:
            print(f"{name:>6} failed:\n{run.stderr}", flush=True)
            continue
        r = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"{r['size']:>6} {r['grid']:>6} {r['pixels']:>10,} {r['solid']:>6.1%} {r['dofs']:>10,} {r['assembly']:>8.1f}s "
              f"{r['setup']:>6.1f}s {r['solve']:>6.1f}s {r['total']:>6.1f}s {r['iterations']:>5} {r['residual']:>9.1e} "
              f"{r['peak_mb']:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
