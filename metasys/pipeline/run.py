"""End-to-end multiscale design: problem -> macro properties -> candidates -> MRF assembly -> full-scale check ->
full-scale refinement.

`design` chains the stages of the VAE paper's Sec. 5.1 on plain data and closes the loop through the full-scale
model:

1. **macro**: `metasys.optimize_properties` finds the stiffness (C11, C12, C22, C33) of every macro element
   (full database, or a family's gradation for graded problems), from five starts; on small grids the three
   best macro optima go through stages 2-4 and the best at full scale is kept;
2. **candidates**: `metasys.diverse_candidates` picks ``k`` diverse database cells per element (k-means in the
   latent space). In family mode (graded problems) the families found on the gradation
   (`metasys.find_families`) are designed one by one: the macro stage runs along the family's own property curve
   and its members (and decoded in-between cells) are the candidates; the family with the best full-scale result
   is kept;
3. **assembly**: the MRF of Eq. 16-17 over the candidate sets, solved by dual decomposition (`metasys.solve_mrf`),
   gives one cell per element; cells holding loose solid parts are swapped for candidates that join them
   (`metasys.pipeline.refine.connect`), so the structure is one solid part; `metasys.mrf.assemble` builds it;
4. **verification**: the structure is solved at full scale (`metasys.fem.solve_full_scale`) and the RRMSE of its
   macro-node displacements against the target is the design's result;
5. **refinement** (`refine=True`): label searches on the macro model of the chosen cells corrected by the
   full-scale / macro discrepancy (`metasys.pipeline.relabel`), output space mapping rounds (the macro stage
   re-targeted by that discrepancy and stages 2-4 redone), then adjoint-ranked cell swaps
   (`metasys.pipeline.refine.refine`); `refinement_steps` sets how many of each. Every step is checked at full scale and kept
   only if better, so the result is never worse than stage 4's.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import compilation
from ..errors import InvalidTypeError, InvalidValueError, describe
from ..macro.problems import Problem
from .result import Design, versions

STAGES = ("macro", "candidates", "assembly", "full_scale")
"""Stages timed in ``Design.timings`` (with ``refinement`` when it runs, and ``total``)."""
VERIFIED_STARTS = 3
TRUST_SHRINK = 4
"""Factor by which a rejected relabel step shrinks the number of cells the next search may change (`_relabel`)."""
"""Macro optima of a multi-start that are assembled and checked at full scale (database mode, grids of at most
`metasys.macro.optimization.SMALL_GRID` elements; larger grids verify the best macro optimum only: a full-scale
solve there costs minutes, better spent on the refinement)."""
SMALL_GRID_K = 40
"""Candidates per element on small grids (see `candidates_per_element`)."""
DEFAULT_K = 10
"""Candidates per element on larger grids (the paper's scale)."""
AUTO_GENERATOR = {"max_targets": 2, "max_per_target": 1, "max_iter": 10, "gammas": (5.0, 10.0, 20.0, 100.0)}
"""Options of `metasys.diffusion.candidate_generator` for ``design(generator="auto")``, i.e. its budget: the
uncovered targets are grouped into at most ``max_targets`` k-means groups, each group's representative gets
``max_per_target`` noise-optimized cells (``max_iter`` BFGS iterations per projection stage, the paper's
stages; the binary polish then refines each thresholded cell)."""


def candidates_per_element(problem: Problem) -> int:
    """Default ``k`` of `design`: `SMALL_GRID_K` (40) on grids of at most
    `metasys.macro.optimization.SMALL_GRID` elements, `DEFAULT_K` (10, the paper's scale) on larger ones.

    More labels let the MRF find more compatible neighbours, and on a small grid compatibility decides
    the full-scale result: the bridge (30 x 4) from its best macro optimum gave full-scale RRMSE 0.044-0.049
    with k = 40 for each of six k-means seeds (55% of neighbour pairs with theta_G = 0) and 0.069-0.374 with
    k = 10 (34%). On the 50 x 50 smiley k = 40 doubled the time (MRF and full-scale solve, 462 s) without a
    better full-scale result (0.258).
    """
    from ..macro.optimization import SMALL_GRID

    return SMALL_GRID_K if problem.width * problem.height <= SMALL_GRID else DEFAULT_K


def _check_problem(problem) -> Problem:
    if isinstance(problem, str):
        from ..macro import problems

        if problem in ("bridge", "smiley", "graded"):
            return getattr(problems, problem)()
        return problems.load_problem(problem)
    if isinstance(problem, Path):
        from ..macro.problems import load_problem

        return load_problem(problem)
    if not isinstance(problem, Problem):
        raise InvalidTypeError("problem: expected a metasys.problems.Problem, a standard name or a problem file, "
                               f"got {describe(problem)}")
    return problem


def design(problem, database=None, model=None, family=None, *, seed: int = 0, k: int | None = None, generator="auto",
           macro_options: dict | None = None, mrf_options: dict | None = None, candidate_options: dict | None = None,
           full_scale: bool = True, refine: bool = True, refine_budget: float | None = None,
           refine_options: dict | None = None, progress: bool = True, log=None) -> Design:
    """Design a multiscale metamaterial structure for ``problem`` and verify it at full scale.

    Parameters
    ----------
    problem : Problem, "bridge" | "smiley" | "graded", or a path to a TOML/JSON problem file
    database : Database, optional
        Default: the shipped database (`metasys.Database.default`).
    model : LatentModel, optional
        Default: the shipped latent model (`metasys.LatentModel.default`).
    family : Gradation, Family or list of Family, optional
        Family mode. A gradation (a callable ``t -> p`` such as `metasys.selection.families.paper_gradation`)
        first gives families by `metasys.find_families`. Each family is then designed on its own:
        the macro stage optimizes positions along the family's own property curve (its members'
        properties, so the macro model asks only for what the family delivers), its members and decoded
        in-between cells are the candidates, and the family whose structure has the lowest full-scale
        RRMSE is kept (the lowest macro RRMSE when ``full_scale=False``). The ``graded`` problem uses
        `metasys.selection.families.paper_gradation` by default.
    seed : int
        Seed of every stochastic step (k-means, families, generator).
    k : int, optional
        Candidates per element (MRF labels) in database mode; default `candidates_per_element` (40 on
        grids of at most 400 elements, else 10).
    generator : "auto", "prior", callable or None
        Supplies cells for uncovered targets, i.e. those with fewer than ``k`` database cells within the
        tolerance (database mode; see `metasys.diverse_candidates`). A target's distinct generated cells
        join its pool and are ranked with the database cells by error (k-means picks among them when more
        than ``k`` are within tolerance); the MRF then chooses among the ``k`` candidates. "prior": the
        shipped diffusion prior (`metasys.diffusion.default_generator` with the options in `AUTO_GENERATOR`,
        for the database's material) when its weights are present and the database has 50 x 50 cells;
        "auto" (default): the same when the refinement is off, none when it is on (its time goes to full-scale
        checks instead: the generated cells were chosen for none of the bridge's 120 elements, and on the smiley
        the structure with them was no better, 0.2038 against 0.2004); None: database cells only.
    macro_options, candidate_options, mrf_options : dict, optional
        Extra keyword arguments of `optimize_properties`, `diverse_candidates` (family mode:
        `find_families`) and `solve_mrf` (defaults: `metasys.macro.optimization.macro_settings`;
        MRF ``max_iter=5000, rel_gap=1e-3``).
    full_scale : bool
        Run the full-scale verification (True).
    refine : bool
        Refine the kept design at full scale (label searches on the discrepancy-corrected macro model,
        `metasys.pipeline.relabel`, then output space mapping; each move checked by a full-scale solve and kept
        only if better). Needs ``full_scale``.
    refine_budget : float, optional
        Seconds after which the refinement starts no new step (default: no limit; the number of steps,
        `refinement_steps`, ends it). The steps are counted, not timed, so that the same seed gives the same design.
    refine_options : dict, optional
        Step counts (``relabel_solves``, ``space_mapping_rounds``; defaults `refinement_steps`) and extra keyword
        arguments of `metasys.pipeline.refine.refine` (the swap moves, e.g. ``max_iterations``).
    progress : bool
        Progress display per stage.
    log : callable, optional
        Called with one line per finished stage (e.g. ``print``).

    Returns
    -------
    Design
    """
    from ..database import Database
    from ..macro.optimization import macro_settings
    from ..selection.families import Family, family_candidates, find_families, paper_gradation

    problem = _check_problem(problem)
    k = candidates_per_element(problem) if k is None else k
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InvalidValueError(f"k: expected a positive integer, got {k!r}")
    if isinstance(generator, str) and generator not in ("auto", "prior"):
        raise InvalidValueError(f"generator: expected 'auto', 'prior', a callable or None, got {generator!r}")
    if not (generator is None or isinstance(generator, str) or callable(generator)):
        raise InvalidTypeError(f"generator: expected 'auto', 'prior', a callable generator(targets, n, seed) -> cells "
                               f"or None, got {describe(generator)}")
    say = log or (lambda line: None)
    timings = dict.fromkeys(STAGES, 0.0)
    t_all = time.perf_counter()
    compilation.start()  # the kernels of the stages after the macro stage, on the other core (first run only)
    database = Database.default() if database is None else database
    if family is None and problem.name == "graded":
        family = paper_gradation()
    if family is not None and not (callable(family) or isinstance(family, Family)
                                   or (isinstance(family, list | tuple) and all(isinstance(f, Family) for f in family))):
        raise InvalidTypeError(f"family: expected a gradation (callable t -> p), a Family or a list of Family, "
                               f"got {describe(family)}")
    if model is None:
        from ..latent.api import LatentModel

        model = LatentModel.default(database=database)
    if isinstance(generator, str):
        # The shipped prior makes 50 x 50 cells; generated cells need latent codes (model.encode).
        usable = family is None and tuple(database.resolution) == (50, 50) and hasattr(model, "encode")
        wanted = generator == "prior" or not (refine and full_scale)
        generator = _auto_generator(progress, database.material) if usable and wanted else None
    run = dict(problem=problem, database=database, macro_options=macro_options, mrf_options=mrf_options,
               full_scale=full_scale, progress=progress, say=say, timings=timings)

    starts = None
    if family is None:
        result, starts = _database_mode(problem, database, model, generator, seed, k, macro_options, candidate_options,
                                        run)
        tried = None
    else:
        t = time.perf_counter()
        if isinstance(family, Family):
            families = [family]
        elif isinstance(family, list | tuple):
            families = list(family)
        else:
            families = find_families(family, database=database, model=model, seed=seed, **(candidate_options or {}))
        timings["candidates"] += time.perf_counter() - t
        say(f"families: {len(families)} ({', '.join(str(len(f)) for f in families)} members) "
            f"({timings['candidates']:.1f} s)")
        result, tried = None, []
        for n, fam in enumerate(families):
            t = time.perf_counter()
            options = {**macro_settings(problem, fam.properties), **(macro_options or {})}
            macro = _optimize(problem, None, fam.properties, options, progress, f"family {n + 1} macro")
            timings["macro"] += time.perf_counter() - t
            compilation.wait()  # family_candidates homogenizes decoded cells
            t = time.perf_counter()
            cands = family_candidates([fam], macro.properties, model=model)
            timings["candidates"] += time.perf_counter() - t
            say(f"family {n + 1}/{len(families)}: macro rrmse {macro.rrmse:.4f} along its {len(fam)} members, "
                f"{cands.indices.shape[-1]} candidates per element, {int(np.sum(~np.asarray(cands.covered)))} uncovered")
            trial = _assemble_and_verify(macro, cands, **run)
            tried.append({"members": len(fam), "rrmse_macro": float(macro.rrmse), "rrmse_full": trial["rrmse_full"],
                          "chosen": False})
            score = trial["rrmse_full"] if full_scale else float(macro.rrmse)
            if result is None or score < result["score"]:
                result, best = {**trial, "score": score, "family": fam}, n
        tried[best]["chosen"] = True
        say(f"kept family {best + 1}: full-scale rrmse {result['rrmse_full']:.4f}")
    history = None
    if refine and full_scale:
        context = dict(database=database, model=model, k=k, seed=seed, candidate_options=candidate_options, run=run)
        result, history = _refine(result, problem, context, refine_budget, refine_options)
    timings["total"] = time.perf_counter() - t_all
    if not full_scale:
        timings.pop("full_scale")
    macro, cands, labels = result["macro"], result["candidates"], result["labels"]
    rows, cols = np.indices(labels.shape)
    chosen = (rows, cols, labels)
    uncovered = int(np.sum(~np.asarray(cands.covered)))
    return Design(problem=problem, properties=macro.properties, candidate_indices=np.asarray(cands.indices),
                  labels=labels, cells=np.asarray(cands.cells)[chosen], cell_properties=np.asarray(cands.properties)[chosen],
                  structure=result["structure"], macro_displacement=macro.displacement,
                  full_displacement=result["full_u"], rrmse_macro=float(result.get("rrmse_macro", macro.rrmse)),
                  rrmse_full=result["rrmse_full"],
                  compatibility=result["compatibility"], uncovered=uncovered, timings=timings, seed=int(seed),
                  versions=versions(), mode="database" if family is None else "family", families=tried,
                  starts=starts, refinement=history, fine_displacement=result["fine_u"])


FULL_SCALE_TOL = 1e-6
"""Relative residual of the full-scale checks that multigrid solves (systems of more than
`metasys.fem.full_scale.DIRECT_LIMIT` unknowns; smaller ones are factorized exactly). On the smiley (8.8M
unknowns) the RRMSE came out 0.142617 against 0.142627 at 1e-8, in 127 s instead of 172 s."""

SPACE_MAPPING_EVALUATIONS = 300
"""Macro evaluations of a space-mapping round (warm-started from the current optimum)."""


RELABEL_WEIGHTS = (0.005, 0.02, 0.001)
"""Compatibility weights (RRMSE per unit of MRF edge energy) a relabel step tries in turn on small grids: the next
one only when the full-scale check rejects the previous one's labels; a kept step keeps its weight. On the
barrel of `benchmarks/problems` the search at 0.02 stopped at 0.17 (full scale) where 0.005 went on to 0.074."""
LARGE_GRID_RELABEL_WEIGHTS = (0.02, 0.05, 0.005)
"""The same on grids of more than `metasys.macro.optimization.SMALL_GRID` elements (measured on the smiley)."""


def refinement_steps(problem: Problem) -> dict:
    """Default number of refinement steps, each ending in a full-scale solve: ``relabel_solves`` (label searches
    on the corrected macro model, `metasys.pipeline.relabel`), ``space_mapping_rounds`` (a failed round is retried
    once at half the step, and the retry counts) and ``max_iterations`` (swap moves).

    ``relabel_swaps`` caps the cells one label search changes (None: until no swap helps), ``relabel_weights``
    are its compatibility weights in the order tried (`RELABEL_WEIGHTS`, `LARGE_GRID_RELABEL_WEIGHTS`); ``relabel_pool``
    cells per element chosen in the RRMSE's metric join the candidates before each search
    (`metasys.pipeline.sensitivity`, 0: none) and ``relabel_groups`` enables the search's group moves.

    Grids of at most `SMALL_GRID` elements: 10 relabel steps with 8 more cells per element and group moves, 1
    space-mapping round, no swap move (a full-scale solve there is a sparse LDL^T factorization: 2-5 s). Larger
    grids (a full-scale solve takes minutes on the smiley): 3 space-mapping rounds and no relabel step. Measured on
    one machine, seed 0, from the same verified structures: smiley 0.1855 -> 0.1250 -> 0.1221 -> 0.1168 with 3
    rounds against 0.1855 -> 0.1850 -> 0.1808 -> 0.1426 with 2 relabel steps (9 and 7 cells changed) and 1
    round; graded 0.0977 -> 0.0896 -> (0.1511, not kept) -> 0.0541 against 0.0977 -> 0.0962 -> 0.0960 -> 0.0743.
    More rounds do not pay on their own: graded with 6 rounds (checks at `FULL_SCALE_TOL`, same seed) 0.0977 -> (0.1051) ->
    0.0961 -> 0.0742 -> 0.0727 -> (0.0850) -> (0.0767), i.e. rounds 5 and 6 were rejected.
    Relabel steps on large grids (``relabel_solves``) search at most 100 swaps each on the assembly's candidates
    (each swap updates a dense inverse of the macro model: 0.2-1 s on the smiley).
    """
    from ..macro.optimization import SMALL_GRID

    if problem.width * problem.height <= SMALL_GRID:
        return {"relabel_solves": 10, "relabel_swaps": None, "relabel_pool": 8, "relabel_groups": True,
                "relabel_weights": RELABEL_WEIGHTS, "space_mapping_rounds": 1, "max_iterations": 0}
    return {"relabel_solves": 0, "relabel_swaps": 100, "relabel_pool": 0, "relabel_groups": False,
            "relabel_weights": LARGE_GRID_RELABEL_WEIGHTS, "space_mapping_rounds": 3, "max_iterations": 0}


def _refine(result, problem, context, budget, options):
    """The full-scale refinement of a verified result: (result with the refined design, history).

    1. **Relabel** (`_relabel`): greedy label searches on the macro model of the chosen cells corrected by the
       full-scale discrepancy (`metasys.pipeline.relabel.relabel`), each checked at full scale;
    2. **Output space mapping** (`_space_mapping`): the macro stage is re-targeted by the discrepancy between the
       full-scale and the macro displacements of the current design, re-optimized from its optimum, and the new
       properties go through candidates, assembly and the full-scale check; kept while the full scale improves;
    3. **Cell swaps** (`metasys.pipeline.refine.refine`).
    """
    from ..mrf import assemble
    from .refine import refine

    run = context["run"]
    timings, say, progress = run["timings"], run["say"], run["progress"]
    t = time.perf_counter()
    deadline = np.inf if budget is None else t + float(budget)
    options = {**refinement_steps(problem), **(options or {})}
    solves, swaps = options.pop("relabel_solves"), options.pop("relabel_swaps")
    pool, groups, weights = options.pop("relabel_pool"), options.pop("relabel_groups"), options.pop("relabel_weights")
    rounds = options.pop("space_mapping_rounds")
    unrefined, rrmse_macro = result["rrmse_full"], float(result["macro"].rrmse)
    history = [{"stage": "start", "rrmse_full": unrefined, "tried": unrefined, "swaps": 0, "accepted": True,
                "estimate": 0.0, "n_components": int(result["compatibility"]["n_components"]), "time_s": 0.0,
                "unrefined": unrefined}]
    result, relabeled = _relabel(result, problem, context, solves, swaps, pool, groups, weights, deadline, t)
    result, mapped = _space_mapping(result, problem, context, rounds, deadline, t)
    history += relabeled + mapped
    cands = result["candidates"]
    out = refine(problem, cands.cells, cands.properties, result["labels"], result["pairwise"], result["edges"],
                 material=context["database"].material, initial=result.get("fs"),
                 budget=None if budget is None else max(0.0, deadline - time.perf_counter()), progress=progress, say=say,
                 **options)
    assembly = assemble(cands, out.labels)
    compat = {**result["compatibility"], "theta_G_zero_fraction": float(assembly.theta_G_zero_fraction),
              "theta_G_mean": float(assembly.theta_G_mean), "theta_M_mean": float(assembly.theta_M_mean),
              "n_components": int(assembly.n_components)}
    timings["refinement"] = time.perf_counter() - t
    connected = out.history[0]
    if connected["rrmse_full"] != result["rrmse_full"]:  # `connect` changed the structure to make it one part
        history.append({**connected, "stage": "connect", "tried": connected["rrmse_full"], "accepted": True})
    history += [{**h, "stage": "swap"} for h in out.history[1:]]
    for k, entry in enumerate(history):
        entry["iteration"] = k
    kept = sum(1 for h in relabeled if h["accepted"])
    say(f"refinement: full-scale rrmse {unrefined:.4f} -> {out.rrmse_full:.4f} ({kept} of {len(relabeled)} relabel "
        f"steps and {sum(1 for h in mapped if h['accepted'])} of {len(mapped)} space-mapping rounds kept, "
        f"{out.swaps_accepted} swaps kept, {len(history) - 1} full-scale solves, {timings['refinement']:.1f} s)")
    # after space mapping the macro optimum is that of the re-targeted problem; the macro stage's figure stays
    refined = {**result, "rrmse_macro": rrmse_macro, "labels": out.labels, "structure": out.structure,
               "compatibility": compat, "fs": out.full_scale,
               "full_u": out.full_scale.macro_displacement, "fine_u": out.full_scale.displacement, "rrmse_full": out.rrmse_full}
    return refined, history


def _relabel(result, problem, context, solves, max_swaps, pool, groups, weights, deadline, t0):
    """Relabel steps on a verified result: (best result, history entries).

    Each step searches new labels for the current best design (`metasys.pipeline.relabel.relabel`, with the
    discrepancy of its full-scale solution and a compatibility weight of ``weights``) and checks them at full scale; the
    labels are kept if the full-scale RRMSE falls. In database mode each element's candidate list first gains
    ``pool`` cells chosen in the RRMSE's own metric (`metasys.pipeline.sensitivity.sensitive_candidates`) for the
    current design, and an MRF over the widened lists with those costs proposes a second starting point for the
    search; ``groups`` enables its group moves.

    The corrected macro model is trusted only near the design its discrepancy was measured on, so the cells one
    search may change are bounded by a trust radius: a rejected step of ``n`` changed cells retries at the same
    weight with at most ``n // TRUST_SHRINK`` (a proposal changing more is not searched from), and a kept step of
    ``n`` cells allows ``TRUST_SHRINK * n`` next (at most ``max_swaps``). A rejected step that changed at most
    `TRUST_SHRINK` cells (or a search that finds nothing new within the radius) moves to the next weight with the
    radius lifted to ``max_swaps``; the stage ends when every weight is spent or after ``solves`` checks. On the
    wave problem (`benchmarks/problems/wave.toml`) the unbounded searches changed 100-140 of 192 cells, predicted
    0.05-0.09 and gave 0.42-0.53 at full scale; searches of 2 to 31 cells were kept.
    """
    from ..mrf import mrf_from_candidates, solve_mrf
    from .relabel import MAX_DENSE_DOFS, relabel
    from .sensitivity import sensitive_candidates

    run, database = context["run"], context["database"]
    say = run["say"]
    if 2 * (problem.width + 1) * (problem.height + 1) > MAX_DENSE_DOFS:
        say(f"relabel: skipped (the macro model has more than {MAX_DENSE_DOFS} degrees of freedom)")
        return result, []
    verify = {key: run[key] for key in ("problem", "full_scale", "progress", "say", "timings")}
    best, history, checked, weight, n, widened = result, [], {result["labels"].tobytes()}, 0, 0, None
    radius = max_swaps
    while n < solves and weight < len(weights) and time.perf_counter() < deadline:
        if widened is None:
            widened = {**{key: best[key] for key in ("candidates", "edges", "pairwise")}, "unary": None}
            if pool and best.get("family") is None and np.all(best["candidates"].indices >= 0):
                t = time.perf_counter()
                dofs = problem.target_dofs
                shift = np.asarray(best["full_u"]).ravel()[dofs] - _own_displacement(best, problem)[dofs]
                cands, unary = sensitive_candidates(problem, best["candidates"], best["labels"], database,
                                                    context["model"].latent_codes(), shift=shift, per_element=pool)
                _, edges, pairwise = mrf_from_candidates(cands, material=database.material)
                widened = {"candidates": cands, "edges": edges, "pairwise": pairwise, "unary": unary}
                run["timings"]["candidates"] += time.perf_counter() - t
                say(f"relabel: {pool} cells per element chosen in the RRMSE's metric ({time.perf_counter() - t:.1f} s)")
        cands, proposal = widened["candidates"], None
        if widened["unary"] is not None:
            # the MRF weighs accuracy in the RRMSE's metric against the same compatibility costs as the search
            proposal = solve_mrf(widened["unary"] / weights[weight], widened["edges"], widened["pairwise"],
                                 max_iter=2000, rel_gap=1e-3).labels.reshape(best["labels"].shape)
            if radius is not None and np.count_nonzero(proposal != best["labels"]) > radius:
                proposal = None
        out = relabel(problem, cands.properties, best["labels"], widened["pairwise"], widened["edges"],
                      full_displacement=best["full_u"], compatibility_weight=weights[weight],
                      max_swaps=radius, identities=cands.indices if groups else None, proposal=proposal)
        if out.swaps == 0 or out.labels.tobytes() in checked:
            weight, radius = weight + 1, max_swaps
            continue
        checked.add(out.labels.tobytes())
        n += 1
        solved = {key: best["compatibility"][key] for key in ("mrf_energy", "mrf_lower_bound", "mrf_iterations")}
        trial = _verify_labels(best["macro"], cands, out.labels, widened["edges"], widened["pairwise"], solved,
                               material=database.material, **verify)
        accepted = trial["rrmse_full"] < best["rrmse_full"]
        history.append({"stage": "relabel", "tried": trial["rrmse_full"], "swaps": out.swaps, "accepted": bool(accepted),
                        "estimate": out.predicted - best["rrmse_full"], "weight": weights[weight], "radius": radius,
                        "n_components": int(trial["compatibility"]["n_components"]),
                        "rrmse_full": trial["rrmse_full"] if accepted else best["rrmse_full"],
                        "time_s": round(time.perf_counter() - t0, 3)})
        say(f"relabel {n} (weight {weights[weight]:g}): {out.swaps} cells changed, predicted "
            f"{out.predicted:.4f}, full scale {trial['rrmse_full']:.4f} ({'kept' if accepted else 'not better'})")
        if accepted:
            best, widened = {**trial, "family": best.get("family")}, None
            radius = TRUST_SHRINK * out.swaps if max_swaps is None else min(max_swaps, TRUST_SHRINK * out.swaps)
        elif out.swaps > TRUST_SHRINK:
            radius = out.swaps // TRUST_SHRINK
        else:
            weight, radius = weight + 1, max_swaps
    return best, history


def _own_displacement(result, problem) -> np.ndarray:
    """Macro displacement vector of the chosen cells' own properties."""
    from ..fem.macro import MacroModel

    cands = result["candidates"]
    chosen = np.take_along_axis(np.asarray(cands.properties), result["labels"][:, :, None, None], axis=2)[:, :, 0]
    return MacroModel(problem.width, problem.height, problem.conditions).solve(chosen).vector


def _space_mapping(result, problem, context, rounds, deadline, t0):
    """Output space mapping rounds on a verified result: (best result, history entries).

    The full-scale response F of the design made for macro targets t is modelled as the macro response M plus the
    discrepancy d = F - M seen at the current design, so the macro stage is given the targets ``u_t + s`` with the
    shift ``s = -d`` (re-optimized from its current optimum) and the design is remade from the new properties
    (candidates, MRF, full-scale check). A round is kept when the full-scale RRMSE falls; a round that does not is
    retried once with half the step (``s = s_kept + (-d - s_kept) / 2``), and a second failure ends the stage.
    """
    from dataclasses import replace

    from ..macro.optimization import rrmse

    run, database = context["run"], context["database"]
    say, timings = run["say"], run["timings"]
    history = []
    best, dofs = result, problem.target_dofs
    shift, step, r = np.zeros(len(dofs)), 1.0, 0
    while r < rounds and time.perf_counter() < deadline:
        r += 1
        macro, family = best["macro"], best.get("family")
        discrepancy = np.asarray(best["full_u"]).ravel()[dofs] - np.asarray(macro.displacement).ravel()[dofs]
        trial_shift = shift + step * (-discrepancy - shift)
        mapped = replace(problem, target_values=problem.target_values + trial_shift)
        t = time.perf_counter()
        options = {"start": macro.variables if family is not None else macro.properties,
                   "max_iterations": SPACE_MAPPING_EVALUATIONS, "restart_every": 100}
        new = _optimize(mapped, database if family is None else None, None if family is None else family.properties,
                        options, False, "space mapping")
        # the macro optimum's own figure is measured against the real targets
        new = replace(new, rrmse=rrmse(new.displacement, problem), problem=problem.name)
        timings["macro"] += time.perf_counter() - t
        cands = _remake_candidates(new, family, context)
        # a round whose re-targeted optimum stays where it was assembles the same structure: no second solve
        trial = _assemble_and_verify(new, cands, **run, verified=best)
        accepted = trial["rrmse_full"] < best["rrmse_full"]
        history.append({"stage": "space mapping", "tried": trial["rrmse_full"], "swaps": 0,
                        "accepted": bool(accepted), "estimate": 0.0, "step": step,
                        "n_components": int(trial["compatibility"]["n_components"]),
                        "rrmse_full": trial["rrmse_full"] if accepted else best["rrmse_full"],
                        "time_s": round(time.perf_counter() - t0, 3)})
        say(f"space mapping {r} (step {step:g}): macro rrmse {new.rrmse:.4f} against the real targets, full scale "
            f"{trial['rrmse_full']:.4f} ({'kept' if accepted else 'not better'})")
        if accepted:
            best, shift, step = {**trial, "family": family}, trial_shift, 1.0
        elif step < 1.0:
            break
        else:
            step = 0.5
    return best, history


def _remake_candidates(macro, family, context):
    """Candidates for new macro properties: database mode as in the first pass (no generator), or the family's."""
    from ..selection.candidates import diverse_candidates
    from ..selection.families import family_candidates

    t = time.perf_counter()
    if family is None:
        cands = diverse_candidates(macro.properties, k=context["k"], database=context["database"], model=context["model"],
                                   seed=context["seed"], **(context["candidate_options"] or {}))
    else:
        cands = family_candidates([family], macro.properties, model=context["model"])
    context["run"]["timings"]["candidates"] += time.perf_counter() - t
    return cands


def _auto_generator(progress: bool, material):
    """The shipped diffusion prior as a bounded candidate generator for ``material``, or None without its weights."""
    from ..diffusion.generate import default_generator

    return default_generator(**{"material": material, **AUTO_GENERATOR, "progress": progress})


def _database_mode(problem, database, model, generator, seed, k, macro_options, candidate_options, run):
    """Macro stage, candidates, assembly and full-scale check in database mode: (result, starts or None).

    With a multi-start macro stage (``start="multi"``, the default for small grids) each start runs on
    its own, the `VERIFIED_STARTS` best macro optima are assembled from database cells and checked at full
    scale, and the best at full scale is kept: the macro RRMSE does not rank the optima by what they
    give at full scale (bridge: macro 0.0017 / 0.0076 / 0.011 gave full scale 0.125 / 0.028 / 0.32). The
    generator is then called for the kept optimum only, and its design is kept if it is better at full scale.
    """
    from ..macro.optimization import SMALL_GRID, candidate_starts, macro_settings
    from ..selection.candidates import diverse_candidates

    timings, say, progress = run["timings"], run["say"], run["progress"]
    options = {**macro_settings(problem, None), **(macro_options or {})}

    def candidates(macro, gen):
        if gen is not None:
            compilation.wait()  # the generator homogenizes its cells
        t = time.perf_counter()
        cands = diverse_candidates(macro.properties, k=k, database=database, model=model, generator=gen, seed=seed,
                                   **(candidate_options or {}))
        timings["candidates"] += time.perf_counter() - t
        say(f"candidates: {cands.indices.shape[-1]} per element, {int(np.sum(~np.asarray(cands.covered)))} uncovered "
            f"targets, {int(np.count_nonzero(cands.generated))} generated candidates ({time.perf_counter() - t:.1f} s)")
        return cands

    def optimize(opts, label):
        t = time.perf_counter()
        macro = _optimize(problem, database, None, opts, progress, label)
        timings["macro"] += time.perf_counter() - t
        say(f"{label}: rrmse {macro.rrmse:.4f}, {macro.feasible_fraction:.1%} feasible, {macro.iterations} evaluations "
            f"({time.perf_counter() - t:.1f} s)")
        return macro

    if not (isinstance(options.get("start"), str) and options["start"] == "multi"):
        macro = optimize(options, "macro optimization")
        return _assemble_and_verify(macro, candidates(macro, generator), **run), None
    per_start = {**options, "max_iterations": int(options.get("pilot_iterations", 100))}
    per_start.pop("pilot_iterations", None)
    points = candidate_starts(database)
    macros = [optimize({**per_start, "start": p}, f"macro start {i + 1}/{len(points)}") for i, p in enumerate(points)]
    starts = [{"rrmse_macro": float(m.rrmse), "rrmse_full": None, "generator": False, "chosen": False}
              for m in macros]
    result, best = None, None
    verified = VERIFIED_STARTS if problem.width * problem.height <= SMALL_GRID else 1
    for i in np.argsort([m.rrmse for m in macros], kind="stable")[:verified]:
        trial = _assemble_and_verify(macros[i], candidates(macros[i], None), **run)
        starts[i]["rrmse_full"] = trial["rrmse_full"]
        score = trial["rrmse_full"] if run["full_scale"] else float(macros[i].rrmse)
        if result is None or score < result["score"]:
            result, best = {**trial, "score": score}, int(i)
    if generator is not None and not np.all(result["candidates"].covered):
        trial = _assemble_and_verify(macros[best], candidates(macros[best], generator), **run, verified=result)
        score = trial["rrmse_full"] if run["full_scale"] else float(macros[best].rrmse)
        if score < result["score"]:
            result = {**trial, "score": score}
            starts[best]["generator"] = True
    starts[best]["chosen"] = True
    say(f"kept macro start {best + 1}: full-scale rrmse {result['rrmse_full']:.4f}")
    return result, starts


def _optimize(problem, database, family, options, progress, label):
    """`optimize_properties` with a progress bar over its evaluations (a user callback still gets called)."""
    from ..macro.optimization import optimize_properties
    from ..progress import progress_bar

    options = dict(options)
    user_callback = options.pop("callback", None)
    with progress_bar(label, total=int(options.get("max_iterations", 500)), enabled=progress) as advance:
        def callback(*args):
            advance()
            if user_callback is not None:
                user_callback(*args)

        return optimize_properties(problem, database, family, callback=callback, **options)


def _assemble_and_verify(macro, cands, *, problem, database, macro_options, mrf_options, full_scale, progress, say,
                         timings, verified: dict | None = None) -> dict:
    """MRF assembly of one candidate set and its full-scale check (stages 3 and 4); adds to ``timings``.

    ``verified``: an earlier result of this function; when the MRF assembles the same structure (e.g. it chose
    none of the generated candidates) its full-scale solution is reused instead of solved again.
    """
    from ..mrf import mrf_from_candidates, solve_mrf

    compilation.wait()
    t = time.perf_counter()
    unary, edges, pairwise = mrf_from_candidates(cands, material=database.material)
    mrf = solve_mrf(unary, edges, pairwise, **{"max_iter": 5000, "rel_gap": 1e-3, **(mrf_options or {})})
    labels = np.asarray(mrf.labels).reshape(problem.height, problem.width)
    timings["assembly"] += time.perf_counter() - t
    solved = {"mrf_energy": float(mrf.energy), "mrf_lower_bound": float(mrf.lower_bound),
              "mrf_iterations": int(mrf.iterations)}
    return _verify_labels(macro, cands, labels, edges, pairwise, solved, problem=problem, material=database.material,
                          full_scale=full_scale, progress=progress, say=say, timings=timings, verified=verified)


def _verify_labels(macro, cands, labels, edges, pairwise, solved, *, problem, material, full_scale, progress, say, timings,
                   verified: dict | None = None) -> dict:
    """Assembly of chosen labels (loose solid parts joined by `connect`) and its full-scale check; a result dict.

    ``solved``: the MRF's figures (``mrf_energy``, ``mrf_lower_bound``, ``mrf_iterations``) for the report.
    """
    from ..fem.full_scale import solve_full_scale
    from ..macro.optimization import rrmse
    from ..mrf import assemble
    from .refine import connect

    t = time.perf_counter()
    assembly = assemble(cands, labels)
    if assembly.n_components > 1:
        # loose solid parts carry no load: swap the cells that hold them for candidates that join them or remove them
        labels, _, _ = connect(np.asarray(cands.cells), labels, assembly.structure)
        assembly = assemble(cands, labels)
    elapsed = time.perf_counter() - t
    timings["assembly"] += elapsed
    compat = {"theta_G_zero_fraction": float(assembly.theta_G_zero_fraction), "theta_G_mean": float(assembly.theta_G_mean),
              "theta_M_mean": float(assembly.theta_M_mean), "n_components": int(assembly.n_components), **solved}
    gap = (solved["mrf_energy"] - solved["mrf_lower_bound"]) / max(abs(solved["mrf_energy"]), 1e-12)
    say(f"assembly: {compat['theta_G_zero_fraction']:.1%} of neighbour pairs with theta_G = 0, {compat['n_components']} "
        f"solid component(s), MRF gap {gap:.1e} ({elapsed:.1f} s)")
    full_u, fine_u, rrmse_full, fs = np.full_like(macro.displacement, np.nan), None, float("nan"), None
    if full_scale and verified is not None and np.array_equal(verified["structure"], assembly.structure):
        full_u, fine_u, rrmse_full, fs = verified["full_u"], verified["fine_u"], verified["rrmse_full"], verified["fs"]
        say(f"full scale: same structure as before, rrmse {rrmse_full:.4f}")
    elif full_scale:
        t = time.perf_counter()
        fs = solve_full_scale(assembly.structure, problem.conditions, material=material, progress=progress, tol=FULL_SCALE_TOL)
        full_u, fine_u = fs.macro_displacement, fs.displacement
        rrmse_full = float(rrmse(full_u, problem))
        elapsed = time.perf_counter() - t
        timings["full_scale"] += elapsed
        say(f"full scale: rrmse {rrmse_full:.4f} ({elapsed:.1f} s)")
    return {"macro": macro, "candidates": cands, "labels": labels, "structure": assembly.structure,
            "compatibility": compat, "full_u": full_u, "fine_u": fine_u, "rrmse_full": rrmse_full, "fs": fs,
            "edges": edges, "pairwise": pairwise}


__all__ = ["Design", "design", "candidates_per_element", "STAGES"]
