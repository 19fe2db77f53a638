"""Training of the denoising U-Net on a database's cells or an image stack (``metasys train diffusion``).

A model directory holds::

    model.json            format, format_version, U-Net and schedule hyper-parameters, preprocessing,
                          training source (``source``: kind "database" or "images", path, fingerprint,
                          size; for a database also ``database_fingerprint/path/cells``), seed, training
                          settings and status, measured seconds per step, command, metasys version
    weights.msgpack       EMA parameters (flax.serialization), the weights used for sampling
    history.json          mean training loss every ``log_every`` steps
    checkpoint/           state.msgpack (params, EMA, optimizer state) + state.json (step, identity, ...)

Training is deterministic in the seed: the mini-batch of step ``k`` is drawn from
``numpy.random.default_rng([seed, k])`` and the time steps/noise from ``fold_in(PRNGKey(seed), k)``, so a
run interrupted (``time_limit``, kill) and resumed from its checkpoint ends with the same parameters as an
uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from .._version import __version__
from ..errors import FileFormatError, InvalidValueError
from ..io import atomic_path, write_json
from .preprocess import DEFAULT_PREPROCESS, IMAGE_PREPROCESS, ImageStack, preprocess_cells, preprocess_images
from .schedule import Schedule
from .unet import UNetConfig

FORMAT = "metasys-diffusion-model"
FORMAT_VERSION = 1
WEIGHTS = "weights.msgpack"
DEFAULT_TRAINING = {"steps": 20000, "batch_size": 64, "learning_rate": 1e-3, "warmup_steps": 500, "weight_decay": 1e-4,
                    "ema_decay": 0.999, "grad_clip": 1.0, "checkpoint_every": 500, "log_every": 50}


def cells_fingerprint(cells: np.ndarray) -> str:
    """Hex digest of binary cells (N, ny, nx) (order-sensitive), for arrays that are not a Database."""
    packed = np.packbits(np.asarray(cells, bool).reshape(len(cells), -1), axis=1)
    return hashlib.blake2b(packed.tobytes(), digest_size=16).hexdigest()


def _source(data):
    """(binary cells or ImageStack, fingerprint, path or None, kind) of a Database, an array of cells or an ImageStack."""
    from ..database.storage import as_binary_cells

    if isinstance(data, ImageStack):
        return data, data.fingerprint, None if data.path is None else str(Path(data.path).resolve()), "images"
    if hasattr(data, "get_cells") and hasattr(data, "fingerprint"):
        if len(data) < 2:
            raise InvalidValueError(f"the database {str(data.path)!r} holds {len(data)} cells; at least 2 are needed to train")
        return data.get_cells(), data.fingerprint, str(Path(data.path).resolve()), "database"
    cells = as_binary_cells(data, np.asarray(data).shape[-2:], name="data")
    if len(cells) < 2:
        raise InvalidValueError(f"data: at least 2 cells are needed to train, got {len(cells)}")
    return cells, cells_fingerprint(cells), None, "cells"


def _optimizer_key(settings: dict) -> tuple:
    return tuple(float(settings[k]) for k in ("learning_rate", "warmup_steps", "steps", "grad_clip", "weight_decay"))


def make_optimizer(settings: dict):
    return _make_optimizer(_optimizer_key(settings))


@lru_cache(maxsize=8)
def _make_optimizer(key: tuple):
    import optax

    settings = dict(zip(("learning_rate", "warmup_steps", "steps", "grad_clip", "weight_decay"), key))
    settings["warmup_steps"], settings["steps"] = int(settings["warmup_steps"]), int(settings["steps"])

    schedule = optax.warmup_cosine_decay_schedule(0.0, settings["learning_rate"], max(1, min(settings["warmup_steps"],
                                                  settings["steps"] - 1)), max(2, settings["steps"]),
                                                  end_value=0.01 * settings["learning_rate"])
    return optax.chain(optax.clip_by_global_norm(settings["grad_clip"]),
                       optax.adamw(schedule, weight_decay=settings["weight_decay"]))


@lru_cache(maxsize=8)
def make_train_step(config: UNetConfig, schedule: Schedule, optimizer, ema_decay: float, out_channels: int = 1,
                    prediction: str = "eps"):
    """Jitted ``(state, x0, key) -> (state, loss)``; cached per setting.

    ``prediction``: "eps" (noise prediction, Eq. 9) or "v" (velocity, `metasys.diffusion.schedule.v_target`);
    ``out_channels`` of the `metasys.diffusion.unet.UNet` (1 for cells, 3 for composite material images).
    """
    import jax
    import jax.numpy as jnp
    import optax

    from .schedule import q_sample, v_target
    from .unet import UNet

    model = UNet(config, out_channels=out_channels)
    abar = jnp.asarray(schedule.alpha_bar, jnp.float32)

    def step(state, x0, key):
        k_t, k_eps = jax.random.split(key)
        t = jax.random.randint(k_t, (x0.shape[0],), 0, schedule.T)
        eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
        xt = q_sample(schedule, x0, t, eps)
        target = eps if prediction == "eps" else v_target(x0, eps, abar[t].reshape(-1, *([1] * (x0.ndim - 1))))

        def loss_fn(params):
            return jnp.mean((model.apply({"params": params}, xt, t) - target) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        n = state["step"].astype(jnp.float32)
        decay = jnp.minimum(ema_decay, (1.0 + n) / (10.0 + n))
        ema = jax.tree_util.tree_map(lambda e, p: decay * e + (1.0 - decay) * p, state["ema"], params)
        return {"params": params, "ema": ema, "opt_state": opt_state, "step": state["step"] + 1}, loss

    return jax.jit(step)


def initial_state(config: UNetConfig, optimizer, seed: int):
    import jax
    import jax.numpy as jnp

    from .unet import init_params

    params = init_params(config, seed)
    return {"params": params, "ema": jax.tree_util.tree_map(jnp.copy, params), "opt_state": optimizer.init(params),
            "step": jnp.zeros((), jnp.int32)}


def save_state(state, path: Path) -> None:
    from flax import serialization

    with atomic_path(path) as tmp:
        tmp.write_bytes(serialization.to_bytes(state))


def load_state(template, path: Path):
    from flax import serialization

    try:
        return serialization.from_bytes(template, Path(path).read_bytes())
    except Exception as exc:
        raise FileFormatError(f"checkpoint {str(path)!r} could not be read ({exc}); pass --fresh to start over") from exc


def train_diffusion(data, out_dir, *, steps: int | None = None, batch_size: int | None = None, learning_rate: float | None = None,
                    seed: int = 0, unet: UNetConfig | dict | None = None, schedule: Schedule | None = None,
                    training: dict | None = None, preprocess: dict | None = None, time_limit: float | None = None,
                    progress: bool = True, command: str | None = None, fresh: bool = False, stop_after: int | None = None,
                    log=print) -> dict:
    """Train the diffusion prior on ``data`` and write the model directory ``out_dir``.

    Parameters
    ----------
    data : Database, bool array (N, 50, 50), or :class:`~metasys.diffusion.preprocess.ImageStack` (a style prior
        from any image stack: ``ImageStack.load("digits.npy")``; preprocessed by ``preprocess_images``)
    out_dir : model directory (created; an existing checkpoint of the same run is resumed)
    steps, batch_size, learning_rate : shortcuts for the ``training`` settings (see ``DEFAULT_TRAINING``)
    seed : seeds the preprocessing noise, the initialization, the mini-batches and the diffusion noise
    unet : U-Net width/depth (``UNetConfig`` or its dict)
    time_limit : stop cleanly (checkpoint written) before this many seconds of this call; rerun to resume
    stop_after : stop cleanly after this many steps of this call (like ``time_limit``; rerun to resume)
    fresh : ignore an existing checkpoint

    Returns
    -------
    dict: the content of ``model.json``.
    """
    import jax

    settings = dict(DEFAULT_TRAINING)
    settings.update(training or {})
    for key, value in (("steps", steps), ("batch_size", batch_size), ("learning_rate", learning_rate)):
        if value is not None:
            settings[key] = value
    for key in ("steps", "batch_size", "checkpoint_every", "log_every"):
        if int(settings[key]) != settings[key] or settings[key] < 1:
            raise InvalidValueError(f"{key} must be an integer >= 1, got {settings[key]!r}")
    if not settings["learning_rate"] > 0:
        raise InvalidValueError(f"learning_rate must be > 0, got {settings['learning_rate']!r}")
    if not 0 <= settings["ema_decay"] < 1:
        raise InvalidValueError(f"ema_decay must lie in [0, 1), got {settings['ema_decay']!r}")
    if time_limit is not None and not time_limit > 0:
        raise InvalidValueError(f"time_limit must be > 0 seconds, got {time_limit!r}")
    config = unet if isinstance(unet, UNetConfig) else UNetConfig.from_dict(unet or {})
    schedule = schedule or Schedule()
    t_start = time.time()
    cells, fingerprint, db_path, kind = _source(data)
    prep = dict(IMAGE_PREPROCESS if kind == "images" else DEFAULT_PREPROCESS)
    prep.update(preprocess or {})
    prep["size"] = config.image_size
    if kind == "images":
        source = {"kind": "images", "path": db_path, "fingerprint": fingerprint, "images": len(cells),
                  "image_shape": list(cells.images.shape[1:])}
    else:
        source = {"kind": kind, "path": db_path, "fingerprint": fingerprint, "cells": len(cells)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out / "checkpoint"
    state_json, state_bin = ckpt_dir / "state.json", ckpt_dir / "state.msgpack"
    identity = {"database_fingerprint": fingerprint, "seed": int(seed), "unet": config.to_dict(), "schedule": schedule.to_dict(),
                "preprocess": prep, "batch_size": int(settings["batch_size"]), "learning_rate": float(settings["learning_rate"]),
                "warmup_steps": int(settings["warmup_steps"]), "weight_decay": float(settings["weight_decay"]),
                "ema_decay": float(settings["ema_decay"]), "grad_clip": float(settings["grad_clip"])}
    if kind == "images":
        identity["source"] = "images"
    meta_state = None
    if state_json.exists() and state_bin.exists() and not fresh:
        meta_state = json.loads(state_json.read_text())
        if meta_state.get("identity") != identity:
            raise FileFormatError(f"{str(out)!r} holds a checkpoint of a different run (training data, seed or "
                                  "hyper-parameters differ); pass --fresh to start over or choose another --out")

    optimizer = make_optimizer(settings)
    state = initial_state(config, optimizer, seed)
    history, trained_s, step_times = [], 0.0, []
    if meta_state is not None:
        state = load_state(state, state_bin)
        history, trained_s = meta_state["history"], meta_state["training_time_s"]
        step_times = meta_state.get("step_times", [])
        log(f"resuming {out} at step {int(state['step'])}")
    step0 = int(state["step"])

    log(f"preprocessing {len(cells)} {'images' if kind == 'images' else 'cells'} (noise {prep['noise_std']}, "
        f"Gaussian filter sigma {prep['sigma']}, {prep['size']}x{prep['size']}) ...")
    if kind == "images":
        images = preprocess_images(cells, seed=seed, noise_std=prep["noise_std"], sigma=prep["sigma"], size=prep["size"],
                                   filter_mode=prep["filter_mode"], invert=bool(prep.get("invert", False)))
    else:
        images = preprocess_cells(cells, seed=seed, noise_std=prep["noise_std"], sigma=prep["sigma"], size=prep["size"],
                                  filter_mode=prep["filter_mode"])
    del cells
    n_cells = len(images)
    train_step = make_train_step(config, schedule, optimizer, float(settings["ema_decay"]))
    base_key = jax.random.PRNGKey(seed)
    total = int(settings["steps"])
    status = "completed" if step0 >= total else "running"

    def model_json(status_now):
        sps = float(np.median(step_times)) if step_times else None
        from .unet import count_params

        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "metasys_version": __version__,
            "unet": config.to_dict(), "n_params": count_params(state["params"]), "schedule": schedule.to_dict(),
            "preprocess": prep, "source": source,
            **({} if kind == "images" else {"database_fingerprint": fingerprint, "database_path": db_path,
                                             "database_cells": n_cells}),
            "seed": int(seed), "training": {**settings, "steps_run": int(state["step"]), "status": status_now,
                                            "training_time_s": round(trained_s, 1), "seconds_per_step": sps,
                                            "final_loss": history[-1][1] if history else None},
            "weights": WEIGHTS, "weights_kind": "EMA parameters", "command": command or "",
        }

    def checkpoint(status_now):
        ckpt_dir.mkdir(exist_ok=True)
        save_state(state, state_bin)
        write_json(state_json, {"identity": identity, "step": int(state["step"]), "history": history,
                                "training_time_s": trained_s, "step_times": step_times[-200:], "status": status_now})
        from flax import serialization

        with atomic_path(out / WEIGHTS) as tmp:
            tmp.write_bytes(serialization.to_bytes(state["ema"]))
        write_json(out / "history.json", {"step": [h[0] for h in history], "loss": [h[1] for h in history]})
        write_json(out / "model.json", model_json(status_now))

    if status == "running":
        from ..progress import progress_bar

        losses = []
        t_last = time.time()
        with progress_bar(f"training diffusion ({n_cells} cells)", total=total, enabled=progress) as advance:
            advance(step0)
            step = step0
            while step < total:
                idx = np.random.default_rng([seed, step]).integers(0, n_cells, settings["batch_size"])
                state, loss = train_step(state, images[idx], jax.random.fold_in(base_key, step))
                loss = float(loss)
                if not np.isfinite(loss):
                    raise InvalidValueError(f"training diverged at step {step} (loss {loss}); lower --lr")
                losses.append(loss)
                step += 1
                now = time.time()
                took = now - t_last
                t_last = now
                trained_s += took
                if step > step0 + 1:                     # the first step of a call includes the compilation
                    step_times.append(took)
                advance(1)
                if step % settings["log_every"] == 0 or step == total:
                    history.append([step, float(np.mean(losses))])
                    losses = []
                if step >= total:
                    status = "completed"
                    break
                typical = float(np.median(step_times[-50:])) if step_times else took
                if (time_limit is not None and now - t_start + 2.0 * typical + 5.0 > time_limit) or \
                        (stop_after is not None and step - step0 >= stop_after):
                    status = "time_limit"
                    break
                if step % settings["checkpoint_every"] == 0:
                    checkpoint("running")
        if losses:
            history.append([int(state["step"]), float(np.mean(losses))])
        checkpoint("running" if status == "time_limit" else status)
        log(f"{out}: step {int(state['step'])}/{total}, {status}, loss {history[-1][1]:.4f}, "
            f"{np.median(step_times) if step_times else float('nan'):.3f} s/step")
    else:
        log(f"{out}: training already finished ({int(state['step'])} steps); nothing to do (raise --steps or pass --fresh)")
        if not (out / "model.json").exists():
            checkpoint(status)
    meta = model_json(status)
    write_json(out / "model.json", meta)
    return meta
