"""Design a cell for a target hyperelastic strain-energy curve (noise-optimization paper, Sec. 3.3).

Two-phase neo-Hookean composite (E0 = 1, E1 = 100, nu = 0.3, plane strain), bottom edge fixed, top edge
pulled up by 0.1 .. 0.5. The target curve interpolates the curves of the two solids (paper Eq. 34),
``P* = (1 - alpha) P1 + alpha P0``; the loss is the mean squared error over the load steps (Eq. 35).
The design variable is the noise input of the shipped diffusion prior (DDIM, eta = 0, 10 steps); the
gradient runs through DDIM, the tanh projection, and the Newton solve's adjoint (jax-fem weak form).

    python examples/hyperelastic.py [--alpha 0.3] [--max-iter 10] [--seed 0] [--out hyperelastic.png]

The paper uses gammas 2, 5, 10, 20, 100 with 30 iterations per stage or loss < 1e-3 (minutes per design on
2 cores); a last stage at gamma 300 raises B (Eq. 25) above 0.99 at 0-1 more iterations (databases/README.md);
``--max-iter`` trades accuracy for time.
"""

from __future__ import annotations

import argparse
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alpha", type=float, default=0.3, help="interpolation parameter of the target curve (Eq. 34)")
    ap.add_argument("--max-iter", type=int, default=10, help="BFGS iterations per projection stage (paper: 30)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resolution", type=int, default=32, help="FE mesh of the response (paper: 32)")
    ap.add_argument("--model", default=None, help="diffusion model directory (default: the shipped weights)")
    ap.add_argument("--out", default="hyperelastic.png")
    args = ap.parse_args()

    import jax.numpy as jnp

    from metasys import Material
    from metasys.diffusion import DiffusionModel, generate_cells
    from metasys.diffusion.hyperelastic import HyperelasticTension, paper_energy_curves

    material = Material.two_phase(1.0, 100.0, nu=0.3)
    model = DiffusionModel.default() if args.model is None else DiffusionModel.load(args.model)
    response = HyperelasticTension(material, displacements=(0.1, 0.2, 0.3, 0.4, 0.5),
                                   resolution=(args.resolution, args.resolution))
    p1, p0 = response.solid_curve(phase=1), response.solid_curve(phase=0)
    target = (1.0 - args.alpha) * p1 + args.alpha * p0
    print("solid curves (ours):        stiff", p1.round(3), "soft", p0.round(4))
    print("paper cubic fits (Sec. 3.3): stiff", paper_energy_curves(response.displacements)[0].round(3))
    print(f"target P* (alpha = {args.alpha:.2f}):", target.round(3))

    def loss(energy, force):
        return jnp.mean((energy - jnp.asarray(target)) ** 2)

    initial = generate_cells(loss=loss, response=response, model=model, material=material, seed=args.seed,
                             gammas=(100.0,), max_iter=0)
    t0 = time.time()
    result = generate_cells(loss=loss, response=response, model=model, material=material, seed=args.seed,
                            gammas=(2.0, 5.0, 10.0, 20.0, 100.0, 300.0), tol=1e-3, max_iter=args.max_iter, progress=True)
    print(f"initial design: loss {initial.loss[0]:.4g}, energies {initial.responses[0][0].round(3)}")
    print(f"optimized:      loss {result.loss[0]:.4g} (binary cell), B = {result.binarization[0]:.4f}, "
          f"energies {result.responses[0][0].round(3)}, {time.time() - t0:.0f} s")
    for stage in result.history:
        print(f"  gamma {stage['gamma']:>5g}: {stage['iterations'][0]:>3d} iterations, loss {stage['final_loss'][0]:.4g}, "
              f"{stage['time_s']:.0f} s")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(11, 3.4))
    ax[0].imshow(initial.cells[0], origin="lower", cmap="gray_r")
    ax[0].set_title(f"initial (seed {args.seed})")
    ax[1].imshow(result.cells[0], origin="lower", cmap="gray_r")
    ax[1].set_title(f"optimized, B = {result.binarization[0]:.3f}")
    d = response.displacements
    ax[2].plot(d, target, "k-", label="target")
    ax[2].plot(d, initial.responses[0][0], "C1o--", label="initial")
    ax[2].plot(d, result.responses[0][0], "C0s-", label="optimized")
    ax[2].set_xlabel("top displacement")
    ax[2].set_ylabel("strain energy")
    ax[2].legend()
    for a in ax[:2]:
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
