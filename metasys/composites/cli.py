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
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
):
    """Generate (or resume) a dataset of random microstructures with their parameters and K."""
    try:
        from .dataset import build_dataset, dataset_info

        build_dataset(out, n, seed, table_path=table, command=_command(), progress=not quiet, compute_k=not no_k)
        info = dataset_info(out)
    except MetasysError as exc:
        _fail(exc)
    console.print(f"{out}: {info['n_samples']} samples (seed {info['seed']})")


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
    image: Path = typer.Argument(..., help=".npy material image (3, ny, nx) or (2, ny, nx): E [GPa], nu[, rho]."),
):
    """Bulk modulus of one material image (affine boundary displacements, plane stress)."""
    import numpy as np

    from ..errors import FileFormatError, InvalidValueError

    try:
        if not image.exists():
            raise FileFormatError(f"image: {str(image)!r} does not exist")
        arr = np.load(image)
        if arr.ndim != 3 or arr.shape[0] not in (2, 3):
            raise InvalidValueError(f"image: expected an array (3, ny, nx) of E, nu, rho, got shape {arr.shape}")
        from .homogenize import bulk_modulus

        k = bulk_modulus(arr[0], arr[1])
    except (MetasysError, ValueError) as exc:
        _fail(exc)
    console.print(f"K = {k:.6g}")


@app.command("backproject")
def backproject_cmd(
    image: Path = typer.Argument(..., help=".npy material image (3, 64, 64): E [GPa], nu, rho (--normalized: in [-1, 1])."),
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


GROUPS = {"composites": app}
