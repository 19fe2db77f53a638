"""Throughput of periodic homogenization on random mirror-symmetric 50 x 50 binary cells.

Prints cells per second for: the default path (quarter solves for doubly symmetric cells), the
general periodic solver (the same cells shifted by one pixel, which breaks the mid-line symmetry
without changing C), jax-fem's assembly with a sparse direct solve (on a subset), and the JAX
value-and-gradient path. Usage: ``python benchmarks/homogenize.py [--cells 1000]``.

Measured on the 2-core machine with the load average at 9-10 (other jobs), previous kernel run just
before each, same conditions: general path 74-81 -> 97-121 cells/s (8-cell SIMD lane groups); first
call 1.1-1.4 s with numba's disk cache, 75 s compiling from an empty one at that load.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy.ndimage import gaussian_filter


def random_symmetric_cells(n: int, seed: int = 0) -> np.ndarray:
    """Smoothed random quarters thresholded at about 60 % solid, mirrored to (n, 50, 50) bool."""
    rng = np.random.default_rng(seed)
    quarter = gaussian_filter(rng.normal(size=(n, 25, 25)), sigma=(0, 2, 2), mode="wrap")
    quarter = quarter > np.quantile(quarter, 0.4, axis=(1, 2), keepdims=True)
    half = np.concatenate([quarter, quarter[:, ::-1]], axis=1)
    return np.concatenate([half, half[:, :, ::-1]], axis=2)


def rate(label: str, n: int, fn) -> float:
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    print(f"{label:<48s} {n:5d} cells  {seconds:8.2f} s  {n / seconds:8.1f} cells/s  {1e3 * seconds / n:7.2f} ms/cell")
    return n / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--jaxfem-cells", type=int, default=30)
    parser.add_argument("--grad-cells", type=int, default=20)
    args = parser.parse_args()

    import jax

    jax.config.update("jax_enable_x64", True)
    import numba

    from metasys import homogenize
    from metasys.fem import homogenize_jax
    from metasys.fem.jaxfem_bridge import homogenize_jaxfem

    cells = random_symmetric_cells(args.cells)
    shifted = np.roll(cells, 1, axis=2)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, numba threads {numba.get_num_threads()}, load average {load} (1, 5, 15 min)")
    start = time.perf_counter()
    homogenize(cells[:9])  # compile (or load from numba's cache) the kernels and build the patterns once:
    homogenize(shifted[:9])  # 9 cells take both the 8-cell group kernel and the single-cell one
    print(f"first calls (kernels compiled or loaded from the numba cache, patterns built): {time.perf_counter() - start:.2f} s")
    c_fast = np.empty((len(cells), 3, 3))
    c_general = np.empty((len(cells), 3, 3))

    def fast():
        c_fast[:] = homogenize(cells, batch_size=512)

    def general():
        c_general[:] = homogenize(shifted, batch_size=128)

    rate("metasys homogenize (symmetric quarter path)", len(cells), fast)
    rate("metasys homogenize (general periodic path)", len(cells), general)
    print(f"max |C_fast - C_general| = {np.abs(c_fast - c_general).max():.2e}")

    sub = cells[: args.jaxfem_cells]
    homogenize_jaxfem(sub[:1])
    c_jaxfem = np.empty((len(sub), 3, 3))

    def jaxfem():
        c_jaxfem[:] = homogenize_jaxfem(sub)

    rate("jax-fem assembly + SuperLU", len(sub), jaxfem)
    rel = np.linalg.norm(c_jaxfem - c_fast[: len(sub)], axis=(1, 2)) / np.linalg.norm(c_fast[: len(sub)], axis=(1, 2))
    print(f"max relative difference metasys vs jax-fem = {rel.max():.2e}")

    grad = jax.jit(jax.value_and_grad(lambda rho: homogenize_jax(rho)[0, 0]))
    dens = cells[: args.grad_cells].astype(float)
    grad(dens[0])

    def gradients():
        for rho in dens:
            jax.block_until_ready(grad(rho))

    rate("homogenize_jax value + gradient (one cell a call)", len(dens), gradients)


if __name__ == "__main__":
    main()
