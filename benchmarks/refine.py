"""Full-scale refinement: the standard problems and problems of our own, with and without refinement.

Runs ``metasys.design(problem, seed=s)`` with the default refinement and prints, per problem and seed, the
full-scale RRMSE of the structure without refinement (the pipeline's assembly, `Design.refinement[0]`'s
``unrefined``), after refinement, the macro RRMSE, solid components, swaps kept, full-scale solves and the wall
times (refinement and total). ``benchmarks/problems/*.toml`` are problems of our own (other grid sizes, targets
and edges than the standard three).

    python benchmarks/refine.py                                  # bridge, graded, smiley and the TOML problems, seed 0
    python benchmarks/refine.py --problems bridge --seeds 0,1,2,3,4
    python benchmarks/refine.py --problems benchmarks/problems/wave.toml --budget 60
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

HERE = pathlib.Path(__file__).parent
DEFAULT = ["bridge", "graded", *sorted(str(p) for p in (HERE / "problems").glob("*.toml")), "smiley"]


def run(problem: str, seed: int, budget: float | None) -> dict:
    import metasys

    spec = problem if problem in ("bridge", "smiley", "graded") else metasys.problems.load_problem(problem)
    t = time.perf_counter()
    d = metasys.design(spec, seed=seed, progress=False, refine_budget=budget)
    wall = time.perf_counter() - t
    history = d.refinement or [{}]
    return {"problem": d.problem.name, "grid": f"{d.problem.width}x{d.problem.height}", "seed": seed,
            "unrefined": history[0].get("unrefined", float("nan")), "refined": d.rrmse_full, "macro": d.rrmse_macro,
            "components": d.compatibility["n_components"],
            "swaps": sum(h.get("swaps", 0) for h in history if h.get("accepted")), "solves": len(history) - 1,
            "refine_s": d.timings.get("refinement", 0.0), "total_s": wall}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", default=",".join(DEFAULT), help="comma-separated names or TOML files")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--budget", type=float, default=None, help="refinement seconds (default: the problem's default)")
    parser.add_argument("--json", help="also append each row as a JSON line to this file")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    header = f"{'problem':<10s} {'grid':>6s} {'seed':>4s} {'unrefined':>9s} {'refined':>8s} {'macro':>7s} {'parts':>5s} " \
             f"{'swaps':>5s} {'solves':>6s} {'refine':>7s} {'total':>7s}"
    print(header)
    for problem in args.problems.split(","):
        for seed in map(int, args.seeds.split(",")):
            row = run(problem, seed, args.budget)
            print(f"{row['problem']:<10s} {row['grid']:>6s} {seed:>4d} {row['unrefined']:>9.4f} {row['refined']:>8.4f} "
                  f"{row['macro']:>7.4f} {row['components']:>5d} {row['swaps']:>5d} {row['solves']:>6d} "
                  f"{row['refine_s']:>6.0f}s {row['total_s']:>6.0f}s", flush=True)
            if args.json:
                with open(args.json, "a") as fh:
                    fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
