"""Command-line interface: ``metasys --help``."""

from __future__ import annotations

import typer
from rich.console import Console

from ._version import __version__
from .errors import MetasysError

app = typer.Typer(help="metasys: design multiscale mechanical metamaterial systems.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)


def _version(value: bool):
    if value:
        console.print(f"metasys {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit.")):
    """metasys: design multiscale mechanical metamaterial systems."""


def _mount() -> None:
    """Mount each subpackage's commands: ``COMMANDS`` (top level), ``GROUPS`` (sub-apps) and ``TRAIN_COMMANDS``
    (under ``metasys train``)."""
    from .composites import cli as composites_cli
    from .database import cli as database_cli
    from .diffusion import cli as diffusion_cli
    from .fem import cli as fem_cli
    from .latent import cli as latent_cli
    from .pipeline import cli as pipeline_cli
    from .selection import cli as selection_cli

    train = typer.Typer(help="Train the learned models.", no_args_is_help=True)
    for module in (fem_cli, database_cli, latent_cli, diffusion_cli, selection_cli, pipeline_cli, composites_cli):
        for name, command in getattr(module, "COMMANDS", {}).items():
            app.command(name)(command)
        for name, group in getattr(module, "GROUPS", {}).items():
            app.add_typer(group, name=name)
        for name, command in getattr(module, "TRAIN_COMMANDS", {}).items():
            train.command(name)(command)
    app.add_typer(train, name="train")


_mount()


def main():
    """Entry point: run the CLI, turning metasys errors into a one-line message and exit code 2."""
    try:
        app()
    except MetasysError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
