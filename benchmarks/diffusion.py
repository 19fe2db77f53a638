"""Diffusion backend figures: training step time, sampling time, noise-optimization cost and, with trained
weights, the issue's design figures.

    python benchmarks/diffusion.py timing [--channels 24] [--batch-size 64]
    python benchmarks/diffusion.py designs [--model databases/diffusion] [--targets 10] [--part all|paper|db] [--symmetric]
                                 [--per-target 1] [--gammas 5,10,20,100] [--paper-seeds 2]
                                 [--polish 100]
    python benchmarks/diffusion.py guided  [--model DIR] [--samples 50] [--scale 100] [--gamma 100] [--density-weight 0]
    python benchmarks/diffusion.py speed   [--model DIR] [--paper-seeds 2] [--gammas 5,10,20,100,300,1000] [--batch]
    python benchmarks/diffusion.py hyperelastic [--model databases/diffusion-digits] [--alphas 0.1,0.2,0.3,0.4,0.5,0.6]
                                 [--max-iter 30] [--seed 0] [--gammas 2,5,10,20,100,300]

``speed``: seconds per design of ``generate_cells`` for the paper's Fig. 6 targets and one target of this benchmark's
own (not in the paper), one design per call in one process: the first call includes the compilation, the later
ones reuse it; ``--batch`` adds one call with all of them (one compiled function, vectorized BFGS). It prints the
load average with every figure (the machine is shared).

``hyperelastic``: the paper's Fig. 10 alpha sweep (Sec. 3.3, as ``examples/hyperelastic.py``): two-phase
neo-Hookean composite (E0 = 1, E1 = 100, nu = 0.3), target strain-energy curve ``(1 - alpha) P1 + alpha P0`` at top
displacements 0.1 .. 0.5, gammas 2, 5, 10, 20, 100 and 300 (``--gammas``; the last stage raises B), per stage
``--max-iter`` BFGS iterations (paper: 30) or loss < 1e-3; one design per alpha from the same noise seed.
Prints the loss of the final binary cell, B, the iterations and the time per alpha, with the load average (the
paper: loss < 1e-3 and B > 0.99 with its digit prior).

``timing`` needs no trained model (random weights: the cost of a step does not depend on them).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _timeit(fn, repeat=5):
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times))


def timing(args):
    import jax
    import jax.numpy as jnp

    from metasys import Material
    from metasys.diffusion.generate import _make_pipeline, default_loss
    from metasys.diffusion.model import DiffusionModel
    from metasys.diffusion.schedule import Schedule
    from metasys.diffusion.train import DEFAULT_TRAINING, initial_state, make_optimizer, make_train_step
    from metasys.diffusion.unet import UNetConfig, count_params

    mults = tuple(int(v) for v in args.channel_mults.split(","))
    config = UNetConfig(channels=args.channels, channel_mults=mults, num_res_blocks=args.res_blocks,
                        padding="CIRCULAR" if args.circular else "SAME")
    settings = {**DEFAULT_TRAINING, "batch_size": args.batch_size}
    opt = make_optimizer(settings)
    state = initial_state(config, opt, 0)
    print(f"U-Net {config.to_dict()}: {count_params(state['params'])} parameters")
    step = make_train_step(config, Schedule(), opt, settings["ema_decay"])
    x0 = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (args.batch_size, 32, 32)).astype(np.float32))
    holder = {"s": state}

    def one():
        holder["s"], loss = step(holder["s"], x0, jax.random.PRNGKey(0))
        return loss

    first, per = _timeit(one, args.repeat)
    n_db = args.db_cells
    print(f"train step, batch {args.batch_size}: {per:.3f} s (first call incl. compile {first:.1f} s); "
          f"one epoch of {n_db} cells = {n_db / args.batch_size:.0f} steps = {n_db / args.batch_size * per / 3600:.2f} h")
    model = DiffusionModel(config, state["ema"])
    for n in (1, 50):
        w = model.noise(n)
        first, per = _timeit(lambda w=w: jnp.asarray(model.generate_images(w)), args.repeat)
        print(f"10-step DDIM sample, batch {n}: {per * 1000:.1f} ms ({per / n * 1000:.2f} ms/cell; compile {first:.1f} s)")
    for material in (Material(), Material.two_phase(1, 100)):
        vg, _ = _make_pipeline(model, material, 10, False, default_loss(material.E / 100))
        for n in (1, 4):
            w = jnp.asarray(model.noise(n))
            tg = jnp.zeros((n, 3, 3), jnp.float32)
            first, per = _timeit(lambda w=w, tg=tg, vg=vg: vg(w, model.params, jnp.float32(5.0), tg), args.repeat)
            print(f"noise-optimization loss+gradient (DDIM 10 + upsample + tanh + homogenize adjoint), E={material.E:g}, "
                  f"batch {n}: {per * 1000:.0f} ms (compile {first:.1f} s)")


def _model_summary(model):
    t = model.meta.get("training", {})
    print(f"model {model.path}: {model.meta.get('n_params')} parameters, {t.get('steps_run')}/{t.get('steps')} steps "
          f"({t.get('status')}), training time {t.get('training_time_s')} s, {t.get('seconds_per_step')} s/step, "
          f"final loss {t.get('final_loss')}")
    model.sample_cells(50, seed=0)                        # compile
    t0 = time.perf_counter()
    model.sample_cells(50, seed=1)
    print(f"sampling (10-step DDIM, batch 50, upsample + threshold): {(time.perf_counter() - t0) / 50 * 1000:.1f} ms/cell")


def designs(args):
    from metasys import Database, Material
    from metasys.diffusion import DiffusionModel, generate_cells

    model = DiffusionModel.default() if args.model is None else DiffusionModel.load(args.model)
    _model_summary(model)
    gammas = tuple(float(g) for g in (args.gammas or "5,10,20,100").split(","))
    if args.part in ("all", "paper"):
        mat = Material.two_phase(1.0, 100.0)
        c_ort = np.array([[50, 15, 0], [15, 70, 0], [0, 0, 15.0]])
        c_tet = np.array([[50, 15, 0], [15, 50, 0], [0, 0, 15.0]])
        print(f"paper Eq. 31 targets, E0 = 1, E1 = 100, nu = 0.3, gammas {gammas}, stop per stage at loss < 1e-2 or "
              f"100 iterations, symmetric={args.symmetric}")
        for name, c in (("C_ort", c_ort), ("C_tet", c_tet)):
            for seed in range(args.paper_seeds):
                r = generate_cells(c, n=1, material=mat, model=model, seed=seed, symmetric=args.symmetric, gammas=gammas,
                                   polish=args.polish)
                print(f"{name} seed {seed}: loss (binary cell) {r.loss[0]:.4g} after {r.flips[0]} polish flips "
                      f"(thresholded {r.thresholded_loss[0]:.4g}), relaxed (last gamma) {r.relaxed_loss[0]:.4g}, "
                      f"B {r.binarization[0]:.4f}, iterations {[h['iterations'][0] for h in r.history]}, "
                      f"{r.wall_time_s:.1f} s")
                print("   C =", np.array2string(r.stiffness[0], precision=2).replace("\n", ""))
    if args.part in ("all", "db"):
        db = Database.default() if args.db is None else Database.open(args.db)
        rng = np.random.default_rng(0)
        lo, hi = np.percentile(db.properties, [25, 75], axis=0)
        idx = np.flatnonzero(np.all((db.properties > lo) & (db.properties < hi), axis=1))
        targets = db.properties[rng.choice(idx, args.targets, replace=False)]
        per = args.per_target
        t0 = time.time()
        r = generate_cells(np.repeat(targets, per, axis=0), n=len(targets) * per, model=model, seed=0, symmetric=True,
                           gammas=gammas, polish=args.polish)
        wall = time.time() - t0
        # per target, the design with the lowest loss of its binary cell (what a user would keep)
        best = np.arange(len(targets)) * per + r.loss.reshape(len(targets), per).argmin(axis=1)
        rel = np.abs(r.properties[best] - targets) / np.abs(targets)
        print(f"{len(targets)} interior database targets (all four properties between the 25th and 75th percentiles), "
              f"database material, symmetric, {per} noise input(s) per target (the lowest binary loss kept), "
              f"one batched call of {len(targets) * per} designs: {wall:.1f} s")
        print("targets (C11, C12, C22, C33):")
        print(np.array2string(targets, precision=4))
        print("relative error per component of the final binary cells, rows = targets:")
        print(np.array2string(rel, precision=4))
        print(f"max {rel.max():.4f}, median {np.median(rel):.4f}, share of components <= 2%: {np.mean(rel <= 0.02):.2f}, "
              f"targets with all four <= 2%: {np.sum(np.all(rel <= 0.02, axis=1))}/{len(targets)}")
        if per > 1:
            first = np.arange(len(targets)) * per
            rel1 = np.abs(r.properties[first] - targets) / np.abs(targets)
            n_ok = np.sum(np.all(rel1 <= 0.02, axis=1))
            print(f"first noise input only: max {rel1.max():.4f}, median {np.median(rel1):.4f}, share <= 2%: "
                  f"{np.mean(rel1 <= 0.02):.2f}, targets with all four <= 2%: {n_ok}/{len(targets)}")
        print(f"B {r.binarization[best].round(4)}, loss (binary) {r.loss[best].round(4)}, thresholded "
              f"{r.thresholded_loss[best].round(4)}, polish flips {r.flips[best]}")


SPEED_TARGETS = {
    "C_ort": np.array([[50, 15, 0], [15, 70, 0], [0, 0, 15.0]]),     # paper Eq. 31
    "C_tet": np.array([[50, 15, 0], [15, 50, 0], [0, 0, 15.0]]),     # paper Eq. 31
    "C_own": np.array([[35, 12, 0], [12, 60, 0], [0, 0, 10.0]]),     # not in the paper: softer, more anisotropic
}


def _load() -> str:
    with open("/proc/loadavg") as fh:
        return fh.read().split()[0]


def speed(args):
    from metasys import Material
    from metasys.diffusion import DiffusionModel, generate_cells

    model = DiffusionModel.default() if args.model is None else DiffusionModel.load(args.model)
    mat = Material.two_phase(1.0, 100.0)
    gammas = tuple(float(g) for g in (args.gammas or "5,10,20,100").split(","))
    runs = [(name, seed) for name in SPEED_TARGETS for seed in range(args.paper_seeds)]
    print(f"generate_cells, E0 = 1 / E1 = 100 / nu = 0.3, gammas {gammas}, default tol / max_iter / polish, "
          f"one design per call, load {_load()}")
    times = []
    for k, (name, seed) in enumerate(runs):
        t0 = time.perf_counter()
        r = generate_cells(SPEED_TARGETS[name], n=1, material=mat, model=model, seed=seed, gammas=gammas)
        dt = time.perf_counter() - t0
        times.append(dt)
        print(f"{name} seed {seed}: {dt:.1f} s{' (first call, compilation included)' if k == 0 else ''}, loss (binary) "
              f"{r.loss[0]:.4g}, relaxed {r.relaxed_loss[0]:.4g}, B {r.binarization[0]:.4f}, "
              f"iterations {sum(h['iterations'][0] for h in r.history)}, load {_load()}", flush=True)
    if len(times) > 1:
        print(f"after the first call: median {np.median(times[1:]):.1f} s, max {max(times[1:]):.1f} s per design")
    if args.batch:
        t0 = time.perf_counter()
        r = generate_cells(np.stack([SPEED_TARGETS[nm] for nm, _ in runs]), n=len(runs), material=mat, model=model,
                           seed=0, gammas=gammas)
        dt = time.perf_counter() - t0
        print(f"one batched call of {len(runs)} designs (seed 0 noise): {dt:.1f} s = {dt / len(runs):.1f} s per design "
              f"(compiles for the new batch size), loss {np.round(r.loss, 4)}, B {np.round(r.binarization, 4)}, "
              f"load {_load()}")


def hyperelastic(args):
    import jax.numpy as jnp

    from metasys import Material
    from metasys.diffusion import DiffusionModel, generate_cells
    from metasys.diffusion.hyperelastic import HyperelasticTension

    model = DiffusionModel.default() if args.model is None else DiffusionModel.load(args.model)
    material = Material.two_phase(1.0, 100.0, nu=0.3)
    response = HyperelasticTension(material, displacements=(0.1, 0.2, 0.3, 0.4, 0.5), resolution=(32, 32))
    p1, p0 = response.solid_curve(phase=1), response.solid_curve(phase=0)
    gammas = tuple(float(g) for g in (args.gammas or "2,5,10,20,100,300").split(","))
    alphas = [float(a) for a in args.alphas.split(",")]
    print(f"hyperelastic tension (paper Fig. 10), model {model.path}, E0 = 1 / E1 = 100 / nu = 0.3, 32x32 mesh, "
          f"gammas {gammas}, per stage <= {args.max_iter} BFGS iterations or loss < 1e-3, seed {args.seed}, "
          f"load {_load()}")
    print("solid curves: stiff", p1.round(3), "soft", p0.round(4))
    rows = []
    for alpha in alphas:
        target = jnp.asarray((1.0 - alpha) * p1 + alpha * p0)

        def loss(energy, force, target=target):
            return jnp.mean((energy - target) ** 2)

        t0 = time.perf_counter()
        r = generate_cells(loss=loss, response=response, model=model, material=material, seed=args.seed, gammas=gammas,
                           tol=1e-3, max_iter=args.max_iter)
        dt = time.perf_counter() - t0
        iters = [h["iterations"][0] for h in r.history]
        rows.append((alpha, r.loss[0], r.binarization[0], dt, sum(iters)))
        print(f"alpha {alpha:.2f}: loss (binary cell) {r.loss[0]:.4g}, relaxed (gamma {gammas[-1]:g}) {r.relaxed_loss[0]:.4g}, "
              f"B {r.binarization[0]:.4f}, iterations {iters} = {sum(iters)}, {dt:.1f} s"
              f"{' (compilation included)' if alpha == alphas[0] else ''}, load {_load()}", flush=True)
        print("   target ", np.asarray(target).round(3), "\n   reached", r.responses[0][0].round(3))
    losses, bs = np.array([x[1] for x in rows]), np.array([x[2] for x in rows])
    print(f"paper criteria: loss < 1e-3 at {np.sum(losses < 1e-3)}/{len(rows)} alphas, B > 0.99 at "
          f"{np.sum(bs > 0.99)}/{len(rows)}; total {sum(x[3] for x in rows):.0f} s, load {_load()}")


def guided(args):
    from metasys import Material
    from metasys.diffusion import DiffusionModel, bulk_modulus, bulk_modulus_loss, diversity, frac, generate_cells

    model = DiffusionModel.default() if args.model is None else DiffusionModel.load(args.model)
    mat = Material.two_phase(1.0, 100.0)
    base = model.sample_cells(args.samples, seed=0)
    from metasys import homogenize

    k0 = bulk_modulus(homogenize(base, mat))
    print(f"unguided samples: K mean {k0.mean():.2f}, range {k0.min():.2f}..{k0.max():.2f}, diversity {diversity(base):.3f}")
    for k in (15.0, 25.0, 35.0):
        r = generate_cells(loss=bulk_modulus_loss(k), n=args.samples, material=mat, model=model, method="guided",
                           scale=args.scale, gamma=args.gamma, density_weight=args.density_weight, seed=0)
        kk = bulk_modulus(r.stiffness)
        f, f0 = frac(kk, k), frac(k0, k)
        print(f"K* = {k}: frac(1%) {f[0.01]:.3f}, frac(5%) {f[0.05]:.3f} (unguided {f0[0.01]:.3f}, {f0[0.05]:.3f}), "
              f"diversity {diversity(r.cells):.3f}, median rel. error {np.median(np.abs(kk - k) / k):.3f}, "
              f"mean density {r.cells.mean():.3f}, {r.wall_time_s:.1f} s for {args.samples} samples")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("timing", "designs", "guided", "speed", "hyperelastic"))
    ap.add_argument("--channels", type=int, default=24)
    ap.add_argument("--channel-mults", default="1,2,2,2")
    ap.add_argument("--res-blocks", type=int, default=1)
    ap.add_argument("--circular", action="store_true")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--db-cells", type=int, default=107_000)
    ap.add_argument("--model", default=None)
    ap.add_argument("--db", default=None)
    ap.add_argument("--targets", type=int, default=10)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--scale", type=float, default=100.0)
    ap.add_argument("--gamma", type=float, default=100.0)
    ap.add_argument("--density-weight", type=float, default=0.0)
    ap.add_argument("--part", choices=("all", "paper", "db"), default="all")
    ap.add_argument("--symmetric", action="store_true")
    ap.add_argument("--gammas", default=None,
                    help="designs, speed, hyperelastic: projection stages (default 5,10,20,100; hyperelastic 2,5,10,20,100,300)")
    ap.add_argument("--paper-seeds", type=int, default=2, help="designs: noise seeds per paper target")
    ap.add_argument("--per-target", type=int, default=1, help="designs: noise inputs per database target (best kept)")
    ap.add_argument("--polish", type=int, default=100, help="designs: most pixel flips of the binary polish (0: off)")
    ap.add_argument("--batch", action="store_true", help="speed: also one batched call of all the designs")
    ap.add_argument("--alphas", default="0.1,0.2,0.3,0.4,0.5,0.6", help="hyperelastic: target curve parameters (Eq. 34)")
    ap.add_argument("--max-iter", type=int, default=30, help="hyperelastic: BFGS iterations per stage (paper: 30)")
    ap.add_argument("--seed", type=int, default=0, help="hyperelastic: noise seed")
    args = ap.parse_args()
    {"timing": timing, "designs": designs, "guided": guided, "speed": speed, "hyperelastic": hyperelastic}[args.what](args)


if __name__ == "__main__":
    main()
