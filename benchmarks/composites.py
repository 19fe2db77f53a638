"""Throughput of the composite designer's forward model and its pieces, on 64 x 64 particle-matrix samples.

Prints samples per second for: the bulk modulus (value only) and value + adjoint gradient with
respect to every pixel's E and nu (`metasys.composites.bulk_modulus_and_gradient`), microstructure
sampling (placement of the circles), backprojection, and K_theta (10 re-sampled microstructures).
Usage: ``python benchmarks/composites.py [--samples 40]``.

With ``--dataset FILE`` it instead prints the dataset's K statistics and the five targets (1- to
99-percentile) and checks the backprojection on its first ``--recover`` clean samples (as the paper's
appendix B does on its training set): materials, volume fraction and radius errors.

Measured 2026-12-07 on the 2-core machine shared with other jobs (load average 7 - 11; the figures move
with it): value 10 - 25 samples/s, value + gradient 9 - 24 samples/s (about 40 - 110 ms per sample; one
SuperLU factor serves the forward and both adjoint solves, so the gradient costs about 5% more than the
value), microstructure sampling 80 - 230 samples/s, backprojection 2 - 6 samples/s (0.18 s per sample over
the 1,000-sample check), K_theta 0.8 - 1.2 designs/s.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def rate(label: str, n: int, fn) -> float:
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    print(f"{label:<44s} {n:5d} samples  {seconds:8.2f} s  {n / seconds:8.1f} samples/s  {1e3 * seconds / n:7.1f} ms/sample")
    return n / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--dataset", default=None, help="a dataset file: K statistics, targets, backprojection check")
    parser.add_argument("--recover", type=int, default=1000, help="samples backprojected with --dataset")
    args = parser.parse_args()
    if args.dataset:
        return dataset_figures(args.dataset, args.recover)
    from metasys.composites import backproject, bulk_modulus, bulk_modulus_and_gradient, k_theta, load_table
    from metasys.composites.dataset import sample_parameters

    table = load_table()
    n = args.samples
    bulk_modulus(np.full((64, 64), 1.0), np.full((64, 64), 0.3))  # pattern set-up, numba compilation
    sample_parameters(table, 0, 0)
    rows = []
    rate("sample microstructures (dataset rule)", n, lambda: rows.extend(sample_parameters(table, 0, i) for i in range(n)))
    images = np.stack([r["image"] for r in rows]).astype(np.float64)
    rate("bulk modulus, value", n, lambda: bulk_modulus(images[:, 0], images[:, 1]))
    rate("bulk modulus, value + gradient (E and nu)", n, lambda: bulk_modulus_and_gradient(images[:, 0], images[:, 1]))
    m = max(4, n // 4)
    results = []
    rate("backprojection (GMM + skeleton)", m, lambda: results.extend(backproject(im, table) for im in images[:m]))
    rate("K_theta (10 re-sampled microstructures)", m // 2, lambda: [k_theta(b, table) for b in results[: m // 2]])


def dataset_figures(path: str, n_recover: int) -> None:
    from metasys.composites import backproject, load_table, targets_from
    from metasys.composites.dataset import load_dataset

    data = load_dataset(path, images=n_recover > 0)
    k = data.K
    print(f"{path}: {len(data)} samples, seed {data.attrs['seed']}")
    print(f"K: min {k.min():.4g}  median {np.median(k):.4g}  max {k.max():.4g}  "
          f"1/99-percentile {np.percentile(k, 1):.4g} / {np.percentile(k, 99):.4g}")
    print("targets: " + " / ".join(f"{t:.1f}" for t in targets_from(k)) + "   (paper: 4.8 / 86.6 / 168.5 / 250.4 / 332.2)")
    print(f"particles: {data.n_particles.min()}-{data.n_particles.max()} per sample, {np.mean(data.n_particles == 0):.3f} "
          f"without; matrix = particle material in {np.mean(data.matrix == data.particle):.3f}")
    table = load_table()
    start = time.perf_counter()
    wrong, vf_err, r_err, d_m, checked = 0, [], [], [], 0
    for i in range(min(n_recover, len(data))):
        if data.matrix[i] == data.particle[i] or data.n_particles[i] == 0:
            continue
        b = backproject(data.images[i], table)
        checked += 1
        wrong += (b.matrix, b.particle) != (data.matrix[i], data.particle[i])
        vf_err.append(abs(b.volume_fraction - data.volume_fraction[i]))
        r_err.append(abs(b.radius - data.radius[i]))
        d_m.append(b.distance)
    if checked:
        r_err, vf_err = np.array(r_err), np.array(vf_err)
        print(f"backprojection of {checked} clean samples ({(time.perf_counter() - start) / checked:.3f} s each): "
              f"wrong materials {wrong}, d_m max {max(d_m):.2g}, volume fraction error max {vf_err.max():.3g}, "
              f"radius error mean {r_err.mean():.4f} / 99-percentile {np.percentile(r_err, 99):.4f} / max {r_err.max():.4f} "
              f"of the side ({64 * r_err.max():.2f} px)")


if __name__ == "__main__":
    main()
