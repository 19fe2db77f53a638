"""``metasys db ...``: build, inspect, verify, merge and export databases."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

db_app = typer.Typer(help="Build and inspect microstructure databases.", no_args_is_help=True)
console = Console()


@db_app.command("build")
def build(
    path: Path = typer.Argument(..., help="HDF5 file to create, or to resume if it holds an unfinished build."),
    cells: int = typer.Option(100_000, "--cells", help="Stop when the database holds this many cells."),
    seeds: int = typer.Option(1400, "--seeds", help="Number of topology-optimized seed cells."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the whole build."),
    workers: int = typer.Option(2, "--workers", help="Size of the local dask cluster."),
    scheduler: str = typer.Option(None, "--scheduler", help="Address of an existing dask scheduler (overrides --workers)."),
    parents_per_round: int = typer.Option(8000, "--parents-per-round", help="Parents perturbed per round."),
    time_limit: float = typer.Option(None, "--time-limit", help="Stop cleanly after this many seconds (resumable)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress display."),
):
    """Generate a database: SIMP seeds, defect repair, stochastic perturbation rounds (paper Sec. 3.2)."""
    from .build import BuildSettings, build_database

    settings = BuildSettings(n_cells=cells, n_seeds=seeds, seed=seed, parents_per_round=parents_per_round)
    command = "metasys " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    db = build_database(path, settings, workers=workers, scheduler=scheduler, command=command, progress=not quiet,
                        stop_after=time_limit)
    status = "complete" if db.build_state.get("complete") else "stopped; run the same command to resume"
    console.print(f"{db.path}: {len(db)} cells ({status})")


def _open(path: Path | None):
    from .storage import Database

    return Database.default() if path is None else Database.open(path)


@db_app.command("info")
def info(
    path: Path = typer.Argument(None, help="Database file (default: the shipped database)."),
    plot: Path = typer.Option(None, "--plot", help="Write the pairwise property scatter (PNG) here."),
):
    """Counts, property ranges, provenance and build metadata."""
    from ..fem.element import PROPERTY_NAMES
    from .perturb import coverage
    from .storage import SOURCES

    db = _open(path)
    console.print(f"[bold]{db.path}[/]  {len(db)} cells of {db.resolution[0]} x {db.resolution[1]}")
    meta = db.metadata
    console.print(f"material {db.material.to_dict()}\nbuilt by: {meta.get('command') or '-'} (seed {meta.get('seed')}), "
                  f"metasys {meta.get('library_version')}, {meta.get('created')}")
    if len(db):
        table = Table("property", "min", "max", "mean")
        for name, col in zip(PROPERTY_NAMES, db.properties.T):
            table.add_row(name, f"{col.min():.4g}", f"{col.max():.4g}", f"{col.mean():.4g}")
        console.print(table)
        counts = np.bincount(db.source, minlength=len(SOURCES))
        console.print("provenance: " + ", ".join(f"{s} {c}" for s, c in zip(SOURCES, counts) if c))
        lo, hi = db.properties.min(axis=0), db.properties.max(axis=0)
        console.print(f"coverage: {coverage(db.properties, lo, hi)} occupied bins of 20^4 over the property box")
    console.print("feasibility field: " + ("stored" if db._feasibility is not None else "none"))
    if plot is not None:
        from .plots import plot_property_space

        plot_property_space(db.properties, plot, db.source, title=f"{db.path.name}: {len(db)} cells")
        console.print(f"wrote {plot}")


@db_app.command("verify")
def verify(
    path: Path = typer.Argument(None, help="Database file (default: the shipped database)."),
    sample: int = typer.Option(200, "--sample", help="Cells re-homogenized to check the stored C."),
):
    """Check integrity (shapes, hashes, duplicates, symmetry, validity, properties); exit code 1 on problems."""
    report = _open(path).verify(sample=sample)
    console.print(str(report))
    if not report.ok:
        raise typer.Exit(1)


@db_app.command("merge")
def merge(
    out: Path = typer.Argument(..., help="New database file."),
    inputs: list[Path] = typer.Argument(..., help="Databases to merge (same material and resolution)."),
):
    """Merge databases into a new one, dropping duplicates and keeping provenance."""
    from ..errors import InvalidValueError
    from .storage import SOURCES, Database

    sources = [Database.open(p) for p in inputs]
    first = sources[0]
    for db in sources[1:]:
        if db.material != first.material or db.resolution != first.resolution:
            raise InvalidValueError(f"merge: {db.path} has material {db.material} / resolution {db.resolution}, "
                                    f"unlike {first.path} ({first.material} / {first.resolution})")
    merged = Database.create(out, material=first.material, resolution=first.resolution,
                             command="metasys " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    for db in sources:
        offset = len(merged)
        for code in np.unique(db.source):
            sel = np.flatnonzero(db.source == code)
            parent = np.where(db.parent[sel] >= 0, db.parent[sel] + offset, -1)
            merged.append(db.get_cells(sel), source=SOURCES[code], parent=parent, iteration=db.iteration[sel],
                          stiffness=db.C[sel])
    if len(merged) > 1:
        merged.build_feasibility()
    console.print(f"{out}: {len(merged)} cells from {', '.join(str(p) for p in inputs)}")


@db_app.command("export")
def export(
    path: Path = typer.Argument(..., help="Database file."),
    out: Path = typer.Argument(..., help=".csv (properties and provenance) or .npz (also C, and cells with --cells)."),
    cells: bool = typer.Option(False, "--cells", help="Include the cells (bool (N, ny, nx)) in an .npz."),
):
    """Export properties (CSV) or arrays (NPZ)."""
    from ..errors import InvalidValueError
    from ..io import atomic_path

    db = _open(path)
    prov = db.provenance()
    if out.suffix == ".csv":
        with atomic_path(out) as tmp:
            with open(tmp, "w") as fh:
                fh.write("index,C11,C12,C22,C33,source,parent,iteration\n")
                for i, (p, s, par, it) in enumerate(zip(db.properties, prov["source"], prov["parent"], prov["iteration"])):
                    fh.write(f"{i},{float(p[0])!r},{float(p[1])!r},{float(p[2])!r},{float(p[3])!r},{s},{int(par)},{int(it)}\n")
    elif out.suffix == ".npz":
        arrays = {"properties": db.properties, "C": db.C, "source": prov["source"], "parent": prov["parent"],
                  "iteration": prov["iteration"]}
        if cells:
            arrays["cells"] = db.get_cells()
        with atomic_path(out) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
    else:
        raise InvalidValueError(f"export: output must end in .csv or .npz, got {out.name!r}")
    console.print(f"wrote {out} ({len(db)} cells)")


GROUPS = {"db": db_app}
