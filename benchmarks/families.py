"""Metamaterial families along the gradation of paper Eq. 7 (issue #6, Sec. 4.3 / Fig. 12-13).

    python benchmarks/families.py [--n 5] [--delta 0.03] [--interpolate 10] [--extrapolate 0.0] [--model DIR] [--json out.json]

Prints the number of cells near the gradation, the disjoint families found (members, C11 range),
each family's deviation from the gradation curve (max and mean Euclidean distance in property space,
in units of the solid C11 = 1.31596), the same for ``--interpolate`` members per family decoded
along the latent path and homogenized, and the run times.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--delta", type=float, default=0.03)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--n-ends", type=int, default=50)
    ap.add_argument("--link", default="latent")
    ap.add_argument("--interpolate", type=int, default=10)
    ap.add_argument("--extrapolate", type=float, default=0.0)
    ap.add_argument("--model", default=None, help="latent model directory (default: the shipped databases/vae)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from metasys.latent import LatentModel
    from metasys.selection.families import family_graph, paper_gradation

    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    t0 = time.perf_counter()
    lm = LatentModel.default() if args.model is None else LatentModel.load(args.model)
    lm.latent_codes()
    t_load = time.perf_counter() - t0
    grad = paper_gradation()
    c11 = grad.C11_M
    t0 = time.perf_counter()
    fg = family_graph(grad, delta=args.delta, k=args.k, n_ends=args.n_ends, model=lm, link=args.link)
    t_graph = time.perf_counter() - t0
    t0 = time.perf_counter()
    fams = fg.families(args.n)
    t_paths = time.perf_counter() - t0
    all_idx = np.concatenate([f.indices for f in fams])
    disjoint = len(np.unique(all_idx)) == len(all_idx)
    print(f"model loaded in {t_load:.1f} s; {len(fg.indices)} of {len(lm.database)} cells within delta = {args.delta} "
          f"({args.delta / c11:.4f} of solid C11); graph {fg.graph.number_of_edges()} edges built in {t_graph:.2f} s; "
          f"{len(fams)} families in {t_paths:.2f} s; disjoint: {disjoint}")
    report = {"delta": args.delta, "graph_nodes": int(len(fg.indices)), "load_s": t_load, "graph_s": t_graph,
              "paths_s": t_paths, "disjoint": bool(disjoint), "families": []}
    print(f"\ndeviation from the gradation curve in units of the solid C11 ({c11}):")
    print(f"{'family':>6s} {'cells':>5s} {'C11 range':>13s} {'max':>7s} {'mean':>7s} {'latent len':>10s} | "
          f"{'decoded':>7s} {'max':>7s} {'mean':>7s} {'C11 range':>13s}")
    t_interp = 0.0
    dev_all, dec_all, dec_c11 = [], [], []
    for r, f in enumerate(fams):
        entry = {"indices": f.indices.tolist(), "deviation_max": float(f.distance.max() / c11),
                 "deviation_mean": float(f.distance.mean() / c11), "latent_length": f.path_length()}
        dev_all.append(f.distance / c11)
        line = (f"{r + 1:6d} {len(f):5d} {f.properties[0, 0] / c11:6.3f}-{f.properties[-1, 0] / c11:6.3f} "
                f"{entry['deviation_max']:7.4f} {entry['deviation_mean']:7.4f} {entry['latent_length']:10.2f} | ")
        if args.interpolate:
            t = time.perf_counter()
            new = f.interpolate(args.interpolate, extrapolate=args.extrapolate)
            t_interp += time.perf_counter() - t
            dec_all.append(new.distance / c11)
            dec_c11.append(new.properties[:, 0] / c11)
            entry.update(decoded_max=float(new.distance.max() / c11), decoded_mean=float(new.distance.mean() / c11),
                         decoded_c11=(new.properties[:, 0] / c11).tolist())
            line += (f"{len(new):7d} {entry['decoded_max']:7.4f} {entry['decoded_mean']:7.4f} "
                     f"{new.properties[:, 0].min() / c11:6.3f}-{new.properties[:, 0].max() / c11:6.3f}")
        report["families"].append(entry)
        print(line)
    dev_all = np.concatenate(dev_all)
    print(f"\nall {len(dev_all)} database members: deviation max {dev_all.max():.4f}, mean {dev_all.mean():.4f}")
    if dec_all:
        dec_all = np.concatenate(dec_all)
        print(f"all {len(dec_all)} decoded members (extrapolate {args.extrapolate}): deviation max {dec_all.max():.4f}, "
              f"mean {dec_all.mean():.4f}, median {np.median(dec_all):.4f}; decode + homogenize {t_interp:.1f} s")
        dec_c11 = np.concatenate(dec_c11)
        print(f"decoded cells that do not carry load (C11 < 0.001 of solid: the thresholded decoding is not connected "
              f"across the cell): {int((dec_c11 < 1e-3).sum())} of {len(dec_c11)}")
        report["decoded_s"] = t_interp
    if fams:
        from metasys.selection.families import family_candidates

        targets = grad(np.random.default_rng(0).uniform(0.0, 1.0, (15, 40)))
        t = time.perf_counter()
        c = family_candidates(fams, targets)
        t_fc = time.perf_counter() - t
        e = c.errors / c11
        print(f"family_candidates for a 15 x 40 grid of gradation targets: {c.k} labels per element in {t_fc:.1f} s; "
              f"best label error mean {e.min(-1).mean():.4f} (members only {e[..., ::2].min(-1).mean():.4f}, decoded only "
              f"{e[..., 1::2].min(-1).mean():.4f}) of solid C11; covered {c.covered.mean():.1%}")
        report["family_candidates"] = {"seconds": t_fc, "best_error_mean": float(e.min(-1).mean()),
                                       "covered": float(c.covered.mean())}
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
