"""DD-MRF assembly solver: shared UAI benchmarks and a 50 x 50 grid with 10 labels from real cells.

Prints:

1. per instance of ``tests/data/mrf/`` (copies of the UAI 2014 instances in ``shared/mrf-benchmarks``):
   energy reached, certified optimum E*, lower bound, local-polytope LP value (scipy HiGHS, the best
   bound any dual decomposition can reach), iterations and time; and the same instance through
   pgmpy's Mplp (energy, time);
2. the 50 x 50 x 10 assembly instance: time to build the MRF (traction profiles of the pool cells
   included), then DD iterations, final relative gap, energy, bound and solve time (target: gap
   <= 1e-3 or 5000 iterations, < 10 s on 2 cores), the same with the costs shifted so that the energy
   found is 0, the assembly statistics, and pgmpy's Mplp on the same model under a wall-time limit
   (``--mplp-seconds``).

The assembly instance is built from real database cells: a pool of ``--pool`` random cells of the
default database; the target property field is the bilinear blend of four pool cells' properties
placed at the grid corners; each element's candidates are the L pool cells nearest to its target
(normalized property distance, the selection step of the candidate stage without k-means), node
cost ``||p - p_target||_inf``, edge cost ``theta_G + theta_M``.

A second assembly instance draws each element's L candidates at random from the pool (random
targets): little sharing of cells between neighbours, a harder MRF. A third, synthetic instance
with i.i.d. uniform costs is the solver's worst case (5000 iterations).

Usage: ``python benchmarks/mrf.py [--size 50] [--labels 10] [--pool 300] [--modes graded random]
[--mplp-seconds 120] [--skip-mplp] [--skip-instances] [--no-synthetic]``
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from metasys import Database
from metasys.mrf import TractionCache, assemble, mplp_map, mrf_from_candidates, read_uai, solve_mrf

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "mrf"
OPTIMA = {"Grids_26": -3051.012758, "Grids_29": -1542.664664, "Grids_30": -3015.744725,
          "Segmentation_12": 51.150653, "Segmentation_13": 49.858745}


def local_polytope_bound(model) -> float:
    """Optimum of the local-polytope LP relaxation (scipy HiGHS): the limit of the DD dual."""
    import scipy.sparse as sp
    from scipy.optimize import linprog

    n, n_labels = model.unary.shape
    n_e = model.n_edges
    c = np.concatenate([np.where(np.isfinite(model.unary), model.unary, 1e9).ravel(), model.pairwise.ravel()])
    lab = np.arange(n_labels)
    e_idx, a_idx, b_idx = np.meshgrid(np.arange(n_e), lab, lab, indexing="ij")
    pair_col = (n * n_labels + (e_idx * n_labels + a_idx) * n_labels + b_idx).ravel()
    triples = [(np.repeat(np.arange(n), n_labels), np.arange(n * n_labels), np.ones(n * n_labels))]  # sum_a mu_i(a) = 1
    for side, own in ((0, a_idx), (1, b_idx)):  # sum over the other label of mu_e = mu_node
        first = n + side * n_e * n_labels
        row_of = first + np.arange(n_e)[:, None] * n_labels + lab
        triples.append(((first + e_idx * n_labels + own).ravel(), pair_col, np.ones(pair_col.size)))
        triples.append((row_of.ravel(), (model.edges[:, side][:, None] * n_labels + lab).ravel(), -np.ones(n_e * n_labels)))
    rows, cols, vals = (np.concatenate(t) for t in zip(*triples))
    n_rows = n + 2 * n_e * n_labels
    a = sp.csr_matrix((vals, (rows, cols)), shape=(n_rows, len(c)))
    b = np.concatenate([np.ones(n), np.zeros(n_rows - n)])
    res = linprog(c, A_eq=a, b_eq=b, bounds=(0, None), method="highs")
    return float(res.fun) + model.constant


def _mplp_worker(model, kwargs, queue):
    t0 = time.perf_counter()
    labels = mplp_map(model, **kwargs)
    queue.put((labels, time.perf_counter() - t0))


def run_mplp(model, seconds: float, **kwargs):
    """(labels, seconds) of pgmpy's Mplp, or (None, seconds) when it does not finish in time."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_mplp_worker, args=(model, kwargs, queue))
    t0 = time.perf_counter()
    proc.start()
    proc.join(seconds)
    if proc.is_alive():
        proc.terminate()
        proc.join()
        return None, time.perf_counter() - t0
    return queue.get() if not queue.empty() else (None, time.perf_counter() - t0)


def benchmark_instances(mplp_seconds: float, skip_mplp: bool) -> None:
    print("== UAI 2014 MAP instances (tests/data/mrf) ==")
    print(f"{'instance':16s} {'E (DD)':>12s} {'E*':>12s} {'(E-E*)/|E*|':>11s} {'bound':>12s} {'LP':>12s} "
          f"{'iters':>6s} {'time s':>7s} {'E (Mplp)':>12s} {'Mplp s':>7s}")
    for name, e_star in OPTIMA.items():
        model = read_uai(DATA / f"{name}.uai")
        res = model.solve()
        lp = local_polytope_bound(model)
        mplp_e, mplp_t = "-", "-"
        if not skip_mplp:
            labels, secs = run_mplp(model, mplp_seconds, tighten_triplet=False)
            mplp_e = f"{model.energy(labels):12.4f}" if labels is not None else "timeout"
            mplp_t = f"{secs:7.1f}"
        print(f"{name:16s} {res.energy:12.4f} {e_star:12.4f} {(res.energy - e_star) / abs(e_star):11.2e} "
              f"{res.lower_bound:12.4f} {lp:12.4f} {res.iterations:6d} {res.seconds:7.2f} {mplp_e:>12s} {mplp_t:>7s}")


def assembly_instance(size: int, labels: int, pool: int, mode: str = "graded", seed: int = 0):
    """Candidates (H, W, L) from a pool of real database cells: ``graded`` (nearest to a graded target)
    or ``random`` (L random pool cells per element, random targets)."""
    db = Database.default()
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(db), pool, replace=False))
    props = db.properties[idx]
    lo, hi = props.min(0), props.max(0)
    norm = (props - lo) / (hi - lo)
    corners = props[rng.choice(pool, 4, replace=False)]
    s = np.linspace(0, 1, size)
    sx, sy = s[None, :, None], s[:, None, None]
    target = ((1 - sx) * (1 - sy) * corners[0] + sx * (1 - sy) * corners[1] + (1 - sx) * sy * corners[2]
              + sx * sy * corners[3])  # (H, W, 4)
    if mode == "random":
        target = props[rng.integers(0, pool, (size, size))]
        nearest = np.stack([rng.choice(pool, labels, replace=False) for _ in range(size * size)]).reshape(size, size, labels)
    else:
        dist = np.abs(((target - lo) / (hi - lo))[:, :, None, :] - norm[None, None]).max(-1)
        nearest = np.argsort(dist, axis=-1)[:, :, :labels]  # (H, W, L) pool positions
    cells = db.get_cells(idx)[nearest]
    errors = np.abs(props[nearest] - target[:, :, None, :]).max(-1)
    return SimpleNamespace(cells=cells, errors=errors, indices=idx[nearest], targets=target), db.material


def benchmark_grid(size: int, labels: int, pool: int, mode: str, mplp_seconds: float, skip_mplp: bool) -> None:
    print(f"\n== assembly MRF {size} x {size}, {labels} labels, pool of {pool} database cells, {mode} candidates ==")
    t0 = time.perf_counter()
    cand, material = assembly_instance(size, labels, pool, mode)
    cache = TractionCache()
    t1 = time.perf_counter()
    model = mrf_from_candidates(cand, tractions=cache, material=material)
    t2 = time.perf_counter()
    print(f"instance {t1 - t0:.1f} s; MRF build {t2 - t1:.1f} s ({cache.computed} traction solves, "
          f"{model.n_nodes} nodes, {model.n_edges} edges)")
    res = model.solve(max_iter=5000, rel_gap=1e-3)
    print(f"DD-MRF: iterations {res.iterations}, gap {res.gap:.2e}, energy {res.energy:.6f}, bound {res.lower_bound:.6f}, "
          f"time {res.seconds:.2f} s, converged {res.converged}, chains {res.n_chains}")
    # the same costs shifted so that the energy found is 0 (the gap is then relative to the problem scale S)
    shifted = solve_mrf(model.unary - res.energy / model.n_nodes, model.edges, model.pairwise, max_iter=5000, rel_gap=1e-3)
    print(f"  shifted to E = 0: iterations {shifted.iterations}, gap {shifted.gap:.2e} (scale {shifted.gap_scale:.1f}), "
          f"energy {shifted.energy:.4f}, bound {shifted.lower_bound:.4f}, time {shifted.seconds:.2f} s, "
          f"converged {shifted.converged}")
    a = assemble(cand, res, tractions=cache, material=material)
    print(f"assembly: structure {a.structure.shape}, theta_G = 0 on {a.theta_G_zero_fraction:.3f} of pairs, "
          f"mean theta_G {a.theta_G_mean:.4f}, mean theta_M {a.theta_M_mean:.4f}, solid components {a.n_components}")
    best = np.zeros(model.n_nodes, np.int64)
    b = assemble(cand, best, tractions=cache, material=material)
    print(f"(first candidate everywhere: energy {model.energy(best):.4f}, theta_G = 0 on {b.theta_G_zero_fraction:.3f}, "
          f"mean theta_G {b.theta_G_mean:.4f}, mean theta_M {b.theta_M_mean:.4f}, components {b.n_components})")
    if skip_mplp:
        return
    labels_mplp, secs = run_mplp(model, mplp_seconds, tighten_triplet=False)
    if labels_mplp is not None:
        print(f"pgmpy Mplp: energy {model.energy(labels_mplp):.6f}, time {secs:.1f} s")
        return
    print(f"pgmpy Mplp: did not finish within {mplp_seconds:.0f} s")
    for sub in (10, 15):  # the lower-left sub-grid of the same instance, where Mplp finishes
        part = SimpleNamespace(cells=cand.cells[:sub, :sub], errors=cand.errors[:sub, :sub])
        m = mrf_from_candidates(part, tractions=cache, material=material)
        r = m.solve(max_iter=5000, rel_gap=1e-3)
        labels_mplp, secs = run_mplp(m, mplp_seconds, tighten_triplet=False)
        mplp = f"energy {m.energy(labels_mplp):.6f}, time {secs:.1f} s" if labels_mplp is not None else "did not finish"
        print(f"  {sub} x {sub} sub-grid: DD-MRF energy {r.energy:.6f} (bound {r.lower_bound:.6f}, {r.iterations} iterations, "
              f"{r.seconds:.2f} s); pgmpy Mplp {mplp}")


def benchmark_synthetic(size: int, labels: int, seed: int = 0) -> None:
    """Worst case for the solver: i.i.d. uniform costs (loose LP relaxation, the gap cannot close)."""
    rng = np.random.default_rng(seed)
    h = w = size
    node = np.arange(h * w).reshape(h, w)
    edges = np.concatenate([np.stack([node[:, :-1].ravel(), node[:, 1:].ravel()], 1),
                            np.stack([node[:-1].ravel(), node[1:].ravel()], 1)])
    unary, pairwise = rng.random((h * w, labels)), rng.random((len(edges), labels, labels))
    print(f"\n== synthetic {size} x {size}, {labels} labels, uniform random costs ==")
    for polish in (10, 0):
        res = solve_mrf(unary, edges, pairwise, max_iter=5000, rel_gap=1e-3, polish_every=polish)
        print(f"DD-MRF (polish_every={polish}): iterations {res.iterations}, gap {res.gap:.2e}, energy {res.energy:.4f}, "
              f"bound {res.lower_bound:.4f}, time {res.seconds:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=50)
    parser.add_argument("--labels", type=int, default=10)
    parser.add_argument("--pool", type=int, default=300)
    parser.add_argument("--mplp-seconds", type=float, default=120.0)
    parser.add_argument("--skip-mplp", action="store_true")
    parser.add_argument("--skip-instances", action="store_true")
    parser.add_argument("--modes", nargs="*", default=["graded", "random"], choices=["graded", "random"])
    parser.add_argument("--no-synthetic", dest="synthetic", action="store_false")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # pgmpy's import-time deprecation notices
    if not args.skip_instances:
        benchmark_instances(args.mplp_seconds, args.skip_mplp)
    for mode in args.modes:
        benchmark_grid(args.size, args.labels, args.pool, mode, args.mplp_seconds, args.skip_mplp)
    if args.synthetic:
        benchmark_synthetic(args.size, args.labels)


if __name__ == "__main__":
    main()
