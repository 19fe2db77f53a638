"""``metasys design``: one command from a problem to a verified, exported structure."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()
EXPORTS = ("structure.png", "structure.svg", "structure.vtu", "structure.stl")


def design(
    problem: str = typer.Argument(..., help="'bridge', 'smiley', 'graded' or a problem file (.toml / .json)."),
    out: Path = typer.Option(None, "--out", help="Output folder (default: ./design-<problem>)."),
    k: int | None = typer.Option(None, "--k", help="Candidate cells per macro element (default: 40 on grids of at most "
                                             "400 cells, else 10).", show_default=False),
    seed: int = typer.Option(0, "--seed", help="Seed of every stochastic step."),
    db: Path = typer.Option(None, "--db", help="Database file (default: the shipped databases/default.h5)."),
    model: Path = typer.Option(None, "--model", help="Latent model folder (default: the shipped databases/vae)."),
    generator: bool | None = typer.Option(None, "--generator/--no-generator",
                                          help="Generate cells with the shipped diffusion prior for targets the database "
                                               "does not cover (they compete with database cells by error). Default: "
                                               "only with --no-refine.", show_default=False),
    refine: bool = typer.Option(True, "--refine/--no-refine",
                                help="Refine the design at full scale: cell swaps ranked by the adjoint of the full-scale "
                                     "RRMSE, each checked by a full-scale solve and kept only if better."),
    refine_budget: float | None = typer.Option(None, "--refine-budget", help="Seconds after which the refinement starts no "
                                               "new step (default: no limit; it runs a fixed number of steps).",
                                               show_default=False),
    thickness: float = typer.Option(0.1, "--thickness", help="STL extrusion thickness in macro units (cell side 1)."),
    no_exports: bool = typer.Option(False, "--no-exports", help="Write only structure.npy, report.json and the plots."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress display."),
):
    """Design a metamaterial structure for PROBLEM, verify it at full scale and export it."""
    from ..database import Database
    from ..errors import InvalidValueError
    from ..macro.plots import plot_deformed, plot_property_maps
    from .plots import deformation_scale, plot_refinement, plot_target_profiles
    from .run import _check_problem
    from .run import design as run

    if refine_budget is not None and not refine_budget >= 0:
        raise InvalidValueError(f"--refine-budget: expected seconds >= 0, got {refine_budget!r}")

    spec = _check_problem(problem if problem in ("bridge", "smiley", "graded") else Path(problem))
    out = Path(out) if out is not None else Path(f"design-{spec.name}")
    database = Database.open(db) if db is not None else None
    latent = None
    if model is not None:
        from ..latent.api import LatentModel

        latent = LatentModel.load(model, database=database)
    console.print(f"[bold]metasys design[/] {spec.name}: {spec.width} x {spec.height} cells -> {out}")
    result = run(spec, database, latent, seed=seed, k=k, generator={None: "auto", True: "prior", False: None}[generator],
                 refine=refine,
                 refine_budget=refine_budget, progress=not quiet, log=None if quiet else console.print)
    result.save(out)
    plot_property_maps(result.properties, out / "properties.png", title=f"{spec.name}: optimized properties")
    scale = deformation_scale(result.full_displacement, spec)
    plot_deformed(result.full_displacement, spec, out / "full_scale_deformed.png", scale=scale,
                  title=f"{spec.name}: full-scale nodes vs target (displacements x{scale:g})")
    mapped = any(h.get("stage") == "space mapping" and h["accepted"] for h in result.refinement or [])
    plot_target_profiles(spec, out / "target_profiles.png", full=result.full_displacement, macro=result.macro_displacement,
                         macro_label="macro model (re-targeted by space mapping)" if mapped else "macro model")
    written = ["structure.npy", "report.json", "problem.json", "design.npz", "properties.png", "full_scale_deformed.png",
               "target_profiles.png"]
    if result.refinement is not None:
        plot_refinement(result.refinement, out / "refinement.png", title=f"{spec.name}: full-scale refinement")
        written.append("refinement.png")
    if not no_exports:
        result.export(out / "structure_deformed.png", deformed=True, scale=scale)
        written.append("structure_deformed.png")
        for name in EXPORTS:
            options = {"thickness": thickness} if name.endswith(".stl") else {}
            result.export(out / name, **options)
            written.append(name)
    _summary(result, out, written)


def export(
    design_dir: Path = typer.Argument(..., help="A folder written by 'metasys design' (or Design.save)."),
    path: Path = typer.Argument(..., help="Output file: .npy, .png, .svg, .vtu or .stl."),
    deformed: bool = typer.Option(False, "--deformed", help=".png: overlay the full-scale deformed shape on the target."),
    scale: float | None = typer.Option(None, "--scale", help="--deformed: displacement magnification (default: the largest "
                                       "displacement drawn at 25% of the grid's smaller side).", show_default=False),
    thickness: float = typer.Option(0.1, "--thickness", help=".stl: extrusion thickness in macro units (cell side 1)."),
    missing: str = typer.Option("nan", "--missing", help=".vtu: pixels without a full-scale displacement: nan, drop or error."),
):
    """Export a saved design's structure to PATH (format by extension)."""
    from .result import Design

    result = Design.load(design_dir)
    suffix = path.suffix.lower()
    options = {"deformed": True} if deformed else {}    # export_structure rejects it for formats other than .png
    if suffix == ".png":
        from .plots import deformation_scale

        options["scale"] = deformation_scale(result.full_displacement, result.problem) if scale is None else scale
    elif suffix == ".stl":
        options["thickness"] = thickness
    elif suffix == ".vtu":
        options["missing"] = missing
    console.print(f"wrote {result.export(path, **options)}")


def _summary(result, out: Path, written: list[str]) -> None:
    r = result.report()
    table = Table(title=f"{r['problem']}: {r['grid'][0]} x {r['grid'][1]} cells ({r['mode']} mode)", show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="right")
    table.add_row("RRMSE full scale", f"{r['rrmse_full']:.4f}")
    if "refinement" in r:
        history = r["refinement"]
        table.add_row("RRMSE full scale before refinement", f"{history[0]['rrmse_full']:.4f}")
        table.add_row("refinement swaps kept / full-scale solves",
                      f"{sum(h['swaps'] for h in history if h['accepted'])} / {len(history) - 1}")
    table.add_row("RRMSE macro", f"{r['rrmse_macro']:.4f}")
    table.add_row("solid components", str(r["n_components"]))
    table.add_row("neighbour pairs with theta_G = 0", f"{r['theta_G_zero_fraction']:.1%}")
    table.add_row("uncovered targets", str(r["uncovered_elements"]))
    table.add_row("chosen cells not in the database", str(r["cells_not_in_database"]))
    for stage, seconds in r["timings"].items():
        table.add_row(f"time {stage}", f"{seconds:.1f} s")
    console.print(table)
    console.print(f"wrote {out}/: " + ", ".join(written))


COMMANDS = {"design": design, "export": export}
