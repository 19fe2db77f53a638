"""``metasys train diffusion`` (mounted by `metasys.cli`)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer
from rich.console import Console

from ..errors import MetasysError

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def _fail(exc: Exception):
    err_console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(code=2)


def diffusion(
    db: Path = typer.Option(None, "--db", help="Database file (default: the shipped databases/default.h5)."),
    images: Path = typer.Option(None, "--images", help="Train a style prior on an image stack instead of a database: a .npy "
                                "array (N, H, W) (row 0 at the bottom) or a folder of PNGs (grayscale; RGB converted). "
                                "1 (white) = solid."),
    invert: bool = typer.Option(False, "--invert", help="With --images: use 1 - image (dark = solid)."),
    out: Path = typer.Option(..., "--out", help="Model directory to write (an existing checkpoint there is resumed)."),
    steps: int = typer.Option(20000, "--steps", help="Total number of optimizer steps (counted over resumes)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Mini-batch size."),
    learning_rate: float = typer.Option(1e-3, "--lr", help="Peak learning rate of the warmup-cosine AdamW schedule."),
    warmup: int = typer.Option(500, "--warmup", help="Linear warmup steps."),
    weight_decay: float = typer.Option(1e-4, "--weight-decay", help="AdamW weight decay."),
    ema_decay: float = typer.Option(0.999, "--ema-decay", help="Decay of the exponential moving average of the weights."),
    channels: int = typer.Option(24, "--channels", help="U-Net base width (channels at 32x32)."),
    channel_mults: str = typer.Option("1,2,2,2", "--channel-mults", help="Width multipliers of the levels 32,16,8,4."),
    res_blocks: int = typer.Option(1, "--res-blocks", help="Residual blocks per level."),
    attention_levels: str = typer.Option("2", "--attention-levels", help="Levels with self-attention (0 = 32x32)."),
    circular: bool = typer.Option(False, "--circular/--zero-padding", help="Periodic (circular) convolution padding."),
    checkpoint_every: int = typer.Option(500, "--checkpoint-every", help="Write a checkpoint every this many steps."),
    seed: int = typer.Option(0, "--seed", help="Random seed (preprocessing noise, initialization, batches, diffusion noise)."),
    time_limit: float = typer.Option(None, "--time-limit", help="Stop cleanly before this many seconds (rerun to resume)."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore an existing checkpoint in --out and start over."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress display."),
):
    """Train the unconditional diffusion prior (DDPM objective, U-Net, EMA) on a database's cells or an image stack."""
    try:
        from ..errors import InvalidValueError

        if db is not None and images is not None:
            raise InvalidValueError(f"--db {str(db)!r} and --images {str(images)!r}: give one training source, not both")
        if invert and images is None:
            raise InvalidValueError("--invert applies to --images only")
        from .train import train_diffusion

        def ints(text, name):
            try:
                return [int(v) for v in text.split(",") if v.strip()]
            except ValueError:
                raise InvalidValueError(f"{name}: expected comma-separated integers, got {text!r}") from None

        mults = ints(channel_mults, "--channel-mults")
        if not mults or min(mults) < 1:
            raise InvalidValueError(f"--channel-mults: expected positive integers, got {channel_mults!r}")
        attn = ints(attention_levels, "--attention-levels")
        if any(not 0 <= a < len(mults) for a in attn):
            raise InvalidValueError(f"--attention-levels: expected levels in [0, {len(mults) - 1}], got {attention_levels!r}")
        unet = {"channels": channels, "channel_mults": mults, "num_res_blocks": res_blocks, "attention_levels": attn,
                "padding": "CIRCULAR" if circular else "SAME"}
        preprocess = None
        if images is not None:
            from .preprocess import ImageStack

            data = ImageStack.load(images)
            preprocess = {"invert": bool(invert)}
            console.print(f"{images}: {len(data)} images {data.images.shape[1]} x {data.images.shape[2]}")
        else:
            from ..database import Database

            data = Database.default() if db is None else Database.open(db)
        args = sys.argv[1:]
        args = args[args.index("diffusion") + 1:] if "diffusion" in args else args
        command = "metasys train diffusion " + " ".join(shlex.quote(a) for a in args)
        training = {"warmup_steps": warmup, "weight_decay": weight_decay, "ema_decay": ema_decay,
                    "checkpoint_every": checkpoint_every}
        meta = train_diffusion(data, out, steps=steps, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                               unet=unet, training=training, preprocess=preprocess, time_limit=time_limit,
                               progress=not quiet, command=command, fresh=fresh, log=console.print)
    except MetasysError as exc:
        _fail(exc)
    t = meta["training"]
    sps = t["seconds_per_step"]
    loss = t["final_loss"] if t["final_loss"] is not None else float("nan")
    console.print(f"{out}: {t['steps_run']}/{t['steps']} steps, {t['status']}, loss {loss:.4f}, "
                  f"{t['training_time_s']:.0f} s" + (f" ({sps:.3f} s/step)" if sps else ""))


TRAIN_COMMANDS = {"diffusion": diffusion}
