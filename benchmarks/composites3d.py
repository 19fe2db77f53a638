"""The 3D composite generator and backprojection: generation time and recovery of clean 32^3 voxel samples.

Prints the wall time to generate ``--n`` 3D dataset samples (`sample_parameters(..., dim=3)`: chunk-balanced
materials, sphere placement, rasterization; no bulk modulus) and, on ``--recover`` clean samples of another seed,
the backprojection's accuracy: share of samples whose matrix and particle materials are recovered exactly, and the
median / 90 % / max relative error of the volume fraction (against the voxel share, the requested f and n V(r))
and of the radius. Usage: ``python benchmarks/composites3d.py [--n 1000] [--recover 50] [--seed 12]``.

Measured 2026-12-07 on the 2-core machine shared with other workers (``nice -n 19``; figures move with the load):
see docs/composites.md, section "3D".
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def generation(n: int, seed: int) -> None:
    from metasys.composites import load_table
    from metasys.composites.dataset import sample_parameters

    table = load_table()
    sample_parameters(table, seed, 0, dim=3)  # compile the numba relaxation outside the timing
    times = np.empty(n)
    t0 = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        sample_parameters(table, seed, i, dim=3)
        times[i] = time.perf_counter() - t
    total = time.perf_counter() - t0
    print(f"generate {n} 3D samples (seed {seed}): {total:.1f} s, {1000 * total / n:.1f} ms per sample "
          f"(median {1000 * np.median(times):.1f} ms, max {1000 * times.max():.0f} ms)")


def recovery(n: int, seed: int) -> None:
    from metasys.composites import backproject, load_table
    from metasys.composites.dataset import sample_parameters

    table = load_table()
    rows, spent = [], 0.0
    for i in range(n):
        s = sample_parameters(table, seed, i, dim=3)
        t = time.perf_counter()
        b = backproject(s["image"], table)
        spent += time.perf_counter() - t
        same = bool(np.array_equal(table.values[s["matrix"]], table.values[s["particle"]]))
        exact = (b.matrix, b.particle) == (s["matrix"], s["particle"]) or (same and b.volume_fraction == 0.0)
        volume = s["n_particles"] * 4.0 / 3.0 * np.pi * s["radius"] ** 3
        rows.append((exact, same, b.volume_fraction, s["volume_fraction"], s["volume_fraction_requested"], volume,
                     b.radius, s["radius"], b.detected))
    r = np.array(rows, dtype=float)
    geometric = r[:, 1] == 0  # one material: no particles to measure
    print(f"backproject {n} clean 3D samples (seed {seed}, {int((~geometric).sum())} with matrix = particle): "
          f"{spent / n:.3f} s each; materials exact {r[:, 0].mean():.3f}; spheres detected {r[geometric, 8].mean():.3f}")
    g = r[geometric]
    for name, est, ref in (("volume fraction vs voxel share", g[:, 2], g[:, 3]),
                           ("volume fraction vs requested f", g[:, 2], g[:, 4]),
                           ("volume fraction vs n 4/3 pi r^3", g[:, 2], g[:, 5]), ("radius", g[:, 6], g[:, 7])):
        e = np.abs(est - ref) / ref
        print(f"  {name:32s} rel. error median {np.median(e):.4f}  "
              f"90% {np.quantile(e, 0.9):.4f}  max {e.max():.4f}")
    print(f"  radius signed error {32 * np.mean(g[:, 6] - g[:, 7]):+.3f} voxels (sd {32 * np.std(g[:, 6] - g[:, 7]):.3f})")


def figures(out: str, index: int = 4) -> None:
    """The docs figures: mid-slices and a 3D render of 3D dataset sample ``index`` of seed 0."""
    from metasys.composites import load_table
    from metasys.composites.dataset import sample_parameters
    from metasys.composites.plots import render_3d, slice_plot

    table = load_table()
    s = sample_parameters(table, 0, index, dim=3)
    m, p = table.names[s["matrix"]], table.names[s["particle"]]
    title = (f"3D sample {index} (seed 0): {s['n_particles']} spheres, r = {s['radius']:.3f}, "
             f"f = {s['volume_fraction']:.3f}\nmatrix {m}, particles {p}")
    print(slice_plot(s["image"], f"{out}/composites-3d-slices.png", title=title))
    print(render_3d(s["image"], f"{out}/composites-3d-render.png", title=title))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="3D samples to generate (0: skip)")
    parser.add_argument("--recover", type=int, default=50, help="clean 3D samples to backproject (0: skip)")
    parser.add_argument("--seed", type=int, default=12, help="seed of the backprojected samples (11 calibrated it)")
    parser.add_argument("--figures", default="", help="directory for the docs figures (docs/composites-3d-*.png)")
    args = parser.parse_args()
    if args.figures:
        figures(args.figures)
    if args.n:
        generation(args.n, 0)
    if args.recover:
        recovery(args.recover, args.seed)


if __name__ == "__main__":
    main()
