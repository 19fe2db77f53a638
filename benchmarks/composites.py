"""Throughput of the composite designer's forward model and its pieces, on 64 x 64 particle-matrix samples.

Prints samples per second for: the bulk modulus (value only) and value + adjoint gradient with
respect to every pixel's E and nu (`metasys.composites.bulk_modulus_and_gradient`), microstructure
sampling (placement of the circles), backprojection, and K_theta (10 re-sampled microstructures).
Usage: ``python benchmarks/composites.py [--samples 40]``.

Measured on the 2-core machine while other jobs (a 10k dataset build among them) kept the load
average at about 7: value 21-25 samples/s, value + gradient 20-24 samples/s (one SuperLU factor serves
the forward and both adjoint solves; about 40 ms per sample), samples 40-90/s, backprojection
about 6-10/s, K_theta about 2/s.
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
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
