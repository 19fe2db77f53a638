"""``metasys composites ...``: material table, dataset, bulk modulus, backprojection and targets."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer
from rich.console import Console

from ..errors import MetasysError

app = typer.Typer(help="Particle-matrix composites (the loss-guided paper's design problem).", no_args_is_help=True)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def _fail(exc: Exception):
    err_console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(code=2)


def _command() -> str:
    return "metasys " + " ".join(shlex.quote(a) for a in sys.argv[1:])


@app.command("materials")
def materials(
    out: Path = typer.Option(..., "--out", help="CSV file to write."),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic completion."),
    real: Path = typer.Option(None, "--real", help="Real-material extract (default: the shipped real_materials.csv)."),
):
    """Build the 500-material table (real materials completed by the seeded recipe, 168 chunks)."""
    try:
        from .materials import load_table
        from .recipe import build_table

        table = build_table(seed, None if real is None else load_table(real), command=_command())
        table.save(out)
    except MetasysError as exc:
        _fail(exc)
    console.print(f"wrote {out}: {len(table)} materials in {len(table.chunks)} non-empty chunks")


@app.command("dataset")
def dataset(
    out: Path = typer.Option(..., "--out", help="HDF5 file to create, or to resume if it holds an unfinished build."),
    n: int = typer.Option(10_000, "--n", help="Number of samples."),
    seed: int = typer.Option(0, "--seed", help="Seed of the dataset (sample i uses the generator [seed, i])."),
    table: Path = typer.Option(None, "--table", help="Material table CSV (default: the shipped one)."),
    no_k: bool = typer.Option(False, "--no-k", help="Do not compute each sample's bulk modulus."),
    dim: int = typer.Option(2, "--dim", help="2: 64 x 64 pixel circles; 3: 32 x 32 x 32 voxel spheres."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
):
    """Generate (or resume) a dataset of random microstructures with their parameters and K."""
    from ..errors import InvalidValueError

    try:
        if dim not in (2, 3):
            raise InvalidValueError(f"--dim: expected 2 or 3, got {dim}")
        from .dataset import build_dataset, dataset_info

        build_dataset(out, n, seed, table_path=table, command=_command(), progress=not quiet, compute_k=not no_k, dim=dim)
        info = dataset_info(out)
    except MetasysError as exc:
        _fail(exc)
    console.print(f"{out}: {info['n_samples']} samples (seed {info['seed']}, {info.get('dim', 2)}D)")


@app.command("targets")
def targets(
    path: Path = typer.Argument(..., help="A dataset built with K (use a seed not used for training)."),
    count: int = typer.Option(5, "--count", help="Number of equally spaced targets."),
):
    """Target bulk moduli: equally spaced from the 1- to the 99-percentile of the dataset's K."""
    try:
        from .dataset import load_dataset
        from .metrics import targets_from

        values = targets_from(load_dataset(path, images=False).K, count)
    except MetasysError as exc:
        _fail(exc)
    console.print(" / ".join(f"{v:.1f}" for v in values))


@app.command("bulk-modulus")
def bulk_modulus_cmd(
    image: Path = typer.Argument(..., help=".npy material image (3, ny, nx) or (2, ny, nx): E [GPa], nu[, rho]; or a "
                                 "voxel field (3, nz, ny, nx)."),
):
    """Bulk modulus of one material image (affine boundary displacements, plane stress; voxels: HEX8, 3D)."""
    import numpy as np

    from ..errors import FileFormatError, InvalidValueError

    try:
        if not image.exists():
            raise FileFormatError(f"image: {str(image)!r} does not exist")
        arr = np.load(image)
        if arr.ndim not in (3, 4) or arr.shape[0] not in (2, 3):
            raise InvalidValueError(f"image: expected an array (3, ny, nx) or (3, nz, ny, nx) of E, nu, rho, got shape "
                                    f"{arr.shape}")
        from .homogenize import bulk_modulus

        k = bulk_modulus(arr[0], arr[1], dim=arr.ndim - 1)
    except (MetasysError, ValueError) as exc:
        _fail(exc)
    console.print(f"K = {k:.6g}")


@app.command("backproject")
def backproject_cmd(
    image: Path = typer.Argument(..., help=".npy material image (3, 64, 64) or (3, 32, 32, 32): E [GPa], nu, rho "
                                 "(--normalized: in [-1, 1])."),
    normalized: bool = typer.Option(False, "--normalized", help="The image is in the normalized space [-1, 1]^3."),
    seed: int = typer.Option(0, "--seed", help="Seed of the re-sampled microstructures."),
    table: Path = typer.Option(None, "--table", help="Material table CSV (default: the shipped one)."),
):
    """Backproject an image to table materials, radius and volume fraction, and print K_theta."""
    import numpy as np

    from ..errors import FileFormatError

    try:
        if not image.exists():
            raise FileFormatError(f"image: {str(image)!r} does not exist")
        from .backproject import backproject, k_theta
        from .materials import load_table

        tab = load_table(table)
        result = backproject(np.load(image), tab, normalized=normalized)
        k = k_theta(result, tab, seed=seed)
    except MetasysError as exc:
        _fail(exc)
    m, p = tab.values[result.matrix], tab.values[result.particle]
    console.print(f"matrix {tab.names[result.matrix]} {m}\nparticle {tab.names[result.particle]} {p}\n"
                  f"radius {result.radius:.4f}  volume fraction {result.volume_fraction:.4f}  K_theta {k:.4g}")


@app.command("train-prior")
def train_prior_cmd(
    out: Path = typer.Option(..., "--out", help="Prior directory to write (resumed if it holds this run's checkpoint)."),
    dataset_path: Path = typer.Option(None, "--dataset", help="Training dataset (default: the shipped 10k dataset); a 3D "
                                      "dataset (--dim 3) trains a 3D prior."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initialization, mini-batches, time steps and noise."),
    steps: int = typer.Option(None, "--steps", help="Training steps (default 9000; 3D: 4000)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Mini-batch size (default 16; 3D: 4)."),
    time_limit: float = typer.Option(None, "--time-limit", help="Stop cleanly after this many seconds (rerun to resume)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
):
    """Train the unconditional composite prior (v-prediction, zero-terminal-SNR linear schedule), 2D or 3D as the dataset."""
    from ..errors import FileFormatError

    try:
        from .dataset import dataset_info, load_dataset
        from .materials import default_table_path
        from .training import train_prior

        path = default_table_path().parent / "dataset.h5" if dataset_path is None else dataset_path
        if not Path(path).exists():
            raise FileFormatError(f"dataset: {str(path)!r} does not exist")
        data = load_dataset(path)
        info = dataset_info(path)
        training = {} if batch_size is None else {"batch_size": batch_size}
        record = train_prior(data.images, out, steps=steps, seed=seed, training=training, time_limit=time_limit,
                             source={"dataset": Path(path).name, "n_images": len(data), "dataset_seed": info["seed"],
                                     **({"dim": 3} if data.dim == 3 else {})},
                             command=_command(), progress=not quiet, log=console.print)
    except MetasysError as exc:
        _fail(exc)
    t = record["training"]
    console.print(f"{out}: {t['steps_run']}/{t['steps']} steps ({t['status']}), loss {t['final_loss']:.4f}")


@app.command("design")
def design_cmd(
    target: float = typer.Option(..., "--target", help="Target bulk modulus K* [GPa]."),
    n: int = typer.Option(200, "--n", help="Number of designs."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling and the evaluation."),
    objective: str = typer.Option("J1", "--objective", help="J1 = (K - K*)^2, or J2 = J1 + lambda * density."),
    density_weight: float = typer.Option(0.0, "--density-weight", help="lambda of J2."),
    method: str = typer.Option("guided", "--method", help="guided, unguided or bayesian (the baselines)."),
    prior: Path = typer.Option(None, "--prior", help="Prior directory (default: the shipped databases/composites-prior)."),
    table: Path = typer.Option(None, "--table", help="Material table CSV (default: the shipped one)."),
    steps: int = typer.Option(100, "--steps", help="DDIM steps of the guided sampling."),
    iterations: int = typer.Option(100, "--iterations", help="Evaluations of the Bayesian-optimization baseline."),
    n_theta: int = typer.Option(10, "--n-theta", help="Re-sampled microstructures per design for K_theta (paper: 10)."),
    dim: int = typer.Option(2, "--dim", help="2: 64 x 64 pixel circles; 3: 32^3 voxel spheres (default prior: "
                            "databases/composites3d-prior)."),
    out: Path = typer.Option(None, "--out", help="Directory for designs.npz and designs.png."),
):
    """Inverse design for a target bulk modulus: guided sampling, backprojection, K_theta, frac and cov."""
    import numpy as np

    from ..errors import FileFormatError, InvalidValueError

    try:
        if not (np.isfinite(target) and target > 0):
            raise InvalidValueError(f"--target: expected a positive bulk modulus K* [GPa], got {target!r}")
        if n < 1:
            raise InvalidValueError(f"--n: expected a positive number of designs, got {n}")
        if objective not in ("J1", "J2"):
            raise InvalidValueError(f"--objective: expected J1 or J2, got {objective!r}")
        if not (np.isfinite(density_weight) and density_weight >= 0) or (objective == "J1" and density_weight):
            raise InvalidValueError(f"--density-weight: expected lambda >= 0 with --objective J2, got {density_weight!r}")
        if method not in ("guided", "unguided", "bayesian"):
            raise InvalidValueError(f"--method: expected guided, unguided or bayesian, got {method!r}")
        if steps < 2 or iterations < 1:
            raise InvalidValueError(f"--steps / --iterations: expected >= 2 / >= 1, got {steps} / {iterations}")
        if n_theta < 1:
            raise InvalidValueError(f"--n-theta: expected a positive number of re-sampled microstructures, got {n_theta}")
        if dim not in (2, 3):
            raise InvalidValueError(f"--dim: expected 2 or 3, got {dim}")
        if dim == 3 and method == "bayesian":
            raise InvalidValueError("--method: the Bayesian-optimization baseline is 2D only (--dim 2)")
        if table is not None and not table.exists():
            raise FileFormatError(f"--table: material table {str(table)!r} does not exist")
        if prior is not None and not (prior / "prior.json").exists():
            raise FileFormatError(f"--prior: {str(prior)!r} holds no prior (prior.json)")
        from .design import inverse_design
        from .materials import load_table

        result = inverse_design(target, n, seed, objective, density_weight, method=method, prior=prior,
                                table=load_table(table), steps=steps, iterations=iterations, n_theta=n_theta, dim=dim)
        if out is not None:
            from .plots import design_grid

            out.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(out / "designs.npz", k_target=target, matrix=result.matrix, particle=result.particle,
                                matrix_index=result.matrix_index, particle_index=result.particle_index,
                                radius=result.radius, volume_fraction=result.volume_fraction, k_theta=result.k_theta,
                                k_sample=result.k_sample, eps_r=result.eps_r, images=result.images,
                                density=result.density)
            if dim == 2:
                design_grid([result], out / "designs.png")
            else:
                from .plots import slice_plot

                best = int(np.argmin(result.eps_r))
                slice_plot(result.images[best], out / "designs.png",
                           title=f"best of {n}: K_s {result.k_sample[best]:.4g} / K_theta {result.k_theta[best]:.4g}")
    except MetasysError as exc:
        _fail(exc)
    console.print(f"K* = {target:g}: {n} designs ({method}, {objective}) in {result.wall_time_s:.0f} s; "
                  f"eps_r median {np.median(result.eps_r):.3f}; frac 1% / 5%: {result.frac(0.01):.3f} / "
                  f"{result.frac(0.05):.3f}; cov 1% / 5%: {result.cov(0.01):.3f} / {result.cov(0.05):.3f}")
    best = int(np.argmin(result.eps_r))
    console.print(f"best: matrix {result.matrix[best]}, particle {result.particle[best]}, radius "
                  f"{result.radius[best]:.3f}, volume fraction {result.volume_fraction[best]:.3f}, K_theta "
                  f"{result.k_theta[best]:.4g}")


GROUPS = {"composites": app}
