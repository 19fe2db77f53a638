"""Training of the composite prior (`metasys composites train-prior`): v-prediction on normalized material images.

Deterministic in ``seed``: the mini-batch of step ``k`` (and its random flips) comes from
``numpy.random.default_rng([seed, k])``, the time steps and noise from ``fold_in(PRNGKey(seed), k)``, so a run
cut by ``time_limit`` (or a kill) and resumed from ``checkpoint/`` ends with the same weights as an
uninterrupted one. Optimizer: AdamW with warm-up and cosine decay, gradient clipping at 1, EMA weights
(`metasys.diffusion.train.make_optimizer`, the paper's recipe with fewer steps).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .._version import __version__
from ..diffusion.schedule import Schedule
from ..diffusion.train import load_state, make_optimizer, make_train_step, save_state
from ..diffusion.unet import UNetConfig
from ..errors import FileFormatError, InvalidValueError
from ..io import atomic_path, write_json
from .materials import normalize
from .prior import CHANNELS, FORMAT, SCHEDULE, WEIGHTS, default_unet, init_params

DEFAULTS = {"steps": 9000, "batch_size": 16, "learning_rate": 1e-3, "warmup_steps": 300, "weight_decay": 1e-2,
            "ema_decay": 0.999, "grad_clip": 1.0, "checkpoint_every": 200, "log_every": 50}
DEFAULTS_3D = {**DEFAULTS, "steps": 4000, "batch_size": 4, "warmup_steps": 100, "checkpoint_every": 25, "log_every": 10}
"""3D (32^3 voxel) defaults: a 3D training step of `DEFAULT_UNET_3D` costs about 10 s at batch 4 (16 s at batch 8) on
one shared, loaded core, so batches are small, the warm-up short and checkpoints frequent (every ~4 minutes)."""


def normalized_images(images) -> np.ndarray:
    """(N, 3, *G) physical (E, nu, rho) images -> (N, *G, 3) float32 in [-1, 1]^3 (G = (H, W) or (D, H, W))."""
    return normalize(np.moveaxis(np.asarray(images, dtype=np.float64), 1, -1)).astype(np.float32)


def _batch(images: np.ndarray, seed: int, step: int, size: int) -> np.ndarray:
    """Mini-batch of step ``step``: random samples, each randomly flipped along every spatial axis (symmetries of the
    problem; images (N, *G, 3) with 2 or 3 spatial axes)."""
    rng = np.random.default_rng([seed, step])
    x = images[rng.integers(0, len(images), size)]
    dim = images.ndim - 2
    flips = rng.random((size, dim)) < 0.5
    for axis in range(dim):
        x = np.where(flips[:, axis].reshape((-1,) + (1,) * (dim + 1)), np.flip(x, axis=1 + axis), x)
    return x


def train_prior(images, out_dir, *, steps: int | None = None, seed: int = 0, unet: UNetConfig | dict | None = None,
                schedule: Schedule = SCHEDULE, training: dict | None = None, time_limit: float | None = None,
                source: dict | None = None, command: str = "", progress: bool = True, stop_after: int | None = None,
                log=print) -> dict:
    """Train the composite prior on physical images (N, 3, 64, 64) or voxel fields (N, 3, 32, 32, 32) and write the
    prior directory ``out_dir``. The dimension comes from the images: 3D data train a 3D U-Net (``unet`` default
    `metasys.composites.prior.DEFAULT_UNET_3D`; a given ``unet`` gets ``dim`` and ``image_size`` from the data).

    An existing checkpoint of the same run (same data size, seed, hyper-parameters) is resumed; another
    run's checkpoint raises `FileFormatError`. ``time_limit`` (s) or ``stop_after`` (steps in this call) stops
    cleanly with a checkpoint; rerun the same command to continue. Returns the content of ``prior.json``.
    """
    from flax import serialization

    images = np.asarray(images)
    if images.ndim not in (4, 5) or images.shape[1] != 3 or len(images) < 2 or len(set(images.shape[2:])) != 1:
        raise InvalidValueError(f"images: expected (N >= 2, 3, H, W) material images or (N >= 2, 3, D, H, W) voxel "
                                f"fields with equal sides, got shape {images.shape}")
    dim = images.ndim - 2
    settings = {**(DEFAULTS_3D if dim == 3 else DEFAULTS), **(training or {})}
    if steps is not None:
        settings["steps"] = steps
    for key in ("steps", "batch_size", "checkpoint_every", "log_every"):
        if int(settings[key]) != settings[key] or settings[key] < 1:
            raise InvalidValueError(f"{key}: expected an integer >= 1, got {settings[key]!r}")
    if time_limit is not None and not time_limit > 0:
        raise InvalidValueError(f"time_limit: expected a positive number of seconds, got {time_limit!r}")
    config = unet if isinstance(unet, UNetConfig) else UNetConfig.from_dict(unet or default_unet(dim).to_dict())
    if config.image_size != images.shape[-1] or config.dim != dim:
        config = UNetConfig.from_dict({**config.to_dict(), "image_size": int(images.shape[-1]), "dim": dim})
    t0 = time.time()
    data = normalized_images(images)
    out = Path(out_dir)
    (out / "checkpoint").mkdir(parents=True, exist_ok=True)
    state_json, state_bin = out / "checkpoint" / "state.json", out / "checkpoint" / "state.msgpack"
    identity = {"n_images": len(data), "seed": int(seed), "unet": config.to_dict(), "schedule": schedule.to_dict(),
                **{k: settings[k] for k in ("batch_size", "learning_rate", "warmup_steps", "weight_decay", "ema_decay",
                                            "grad_clip")}}
    optimizer = make_optimizer(settings)
    params = init_params(config, seed)
    state = {"params": params, "ema": jax.tree_util.tree_map(jnp.copy, params), "opt_state": optimizer.init(params),
             "step": jnp.zeros((), jnp.int32)}
    history, trained_s = [], 0.0
    if state_json.exists() and state_bin.exists():
        meta = json.loads(state_json.read_text())
        if meta.get("identity") != identity or meta.get("steps") != settings["steps"]:
            raise FileFormatError(f"out_dir: {str(out)!r} holds a checkpoint of a different run; choose another --out")
        state = load_state(state, state_bin)
        history, trained_s = meta["history"], meta["training_time_s"]
        log(f"resuming {out} at step {int(state['step'])}")
    train_step = make_train_step(config, schedule, optimizer, float(settings["ema_decay"]), out_channels=CHANNELS,
                                 prediction="v")
    key = jax.random.PRNGKey(seed)
    total, step = int(settings["steps"]), int(state["step"])
    stop_at = total if stop_after is None else min(total, step + int(stop_after))

    def prior_json(status):
        return {"format": FORMAT, "metasys_version": __version__, "unet": config.to_dict(),
                "schedule": schedule.to_dict(), "prediction": "v", "sampler": {"kind": "DDIM", "eta": 1.0, "steps": 100,
                                                                               "timesteps": "trailing", "clip": [-1, 1]},
                "n_params": int(sum(p.size for p in jax.tree_util.tree_leaves(state["params"]))),
                "seed": int(seed), "source": source or {"n_images": len(data)},
                "training": {**settings, "steps_run": int(state["step"]), "status": status,
                             "training_time_s": round(trained_s, 1),
                             "final_loss": history[-1][1] if history else None},
                "weights": WEIGHTS, "weights_kind": "EMA parameters", "command": command}

    def checkpoint(status):
        save_state(state, state_bin)
        write_json(state_json, {"identity": identity, "steps": total, "step": int(state["step"]), "history": history,
                                "training_time_s": trained_s, "status": status})
        with atomic_path(out / WEIGHTS) as tmp:
            Path(tmp).write_bytes(serialization.to_bytes(state["ema"]))
        write_json(out / "prior.json", prior_json(status))

    from ..progress import progress_bar

    status, losses, t_last, times = ("completed" if step >= total else "running"), [], time.time(), []
    with progress_bar("training composite prior", total=total, enabled=progress) as advance:
        advance(step)
        while step < total:
            state, loss = train_step(state, _batch(data, seed, step, settings["batch_size"]),
                                     jax.random.fold_in(key, step))
            loss = float(loss)
            if not np.isfinite(loss):
                raise InvalidValueError(f"learning_rate: training diverged at step {step} (loss {loss}); lower it")
            losses.append(loss)
            step += 1
            now = time.time()
            trained_s += now - t_last
            times.append(now - t_last)
            t_last = now
            advance(1)
            if step % settings["log_every"] == 0 or step == total:
                history.append([step, float(np.mean(losses))])
                losses = []
            if step >= total:
                status = "completed"
                break
            typical = float(np.median(times[-50:]))
            if step >= stop_at or (time_limit is not None and now - t0 + 2 * typical + 10 > time_limit):
                status = "time_limit"
                break
            if step % settings["checkpoint_every"] == 0:
                checkpoint("running")
    if losses:
        history.append([step, float(np.mean(losses))])
    status = "running" if status == "time_limit" else status
    checkpoint(status)
    log(f"{out}: step {step}/{total}, {status}, loss {history[-1][1] if history else float('nan'):.4f}, "
        f"{trained_s:.0f} s trained")
    return prior_json(status)
