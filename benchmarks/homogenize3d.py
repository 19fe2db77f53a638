"""Throughput of the 3D voxel homogenization (issue 23: target < 1 s per 32^3 cell on 2 cores).

Cells: smoothed random two-phase voxel cells (50 % stiff phase, E 1 / 100, nu 0.3: the composite
problem) and, with ``--void``, binary cells with the default ersatz void (E_void = 1e-9). Prints, per size:

- the chosen path (`metasys.fem.homogenize_voxels`, ``solver="auto"``: SuperLU up to 2,000 unknowns (8^3),
  geometric multigrid + block CG over the six load cases above), the cells of a batch on one thread per core
  (`metasys.fem.voxel.CELL_THREADS`) and on one thread, with the hierarchy / solve split of one cell;
- the former path ("before": pyamg aggregation AMG + block CG, ``solver="amg"``) with its setup / solve split,
  and the alternatives: SuperLU (``solver="direct"``) and pyamg's own solver (same hierarchy kind, one
  CG per load case, pyamg's V-cycle and Gauss-Seidel smoothing);
- the first call (imports, grid tables, pyamg import) separately;
- the 3D affine-boundary bulk modulus with its gradient (`metasys.composites.bulk_modulus_and_gradient`, dim=3).

Usage: ``python benchmarks/homogenize3d.py [--void] [--direct32] [--n64]``. Report the load average with
the figures (``uptime``): the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy.ndimage import gaussian_filter


def random_cells(n_cells: int, n: int, seed: int = 0) -> np.ndarray:
    """(n_cells, n, n, n) float 0/1 cells: periodic smoothed noise thresholded at its median."""
    rng = np.random.default_rng(seed)
    f = gaussian_filter(rng.normal(size=(n_cells, n, n, n)), sigma=(0, n / 8, n / 8, n / 8), mode="wrap")
    return (f > np.median(f, axis=(1, 2, 3), keepdims=True)).astype(float)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def report(label: str, n_cells: int, seconds: float, extra: str = "") -> None:
    print(f"{label:<44s} {n_cells:3d} cells {seconds:8.2f} s  {n_cells / seconds:7.3f} cells/s  "
          f"{seconds / n_cells:7.2f} s/cell  {extra}", flush=True)


def pyamg_per_vector(cell: np.ndarray, material) -> tuple[float, int]:
    """Alternative: pyamg's solver with its own CG, one load case at a time (same assembly); returns (s, iterations)."""
    import pyamg
    import scipy.sparse as sp

    from metasys.fem.voxel import _density_basis
    from metasys.fem.voxel_assembly import stencil_blocks, voxel_grid, weights_at_nodes
    from metasys.fem.voxel_element import affine_displacements_3d

    start = time.perf_counter()
    basis = _density_basis(material)
    weights = material.modulus(cell)[None]
    grid = voxel_grid(*cell.shape)
    a = sp.csr_matrix(grid.assemble(weights, stencil_blocks(basis)))
    loads = (basis[0] @ affine_displacements_3d()).reshape(8, 18)
    rhs = -(weights_at_nodes(weights).reshape(8, -1).T @ loads).reshape(-1, 3, 6)
    rhs[0] = 0.0
    ml = pyamg.smoothed_aggregation_solver(a, B=np.tile(np.eye(3), (grid.n_nodes, 1)), smooth=None, max_coarse=4000,
                                           coarse_solver="splu")
    iterations = 0
    for k in range(6):
        residuals = []
        ml.solve(rhs.reshape(-1, 6)[:, k], tol=1e-8, accel="cg", residuals=residuals, maxiter=1000)
        iterations += len(residuals)
    return time.perf_counter() - start, iterations


def amg_split(cell: np.ndarray, material) -> tuple[float, float, int]:
    """The chosen AMG path, timed in parts: (assembly + setup s, block-CG solve s, iterations)."""
    import scipy.sparse as sp

    from metasys.fem.voxel import _density_basis
    from metasys.fem.voxel_assembly import stencil_blocks, voxel_grid, weights_at_nodes
    from metasys.fem.voxel_element import affine_displacements_3d
    from metasys.fem.voxel_solver import BlockAMG

    start = time.perf_counter()
    basis = _density_basis(material)
    weights = material.modulus(cell)[None]
    grid = voxel_grid(*cell.shape)
    a = grid.assemble(weights, stencil_blocks(basis))
    loads = (basis[0] @ affine_displacements_3d()).reshape(8, 18)
    rhs = -(weights_at_nodes(weights).reshape(8, -1).T @ loads).reshape(-1, 3, 6)
    rhs[0] = 0.0
    amg = BlockAMG(sp.csr_matrix(a))
    setup = time.perf_counter() - start
    _, solve = timed(amg.solve, rhs.reshape(-1, 6), 1e-8)
    return setup, solve, amg.iterations


def mg_split(cell: np.ndarray, material) -> tuple[float, float, int]:
    """The geometric-multigrid path, timed in parts: (assembly + hierarchy s, block-CG solve s, iterations)."""
    from metasys.fem.voxel import _density_basis
    from metasys.fem.voxel_assembly import weights_at_nodes
    from metasys.fem.voxel_element import affine_displacements_3d
    from metasys.fem.voxel_mg import VoxelMG

    start = time.perf_counter()
    basis = _density_basis(material)
    weights = material.modulus(cell)[None]
    loads = (basis[0] @ affine_displacements_3d()).reshape(8, 18)
    rhs = -(weights_at_nodes(weights).reshape(8, -1).T @ loads).reshape(*cell.shape, 3, 6)
    rhs[0, 0, 0] = 0.0
    fixed = np.zeros(cell.shape, bool)
    fixed[0, 0, 0] = True
    mg = VoxelMG(weights, basis, fixed)
    setup = time.perf_counter() - start
    _, solve = timed(mg.solve, np.ascontiguousarray(rhs.transpose(4, 3, 0, 1, 2)), 1e-8)
    return setup, solve, mg.iterations


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--void", action="store_true", help="binary cells with the 1e-9 ersatz void instead of E 1 / 100")
    parser.add_argument("--direct32", action="store_true", help="also time SuperLU at 32^3 (minutes, several GB)")
    parser.add_argument("--n64", action="store_true", help="also time one 64^3 cell (add --before64 for pyamg there: minutes)")
    parser.add_argument("--before64", action="store_true", help="with --n64: also the pyamg path at 64^3")
    parser.add_argument("--cells", type=int, default=4, help="cells per size for the chosen path")
    args = parser.parse_args()
    print("load average:", os.getloadavg(), flush=True)

    t0 = time.perf_counter()
    from metasys.composites import bulk_modulus_and_gradient
    from metasys.fem import affine_bulk_modulus_3d, homogenize_voxels, voxel
    from metasys.fem.voxel import cell_threads
    from metasys.material import Material

    material = Material(nu=0.3) if args.void else Material.two_phase(1.0, 100.0, nu=0.3)
    print(f"material: {material}", flush=True)
    warm = random_cells(1, 16, seed=99)
    _, first = timed(homogenize_voxels, warm, material, solver="mg")
    print(f"first call (imports + numba compile or cache load + 16^3 tables, mg): {time.perf_counter() - t0:.2f} s "
          f"(solve part {first:.2f} s)", flush=True)
    _, second = timed(homogenize_voxels, warm, material, solver="mg")
    print(f"same call again: {second:.2f} s", flush=True)
    homogenize_voxels(warm, material, solver="amg")  # pyamg import outside the timings

    for n in (16, 32) + ((64,) if args.n64 else ()):
        cells = random_cells(args.cells if n < 64 else 1, n, seed=n)
        c_auto, s = timed(homogenize_voxels, cells, material)
        report(f"{n}^3 after: homogenize_voxels (auto = mg), {cell_threads()} threads", len(cells), s,
               f"C11 {c_auto[0, 0, 0]:.6g}")
        threads, voxel.CELL_THREADS = voxel.CELL_THREADS, 1
        c_one, s = timed(homogenize_voxels, cells, material)
        voxel.CELL_THREADS = threads
        report(f"{n}^3 after: the same on one thread", len(cells), s, f"|dC| {np.abs(c_one - c_auto).max():.1e}")
        setup, solve, its = mg_split(cells[0], material)
        print(f"    mg parts, cell 0: assembly + hierarchy {setup:.2f} s, block CG {solve:.2f} s, {its} iterations", flush=True)
        if n <= 32 or args.before64:
            c_amg, s = timed(homogenize_voxels, cells[:1], material, solver="amg")
            report(f"{n}^3 before: pyamg aggregation + block CG", 1, s, f"|dC| {np.abs(c_amg[0] - c_auto[0]).max():.1e}")
            setup, solve, its = amg_split(cells[0], material)
            print(f"    AMG parts, cell 0: assembly + setup {setup:.2f} s, block CG {solve:.2f} s, {its} iterations", flush=True)
        if n <= 16 or (n == 32 and args.direct32):
            c_direct, s = timed(homogenize_voxels, cells[:1], material, solver="direct")
            report(f"{n}^3 alternative: SuperLU (direct)", 1, s, f"|dC| {np.abs(c_direct[0] - c_auto[0]).max():.1e}")
        if n <= 16:
            s, its = pyamg_per_vector(cells[0], material)
            report(f"{n}^3 alternative: pyamg solve per load case", 1, s, f"{its} iterations over 6 solves")
    for n in (16, 32):
        e = np.where(random_cells(1, n, seed=7)[0] > 0, 100.0, 1.0)
        nu = np.full_like(e, 0.3)
        (k, _, _), s = timed(bulk_modulus_and_gradient, e, nu, dim=3)
        (k_amg, _, _), s_amg = timed(affine_bulk_modulus_3d, e, nu, gradient=True, solver="amg")
        print(f"{n}^3 bulk modulus + gradient (dim=3): after (auto) {s:.2f} s, before (pyamg) {s_amg:.2f} s, "
              f"K = {k:.6f} (|dK| {abs(k - k_amg):.1e})", flush=True)
    print("load average:", os.getloadavg(), flush=True)


if __name__ == "__main__":
    main()
