"""``metasys train vae``, ``metasys train regressor`` and ``metasys latent plot`` (mounted by `metasys.cli`)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer
from rich.console import Console

from ..errors import InvalidValueError, MetasysError

latent_app = typer.Typer(help="Explore the latent space of a trained VAE.", no_args_is_help=True)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


@latent_app.callback()
def _latent_group():
    """Explore the latent space of a trained VAE."""


def _open_db(path: Path | None):
    from ..database import Database

    return Database.default() if path is None else Database.open(path)


def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(u) for u in text.split(",")]
    except ValueError:
        raise InvalidValueError(f"{option}: expected comma-separated positive integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise InvalidValueError(f"{option}: expected comma-separated positive integers, got {text!r}")
    return values


def _fail(exc: Exception):
    err_console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(code=2)


def vae(
    db: Path = typer.Option(None, "--db", help="Database file (default: the shipped databases/default.h5)."),
    out: Path = typer.Option(..., "--out", help="Model directory to write (an existing checkpoint there is resumed)."),
    epochs: int = typer.Option(200, "--epochs", help="Maximum number of epochs."),
    batch_size: int = typer.Option(128, "--batch-size", help="Mini-batch size."),
    learning_rate: float = typer.Option(1e-3, "--lr", help="Learning rate."),
    optimizer: str = typer.Option("adam", "--optimizer", help="'adam' or 'rmsprop'."),
    patience: int = typer.Option(10, "--patience", help="Early stopping: epochs without a better validation loss."),
    lr_patience: int = typer.Option(0, "--lr-patience", help="Reduce the learning rate after this many epochs without a "
                                    "better validation loss (0: constant rate)."),
    lr_factor: float = typer.Option(0.5, "--lr-factor", help="Factor of each learning-rate reduction (with --lr-patience)."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Held-out fraction of the database."),
    seed: int = typer.Option(0, "--seed", help="Random seed (split, initialization, shuffling, sampling)."),
    beta: float = typer.Option(1.0, "--beta", help="Weight of the KL term."),
    regression_weight: float = typer.Option(1000.0, "--regression-weight", help="Weight of the regression MSE (z-scored)."),
    latent_dim: int = typer.Option(16, "--latent-dim", help="Dimension of the latent space (the paper's 16 by default)."),
    decoder_seed_channels: int = typer.Option(64, "--decoder-seed-channels", help="Channels of the decoder's 7x7 seed."),
    decoder_filters: str = typer.Option("32,16", "--decoder-filters",
                                        help="Widths of the decoder's transposed convolutions (7 -> 14 -> 28), comma-separated."),
    decoder_convs: int = typer.Option(0, "--decoder-convs", help="3x3 convolutions after each transposed one in the decoder."),
    time_limit: float = typer.Option(None, "--time-limit", help="Stop cleanly before this many seconds (resumable)."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore an existing checkpoint in --out and start over."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress display."),
):
    """Train the VAE + property regressor (paper Eq. 6) with a seeded validation split and early stopping."""
    try:
        widths = _int_list(decoder_filters, "--decoder-filters")
        if latent_dim < 1 or decoder_seed_channels < 1 or decoder_convs < 0:
            raise InvalidValueError(f"--latent-dim and --decoder-seed-channels must be >= 1 and --decoder-convs >= 0, got "
                                    f"{latent_dim}, {decoder_seed_channels} and {decoder_convs}")
        database = _open_db(db)
        from .train import train_vae

        args = sys.argv[1:]
        args = args[args.index("vae") + 1:] if "vae" in args else args
        command = "metasys train vae " + " ".join(shlex.quote(a) for a in args)
        meta = train_vae(database, out, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, optimizer=optimizer,
                         patience=patience, lr_patience=lr_patience, lr_factor=lr_factor, val_fraction=val_fraction, seed=seed,
                         time_limit=time_limit,
                         hyper={"latent_dim": latent_dim, "beta": beta, "regression_weight": regression_weight,
                                "decoder_seed_shape": [7, 7, decoder_seed_channels], "decoder_filters": widths,
                                "decoder_convs": decoder_convs}, progress=not quiet,
                         command=command, fresh=fresh, log=console.print)
    except MetasysError as exc:
        _fail(exc)
    t = meta["training"]
    console.print(f"{out}: {t['epochs_run']} epochs, {t['status']}, best validation loss {t['best_val_loss']:.4g}, "
                  f"{t['training_time_s']:.0f} s")


def regressor(
    model: Path = typer.Option(..., "--model", help="Model directory written by 'metasys train vae' (rewritten in place)."),
    db: Path = typer.Option(None, "--db", help="The database the model was trained on (default: the shipped one)."),
    units: str = typer.Option("128,128", "--units", help="Hidden layer widths of the new regressor head, comma-separated."),
    epochs: int = typer.Option(200, "--epochs", help="Maximum number of epochs."),
    batch_size: int = typer.Option(256, "--batch-size", help="Mini-batch size."),
    learning_rate: float = typer.Option(1e-3, "--lr", help="Learning rate."),
    patience: int = typer.Option(10, "--patience", help="Early stopping: epochs without a lower validation error."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initialization and the shuffling."),
):
    """Refit the property regressor on the frozen posterior means (encoder and decoder unchanged)."""
    try:
        widths = _int_list(units, "--units")
        database = _open_db(db)
        from .regressor import refit_regressor

        args = sys.argv[1:]
        args = args[args.index("regressor") + 1:] if "regressor" in args else args
        refit_regressor(model, database, units=widths, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                        patience=patience, seed=seed, command="metasys train regressor " + " ".join(shlex.quote(a) for a in args),
                        log=console.print)
    except MetasysError as exc:
        _fail(exc)


@latent_app.command("plot")
def plot(
    out: Path = typer.Option(..., "--out", help="Folder for the PNG figures."),
    model: Path = typer.Option(None, "--model", help="Model directory (default: the shipped databases/vae)."),
    db: Path = typer.Option(None, "--db", help="Database (default: the one the model was trained on)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the chosen cells and prior samples."),
):
    """PCA of the latent space by property (Fig. 8), traversals along axes and arrows (Fig. 7, 9, 10), prior samples (Fig. 6c)."""
    try:
        from .api import LatentModel
        from .plots import plot_all

        database = None if db is None else _open_db(db)
        lm = LatentModel.default() if model is None else LatentModel.load(model, database=database)
        if database is None:
            lm.database  # noqa: B018  (opens the training database, raising a clear error when missing)
        files = plot_all(lm, out, seed=seed)
    except MetasysError as exc:
        _fail(exc)
    for f in files:
        console.print(f"wrote {f}")


GROUPS = {"latent": latent_app}
TRAIN_COMMANDS = {"vae": vae, "regressor": regressor}
