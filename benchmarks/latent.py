"""Figures of a trained latent model (issue #5) on its held-out cells.

    python benchmarks/latent.py [--model databases/vae] [--db databases/default.h5] [--json out.json]

Prints: pixel reconstruction accuracy of thresholded decodings (target >= 98%), regressor R^2 per
property (target >= 0.97), fraction of prior samples that decode to valid cells (paper: ~9 in 10),
fraction of random held-out cells whose homogenized C11 (recomputed on the decoded binary cells)
increases monotonically over 5 steps along the C11 arrow (target >= 80%), and the training time.
Two reference figures put the pixel accuracy in context: the accuracy of the decoder at codes
refined per cell (`LatentModel.refine_codes`: what a perfect encoder could give with this decoder)
and that of a linear code of the same quarters (PCA fitted on training cells) with 16, 32, 64 components.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np


def r2(pred, true):
    return 1.0 - ((pred - true) ** 2).sum(0) / ((true - true.mean(0)) ** 2).sum(0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model directory (default: the shipped databases/vae)")
    ap.add_argument("--db", default=None, help="database (default: the one the model was trained on)")
    ap.add_argument("--n-prior", type=int, default=1000)
    ap.add_argument("--n-arrow", type=int, default=50)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--step-sizes", default="0.25,0.5,1.0", help="arrow step sizes (unit arrow) to evaluate")
    ap.add_argument("--refine", type=int, default=500, help="held-out cells whose codes are refined (0: skip)")
    ap.add_argument("--refine-steps", type=int, default=300)
    ap.add_argument("--pca", default="16,32,64", help="PCA components of the linear reference ('': skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    from metasys import Database, homogenize
    from metasys.database.repair import is_valid
    from metasys.latent import LatentModel

    db = None if args.db is None else Database.open(args.db)
    lm = LatentModel.default(database=db) if args.model is None else LatentModel.load(args.model, database=db)
    db = lm.database
    rng = np.random.default_rng(args.seed)
    if db.fingerprint == lm.meta["database_fingerprint"]:
        held = lm.validation_indices
        what = f"held-out split of the training database ({len(held)} cells)"
    else:
        warnings.warn("database differs from the training database: using a random 10% of it", stacklevel=1)
        held = np.sort(rng.choice(len(db), max(1, len(db) // 10), replace=False))
        what = f"random 10% of {db.path} ({len(held)} cells)"
    res = {"model": str(lm.directory), "database": str(db.path), "evaluated_on": what}
    print(f"model {lm.directory}  database {db.path}\nevaluated on: {what}")

    t = time.time()
    cells = db.get_cells(held)
    z = lm.encode(cells)
    prob = lm.decode(z)
    acc05 = ((prob > 0.5) == cells).mean()
    acc09 = ((prob > 0.9) == cells).mean()
    binary = lm.to_cells(z)
    acc_cells = (binary == cells).mean()
    per_cell = (binary == cells).mean(axis=(1, 2))
    res["reconstruction"] = {"pixel_accuracy_threshold_0.5": float(acc05), "pixel_accuracy_threshold_0.9": float(acc09),
                             "pixel_accuracy_to_cells": float(acc_cells),
                             "to_cells_per_cell_median": float(np.median(per_cell)),
                             "to_cells_valid_fraction": float(is_valid(binary).mean())}
    print(f"reconstruction pixel accuracy: threshold 0.5 {100 * acc05:.2f}%, threshold 0.9 {100 * acc09:.2f}%, "
          f"to_cells (0.9 + symmetrize + repair) {100 * acc_cells:.2f}% (per-cell median {100 * np.median(per_cell):.2f}%); "
          f"valid reconstructions {100 * is_valid(binary).mean():.1f}%  (target >= 98%)")

    aux = np.random.default_rng([args.seed, 1])       # the arrow's cells stay those drawn from rng
    if args.refine:
        sub = np.sort(aux.choice(len(held), size=min(args.refine, len(held)), replace=False))
        zr = lm.refine_codes(cells[sub], steps=args.refine_steps)
        acc_enc = ((prob[sub] > 0.5) == cells[sub]).mean()
        acc_ref = ((lm.decode(zr) > 0.5) == cells[sub]).mean()
        res["refined_codes"] = {"cells": int(len(sub)), "steps": args.refine_steps, "pixel_accuracy_encoder": float(acc_enc),
                                "pixel_accuracy_refined": float(acc_ref)}
        print(f"decoder at refined codes ({len(sub)} held-out cells, {args.refine_steps} Adam steps): "
              f"{100 * acc_enc:.2f}% -> {100 * acc_ref:.2f}% (threshold 0.5)")
    if args.pca:
        from sklearn.decomposition import PCA

        from metasys.latent.model import to_quarters
        from metasys.latent.train import load_quarters

        train = np.setdiff1d(np.arange(len(db)), held)
        fit = np.sort(aux.choice(train, size=min(30_000, len(train)), replace=False))
        xq = load_quarters(db, fit).reshape(len(fit), -1).astype(np.float32)
        hq = to_quarters(cells).reshape(len(held), -1)
        res["pca_reference"] = {}
        for k in (int(c) for c in args.pca.split(",")):
            pca = PCA(k, random_state=args.seed).fit(xq)
            acc = ((pca.inverse_transform(pca.transform(hq)) > 0.5) == (hq > 0.5)).mean()
            res["pca_reference"][str(k)] = float(acc)
            print(f"linear reference: PCA with {k} components (fitted on {len(fit)} training quarters), held-out pixel "
                  f"accuracy {100 * acc:.2f}%")

    pred = lm.predict(z)
    true = np.asarray(db.properties)[held]
    scores = r2(pred, true)
    res["r2"] = dict(zip(("C11", "C12", "C22", "C33"), map(float, scores)))
    print("regressor R^2 (posterior mean -> properties): " + "  ".join(f"{k} {v:.4f}" for k, v in res["r2"].items())
          + "  (target >= 0.97)")

    zp = lm.sample_prior(args.n_prior, seed=args.seed)
    valid09 = is_valid(lm.to_cells(zp)).mean()
    valid05 = is_valid(lm.to_cells(zp, threshold=0.5)).mean()
    res["prior_valid_fraction"] = {"threshold_0.9": float(valid09), "threshold_0.5": float(valid05)}
    print(f"prior samples decoding to valid cells ({args.n_prior}): threshold 0.9 {100 * valid09:.1f}%, "
          f"threshold 0.5 {100 * valid05:.1f}%  (paper: about 90%)")

    pick = rng.choice(held, size=min(args.n_arrow, len(held)), replace=False)
    z0 = lm.encode(db.get_cells(np.sort(pick)))
    arrow = lm.arrow("C11")
    res["c11_arrow"] = {}
    for size in (float(s) for s in args.step_sizes.split(",")):
        path = z0[:, None, :] + (np.arange(args.steps + 1) * size)[None, :, None] * arrow[None, None, :]
        c = lm.to_cells(path.reshape(-1, path.shape[-1]))
        c11 = homogenize(c)[:, 0, 0].reshape(len(z0), args.steps + 1)
        d = np.diff(c11, axis=1)
        strict = (d > 0).all(1).mean()
        weak = ((d >= -1e-9).all(1) & (c11[:, -1] > c11[:, 0])).mean()
        res["c11_arrow"][str(size)] = {"strictly_increasing": float(strict), "non_decreasing_and_increased": float(weak),
                                       "mean_c11_start": float(c11[:, 0].mean()), "mean_c11_end": float(c11[:, -1].mean())}
        print(f"C11 arrow, {args.steps} steps of {size}: strictly increasing {100 * strict:.0f}%, "
              f"non-decreasing with a net increase {100 * weak:.0f}% of {len(z0)} cells; mean C11 "
              f"{c11[:, 0].mean():.3f} -> {c11[:, -1].mean():.3f}  (target >= 80%)")

    tr = lm.meta.get("training", {})
    res["training"] = tr
    print(f"training: {tr.get('epochs_run')} epochs, {tr.get('status')}, {tr.get('training_time_s')} s "
          f"({float(tr.get('training_time_s') or 0) / 60:.1f} min); command: {lm.meta.get('command')}")
    print(f"(benchmark took {time.time() - t:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
