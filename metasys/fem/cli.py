"""``metasys homogenize`` (mounted by `metasys.cli`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from .._version import __version__

console = Console()


def homogenize(
    cell: Path = typer.Argument(..., help="Cell file: .npy (row 0 at the bottom), .png (as displayed, dark = solid) or .txt."),
    json_out: Path = typer.Option(None, "--json", help="Also write the result as JSON to this file."),
    E: float = typer.Option(1.0, "--E", help="Young's modulus of the solid."),
    nu: float = typer.Option(0.49, "--nu", help="Poisson's ratio of the solid."),
    e_void: float = typer.Option(1e-9, "--e-void", help="Modulus of the void relative to E."),
    plane: str = typer.Option("stress", "--plane", help="'stress' or 'strain'."),
    penal: float = typer.Option(1.0, "--penal", help="SIMP exponent for grayscale cells."),
):
    """Homogenized stiffness C of a pixel cell (periodic, Voigt notation with engineering shear)."""
    from ..io import load_cell, write_json
    from ..material import Material
    from . import homogenize as run
    from .element import PROPERTY_NAMES, properties_of

    material = Material(E=E, nu=nu, E_void=e_void, plane=plane, penal=penal)
    rho = load_cell(cell)
    c = run(rho, material)
    table = Table(title=f"C of {cell.name}  ({rho.shape[0]} x {rho.shape[1]}, solid fraction {rho.mean():.4f})")
    for label in ("", "e11", "e22", "g12"):
        table.add_column(label, justify="right")
    for name, row in zip(("s11", "s22", "s12"), c):
        table.add_row(name, *(f"{v: .6g}" for v in row))
    console.print(table)
    p = properties_of(c)
    console.print("  ".join(f"{k} = {v:.6g}" for k, v in zip(PROPERTY_NAMES, p)))
    if json_out is not None:
        write_json(json_out, {
            "cell": str(cell),
            "shape": list(rho.shape),
            "volume_fraction": float(rho.mean()),
            "material": material.to_dict(),
            "C": np.asarray(c).tolist(),
            "properties": dict(zip(PROPERTY_NAMES, map(float, p))),
            "metasys_version": __version__,
        })
        console.print(f"wrote {json_out}")


COMMANDS = {"homogenize": homogenize}
