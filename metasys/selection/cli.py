"""``metasys family``: metamaterial families along the gradation of paper Eq. 7 (Sec. 4.3, Fig. 12-13).

The command function `family` is registered by the main app (``app.command("family")(family)``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import typer
from rich.console import Console

from ..errors import InvalidValueError, MetasysError

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def _fail(exc: Exception):
    err_console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(code=2)


def _check(n, delta, k, n_ends, interpolate, extrapolate, link):
    """Validate the options before anything slow (the latent model takes ~10 s to load)."""
    for name, value, low in (("--n", n, 1), ("--k", k, 1), ("--n-ends", n_ends, 1), ("--interpolate", interpolate, 0)):
        if value < low:
            raise InvalidValueError(f"{name}: expected an integer >= {low}, got {value}")
    if not (delta > 0 and np.isfinite(delta)):
        raise InvalidValueError(f"--delta: expected a positive distance in property units, got {delta}")
    if not 0.0 <= extrapolate <= 1.0:
        raise InvalidValueError(f"--extrapolate: expected a fraction of the latent path in [0, 1], got {extrapolate}")
    if link not in ("latent", "rank"):
        raise InvalidValueError(f"--link: expected 'latent' or 'rank', got {link!r}")


def family(
    out: Path = typer.Option(..., "--out", help="Folder for the family images, property plots, families.json and families.npz."),
    n: int = typer.Option(5, "--n", help="Number of disjoint families to find (successive shortest paths)."),
    delta: float = typer.Option(
        0.03, "--delta", help="Cells within this Euclidean distance (property units) of the gradation curve take part."),
    k: int = typer.Option(5, "--k", help="Out-edges per cell: its k latent-nearest cells of higher C11 rank (paper: 5)."),
    n_ends: int = typer.Option(
        50, "--n-ends", help="Cells joined to the source (lowest C11) and to the destination (highest C11) (paper: 50)."),
    link: str = typer.Option(
        "latent", "--link", help="'latent': the k latent-nearest higher-ranked cells; 'rank': the next k cells by C11."),
    interpolate: int = typer.Option(
        10, "--interpolate", help="Members decoded along each family's latent path (Fig. 13b); 0 to skip."),
    extrapolate: float = typer.Option(
        0.0, "--extrapolate", help="Extend the interpolation beyond both ends by this fraction of the latent path."),
    c11_min: float = typer.Option(0.02, "--c11-min", help="Lower end of the gradation, as a fraction of the solid C11."),
    c11_max: float = typer.Option(1.0, "--c11-max", help="Upper end of the gradation, as a fraction of the solid C11."),
    model: Path = typer.Option(None, "--model", help="Latent model directory (default: the shipped databases/vae)."),
    db: Path = typer.Option(None, "--db", help="Database (default: the one the model was trained on)."),
):
    """Find metamaterial families along the gradation of paper Eq. 7 (Sec. 4.3) and plot them (Fig. 12-13)."""
    try:
        _check(n, delta, k, n_ends, interpolate, extrapolate, link)
        from ..database import Database
        from ..fem import homogenize
        from ..fem.element import properties_of
        from ..io import atomic_path, write_json
        from ..latent.api import LatentModel
        from .families import distance_to_curve, family_graph, paper_gradation
        from .plots import plot_family_cells, plot_family_graph, plot_family_properties

        t0 = time.perf_counter()
        database = None if db is None else Database.open(db)
        lm = LatentModel.default(database=database) if model is None else LatentModel.load(model, database=database)
        database = lm.database
        # The gradation of Eq. 7 for the database's base material (nu_M, solid C11).
        solid = properties_of(homogenize(np.ones(database.resolution), database.material))
        c11_solid = float(solid[0])
        grad = paper_gradation(nu_M=database.material.nu, C11_M=c11_solid, c11_min=c11_min, c11_max=c11_max)
        fg = family_graph(grad, delta=delta, k=k, n_ends=n_ends, model=lm, link=link)
        fams = fg.families(n)
        t_find = time.perf_counter() - t0
        if not fams:
            raise InvalidValueError(f"no source-destination path in the graph of {len(fg.indices)} cells within "
                                    f"delta={delta}; increase --delta or --k")
        interp = [f.interpolate(interpolate, extrapolate=extrapolate) for f in fams] if interpolate else None
        out.mkdir(parents=True, exist_ok=True)
        files = [out / "families.png", out / "family_graph.png", out / "family_properties.png"]
        plot_family_cells(fams, files[0], c11_solid=c11_solid,
                          title=f"{len(fams)} metamaterial families (C11 / C11_solid increasing to the right)")
        plot_family_graph(fg, fams, files[1], coords=lm.pca(2).transform(fg.z))
        plot_family_properties(fams, grad, files[2], c11_solid=c11_solid, title="Family properties (Fig. 13a)")
        if interp is not None:
            files.append(out / "family_properties_interpolated.png")
            plot_family_properties(fams, grad, files[-1], interpolated=interp, c11_solid=c11_solid,
                                   title=f"Families with {interpolate} decoded members each (Fig. 13b)")
            files.append(out / "families_interpolated.png")
            plot_family_cells(interp, files[-1], c11_solid=c11_solid, title="Decoded members along each latent path")
        arrays = {}
        summary = []
        for r, f in enumerate(fams):
            arrays[f"family{r}_indices"], arrays[f"family{r}_cells"], arrays[f"family{r}_z"] = f.indices, f.cells, f.z
            entry = {"indices": f.indices.tolist(), "properties": f.properties.tolist(), "latent_path_length": f.path_length(),
                     "deviation_max": float(f.distance.max() / c11_solid), "deviation_mean": float(f.distance.mean() / c11_solid)}
            if interp is not None:
                d, _ = distance_to_curve(interp[r].properties, grad)
                arrays[f"family{r}_interpolated_cells"] = interp[r].cells
                entry.update(interpolated_properties=interp[r].properties.tolist(),
                             interpolated_deviation_max=float(d.max() / c11_solid),
                             interpolated_deviation_mean=float(d.mean() / c11_solid))
            summary.append(entry)
        npz = out / "families.npz"
        with atomic_path(npz) as tmp:
            np.savez_compressed(tmp, **arrays)
        write_json(out / "families.json", {
            "gradation": {"equation": "VAE paper Eq. 7", "nu_M": grad.nu_M, "C11_M": grad.C11_M, "c11_min": c11_min,
                          "c11_max": c11_max},
            "settings": {"n": n, "delta": delta, "k": k, "n_ends": n_ends, "link": link, "interpolate": interpolate,
                         "extrapolate": extrapolate},
            "database": str(database.path), "model": str(lm.directory), "graph_nodes": int(len(fg.indices)),
            "deviation_unit": "solid C11", "families": summary, "time_s": t_find})
        files += [npz, out / "families.json"]
    except MetasysError as exc:
        _fail(exc)
    if len(fams) < n:
        err_console.print(f"[yellow]warning:[/] only {len(fams)} of {n} disjoint families exist; increase --delta or --k")
    for r, e in enumerate(summary):
        line = (f"family {r + 1}: {len(e['indices'])} cells, C11 {e['properties'][0][0] / c11_solid:.3f}.."
                f"{e['properties'][-1][0] / c11_solid:.3f} of solid, deviation from the gradation max "
                f"{e['deviation_max']:.4f} mean {e['deviation_mean']:.4f}")
        if interp is not None:
            line += f"; decoded: max {e['interpolated_deviation_max']:.4f} mean {e['interpolated_deviation_mean']:.4f}"
        console.print(line)
    for f in files:
        console.print(f"wrote {f}")


COMMANDS = {"family": family}
