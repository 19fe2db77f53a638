"""Diverse candidate sets (issue #6, paper Sec. 4.2 / Fig. 11): k-means against greedy, and batch speed.

    python benchmarks/candidates.py [--k 10] [--tolerance 0.03] [--batch 2500] [--plot DIR] [--model DIR] [--json out.json]

Prints, for two targets, the k-means and greedy sets' diversity (mean pairwise latent distance, in
the full latent space and in the plane of the first two principal components that k-means uses),
property MSE and largest error (paper: both MSE < 0.01, the k-means set clearly more diverse); the
same averaged over 200 random targets; and the time for a 50 x 50 grid of targets (2,500; target
< 30 s on 2 cores), split into neighbour search, k-means and cell reading.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

TARGETS = np.array([[0.3, 0.1, 0.3, 0.08], [0.6, 0.2, 0.4, 0.15]])


def cloud_targets(db, n, seed, noise=0.01):
    """Targets like a macro optimizer's: database property vectors plus N(0, noise) per component."""
    rng = np.random.default_rng(seed)
    return db.properties[rng.choice(len(db), n, replace=False)] + rng.normal(0.0, noise, (n, 4))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--tolerance", type=float, default=0.03)
    ap.add_argument("--batch", type=int, default=2500, help="targets in the timed batch (a square grid when possible)")
    ap.add_argument("--n-random", type=int, default=200, help="random targets for the averaged comparison")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", default=None, help="write Fig. 11-style images of the two targets' sets to this folder")
    ap.add_argument("--model", default=None, help="latent model directory (default: the shipped databases/vae)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from metasys.latent import LatentModel
    from metasys.selection.candidates import diverse_candidates, diversity

    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    t0 = time.perf_counter()
    lm = LatentModel.default() if args.model is None else LatentModel.load(args.model)
    db = lm.database
    lm.latent_codes()
    pca = lm.pca(2)
    t_load = time.perf_counter() - t0
    print(f"model + database + cached latent codes loaded in {t_load:.1f} s ({len(db)} cells)")

    def plane(z):
        return diversity(pca.transform(z.reshape(-1, z.shape[-1])).reshape(*z.shape[:-1], 2))

    kw = {"k": args.k, "model": lm, "tolerance": args.tolerance, "seed": args.seed}
    sets = {"kmeans (PCA plane, paper)": diverse_candidates(TARGETS, **kw),
            "kmeans (full latent)": diverse_candidates(TARGETS, space="latent", **kw),
            "greedy (k nearest)": diverse_candidates(TARGETS, method="greedy", **kw)}
    report = {"load_s": t_load, "targets": TARGETS.tolist(), "k": args.k, "tolerance": args.tolerance, "sets": {}}
    print(f"\ntwo targets, k = {args.k}, tolerance = {args.tolerance} (inf-norm, property units)")
    print(f"{'set':28s} {'target':>6s} {'diversity':>9s} {'div. PCA':>9s} {'MSE':>9s} {'max err':>8s} {'pool':>5s}")
    for name, c in sets.items():
        d, dp, mse = c.diversity(), plane(c.z), c.mse()
        report["sets"][name] = {"indices": c.indices.tolist(), "diversity": d.tolist(), "diversity_pca": dp.tolist(),
                                "mse": mse.tolist(), "max_error": c.errors.max(axis=1).tolist(), "n_within": c.n_within.tolist()}
        for i in range(len(TARGETS)):
            print(f"{name:28s} {i + 1:6d} {d[i]:9.3f} {dp[i]:9.3f} {mse[i]:9.2e} {c.errors[i].max():8.4f} {c.n_within[i]:5d}")

    q = cloud_targets(db, args.n_random, args.seed + 1)
    avg = {}
    for name, extra in (("kmeans", {}), ("kmeans-latent", {"space": "latent"}), ("greedy", {"method": "greedy"})):
        c = diverse_candidates(q, load_cells=False, **kw, **extra)
        cov = c.covered
        avg[name] = {"diversity": float(c.diversity()[cov].mean()), "diversity_pca": float(plane(c.z)[cov].mean()),
                     "mse": float(c.mse()[cov].mean()), "covered": float(cov.mean())}
    print(f"\n{args.n_random} random targets (database points + N(0, 0.01)), mean over the covered ones "
          f"({avg['kmeans']['covered']:.1%}):")
    for name, a in avg.items():
        print(f"  {name:14s} diversity {a['diversity']:.3f}  in the PCA plane {a['diversity_pca']:.3f}  MSE {a['mse']:.2e}")
    report["random_targets"] = avg

    side = int(round(np.sqrt(args.batch)))
    shape = (side, side) if side * side == args.batch else (args.batch,)
    grid = cloud_targets(db, args.batch, args.seed + 2).reshape(*shape, 4)
    print(f"\nbatch of {args.batch} targets {shape} (load average {os.getloadavg()[0]:.2f}):")
    report["batch"] = {}
    for name, extra in (("kmeans", {}), ("greedy", {"method": "greedy"})):
        t = time.perf_counter()
        c = diverse_candidates(grid, **kw, **extra)
        wall = time.perf_counter() - t
        tm = c.timings
        print(f"  {name:7s} {wall:6.2f} s  (neighbours {tm['neighbours']:.2f}, selection {tm['select']:.2f}, "
              f"cells {tm['cells']:.2f}, PCA/setup {tm['resolve']:.2f}); covered {c.covered.mean():.1%}, "
              f"cells {c.cells.shape}")
        report["batch"][name] = {"seconds": wall, **tm, "covered": float(c.covered.mean())}

    if args.plot:
        from pathlib import Path

        from metasys.selection.plots import plot_candidates

        out = Path(args.plot)
        for i in range(len(TARGETS)):
            chosen = {name: _one(c, i) for name, c in sets.items()}
            plot_candidates(list(chosen.values()), list(chosen), out / f"candidates_target{i + 1}.png", coords=pca.transform,
                            title=f"target {TARGETS[i].tolist()}: errors above the cells")
            print(f"wrote {out / f'candidates_target{i + 1}.png'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


def _one(c, i):
    """The candidates of target i as a single-target Candidates."""
    from dataclasses import replace

    return replace(c, indices=c.indices[i], cells=c.cells[i], properties=c.properties[i], errors=c.errors[i],
                   covered=c.covered[i], targets=c.targets[i], z=c.z[i], n_within=c.n_within[i])


if __name__ == "__main__":
    main()
