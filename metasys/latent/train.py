"""Training of the VAE + regressor on a `metasys.Database` (``metasys train vae``).

A model directory holds::

    model.json                 format, format_version, hyper-parameters, property normalization,
                               database fingerprint and path, seed, split, training settings,
                               command, metasys version, status
    weights.h5                 weights of the final (best validation loss) model
    validation_indices.npy     the held-out cells (database indices), derived from the seed
    history.json, history.png  per-epoch losses (train and validation)
    checkpoint/                per-epoch checkpoint (weights + optimizer + state.json) for resuming
    latent_codes_<fp>.npy      cached posterior means of a whole database (written by LatentModel)

Running the same command again resumes from ``checkpoint/`` (same database, seed and
hyper-parameters required); a run stopped by the time limit continues where it stopped.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from .._version import __version__
from ..errors import FileFormatError, InvalidValueError
from .model import DEFAULT_HYPER, build_vae, decoder_size, to_quarters

FORMAT = "metasys-latent-model"
FORMAT_VERSION = 1
WEIGHTS = "weights.h5"


def write_json(path: Path, data) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def save_weights(vae, path: Path) -> None:
    """Write the weights of ``vae`` to ``path`` (.h5) atomically."""
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.h5")
    vae.save_weights(str(tmp))
    os.replace(tmp, path)


def split_indices(n: int, seed: int, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) database indices, sorted; a seeded permutation of ``range(n)``."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(val_fraction * n))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def load_quarters(db, indices=None, chunk: int = 10_000) -> np.ndarray:
    """uint8 (N, 25, 25, 1) quarters of database cells (read in chunks to bound memory)."""
    idx = np.arange(len(db)) if indices is None else np.asarray(indices)
    out = np.empty((len(idx), 25, 25, 1), np.uint8)
    for s in range(0, len(idx), chunk):
        out[s:s + chunk] = to_quarters(db.get_cells(idx[s:s + chunk])).round().astype(np.uint8)
    return out


def _dataset(x, y, batch_size, shuffle_seed=None):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda a, b: (tf.cast(a, tf.float32), b))
    return ds.prefetch(2)


def plot_history(history: dict, path: Path, title: str = "") -> None:
    """Training history (loss terms, train vs validation) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [("loss", "total loss"), ("recon", "reconstruction NLL"), ("kl", "KL"), ("reg", "regression MSE (z-scored)"),
             ("acc", "pixel accuracy")]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.4))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for ax, (key, label) in zip(axes, names):
        for prefix, style in (("", "-"), ("val_", "--")):
            if history.get(prefix + key):
                ax.plot(epochs, history[prefix + key], style, label="validation" if prefix else "train")
        ax.set_title(label)
        ax.set_xlabel("epoch")
        if key in ("loss", "recon", "reg"):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def _make_optimizer(name: str, lr: float):
    import tf_keras as keras

    if name == "adam":
        return keras.optimizers.Adam(lr)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(lr)
    raise InvalidValueError(f"optimizer must be 'adam' or 'rmsprop', got {name!r}")


def train_vae(db, out_dir, *, epochs: int = 200, batch_size: int = 128, learning_rate: float = 1e-3, optimizer: str = "adam",
              patience: int = 10, lr_patience: int = 0, lr_factor: float = 0.5, val_fraction: float = 0.1, seed: int = 0,
              time_limit: float | None = None,
              hyper: dict | None = None, progress: bool = True, command: str | None = None, fresh: bool = False,
              log=print) -> dict:
    """Train the VAE + regressor on ``db`` and write the model directory ``out_dir``.

    Parameters
    ----------
    db : Database
    out_dir : path of the model directory (created; an existing checkpoint there is resumed)
    epochs : maximum number of epochs (counted over resumes)
    patience : early stopping: stop after this many epochs without a lower validation loss; the
        weights of the best epoch are the ones saved
    lr_patience : multiply the learning rate by ``lr_factor`` after this many epochs without a lower
        validation loss (counted afresh after each reduction); 0 keeps it constant. The current rate
        is part of the checkpoint, so a resumed run goes on with it.
    val_fraction : held-out fraction (seeded split, recorded in the model directory)
    seed : seed of the split, the initialization, the shuffling and the posterior sampling
    time_limit : stop cleanly (at an epoch end) before this many seconds of this call have passed
    fresh : ignore an existing checkpoint and start over

    Returns
    -------
    dict: the content of ``model.json``.
    """
    import tf_keras as keras

    if not 0 < val_fraction < 1:
        raise InvalidValueError(f"val_fraction must lie in (0, 1), got {val_fraction!r}")
    if lr_patience < 0 or not 0 < lr_factor < 1:
        raise InvalidValueError(f"lr_patience must be >= 0 and lr_factor in (0, 1), got {lr_patience!r} and {lr_factor!r}")
    if epochs < 1 or batch_size < 1:
        raise InvalidValueError(f"epochs and batch_size must be >= 1, got {epochs!r} and {batch_size!r}")
    n = len(db)
    if n < 10:
        raise InvalidValueError(f"the database {str(db.path)!r} holds {n} cells; at least 10 are needed to train")
    if tuple(db.resolution) != (50, 50):
        raise InvalidValueError(f"the latent model needs 50x50 cells, the database has {db.resolution}")
    h = dict(DEFAULT_HYPER)
    h.update(hyper or {})
    decoder_size(h)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out / "checkpoint"
    state_path = ckpt_dir / "state.json"
    t_start = time.time()

    train_idx, val_idx = split_indices(n, seed, val_fraction)
    props = np.asarray(db.properties, np.float64)
    mean, std = props[train_idx].mean(0), props[train_idx].std(0)
    std = np.where(std > 0, std, 1.0)
    settings = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate, "optimizer": optimizer,
                "patience": patience, "lr_patience": lr_patience, "lr_factor": lr_factor, "val_fraction": val_fraction,
                "time_limit": time_limit}
    identity = {"database_fingerprint": db.fingerprint, "seed": seed, "hyper": h, "val_fraction": val_fraction, "n_cells": n}

    state = None
    if state_path.exists() and not fresh:
        state = json.loads(state_path.read_text())
        stored = dict(state.get("identity", {}))
        # hyper-parameters added after a checkpoint was written take their defaults there
        stored["hyper"] = {**DEFAULT_HYPER, **stored.get("hyper", {})}
        if stored != identity:
            raise FileFormatError(f"{str(out)!r} holds a checkpoint of a different run (database, seed, split or "
                                  "hyper-parameters differ); pass --fresh to start over or choose another --out")

    import tensorflow as tf

    # TensorFlow's seed drives the initializers, shuffling and sampling; NumPy's global generator is left alone
    tf.random.set_seed(seed)
    vae = build_vae(h)
    opt = _make_optimizer(optimizer, learning_rate)
    vae.compile(optimizer=opt)

    ckpt = tf.train.Checkpoint(model=vae, optimizer=opt)
    history: dict[str, list] = {}
    best, wait, lr_wait, epoch0, elapsed0, status = np.inf, 0, 0, 0, 0.0, "running"
    if state is not None:
        # build the optimizer slots before restoring them
        opt.build(vae.trainable_variables)
        ckpt.restore(str(ckpt_dir / "ckpt")).expect_partial()
        history, best, wait, lr_wait = state["history"], state["best"], state["wait"], state.get("lr_wait", 0)
        opt.learning_rate.assign(state.get("learning_rate", learning_rate))
        epoch0, elapsed0, status = state["epoch"], state["training_time_s"], state["status"]
        if status == "completed" and epoch0 < epochs:
            status = "running"                      # asked for more epochs than the finished run had
        log(f"resuming {out} at epoch {epoch0} (best validation loss {best:.4g})")

    log(f"loading {n} cells from {db.path} ...")
    x_all = load_quarters(db)
    y_all = ((props - mean) / std).astype(np.float32)
    train_ds = _dataset(x_all[train_idx], y_all[train_idx], batch_size, shuffle_seed=seed + epoch0)
    val_ds = _dataset(x_all[val_idx], y_all[val_idx], 512)
    del x_all
    np.save(out / "validation_indices.npy", val_idx.astype(np.int64))

    def model_json(status_now, trained_s):
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "metasys_version": __version__,
            "hyper": h, "normalization": {"mean": mean.tolist(), "std": std.tolist(),
                                          "properties": ["C11", "C12", "C22", "C33"]},
            "database_fingerprint": db.fingerprint, "database_path": str(Path(db.path).resolve()), "database_cells": n,
            "seed": seed, "split": {"val_fraction": val_fraction, "n_train": int(len(train_idx)), "n_val": int(len(val_idx)),
                                    "rule": "numpy default_rng(seed).permutation(n_cells)[:round(val_fraction*n)] held out",
                                    "file": "validation_indices.npy"},
            "training": {**settings, "epochs_run": len(history.get("loss", [])), "best_val_loss": float(best),
                         "status": status_now, "training_time_s": round(trained_s, 1)},
            "weights": WEIGHTS, "command": command or "",
        }

    class Control(keras.callbacks.Callback):
        """Per-epoch checkpoint + state, early stopping with best weights, time limit, history."""

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.time()

        def on_epoch_end(self, epoch, logs=None):
            nonlocal best, wait, lr_wait, status
            for key, v in (logs or {}).items():
                history.setdefault(key, []).append(float(v))
            lr = float(opt.learning_rate.numpy())
            history.setdefault("lr", []).append(lr)
            val = float(logs["val_loss"])
            if val < best:
                best, wait, lr_wait = val, 0, 0
                save_weights(vae, out / WEIGHTS)
            else:
                wait += 1
                lr_wait += 1
                if lr_patience and lr_wait >= lr_patience:
                    opt.learning_rate.assign(lr * lr_factor)
                    lr_wait = 0
                    log(f"learning rate {lr:.3g} -> {lr * lr_factor:.3g}")
            took = time.time() - self.t0
            trained = elapsed0 + time.time() - t_start
            if wait >= patience:
                status = "early_stopped"
            elif epoch + 1 >= epochs:
                status = "completed"
            elif time_limit is not None and time.time() - t_start + 1.1 * took > time_limit:
                status = "time_limit"
            ckpt_dir.mkdir(exist_ok=True)
            ckpt.write(str(ckpt_dir / "ckpt"))
            write_json(state_path, {"identity": identity, "epoch": epoch + 1, "best": best, "wait": wait, "lr_wait": lr_wait,
                                    "learning_rate": float(opt.learning_rate.numpy()), "history": history,
                                    "training_time_s": trained, "status": status})
            write_json(out / "history.json", history)
            write_json(out / "model.json", model_json(status, trained))
            log(f"epoch {epoch + 1}: loss {logs['loss']:.2f} val_loss {val:.2f} val_acc {logs.get('val_acc', 0):.4f} "
                f"val_reg {logs.get('val_reg', 0):.4f} ({took:.0f} s){'  *best' if wait == 0 else ''}")
            if status != "running":
                self.model.stop_training = True

    ran = status == "running" and epoch0 < epochs
    if ran:
        for stale in out.glob("latent_codes_*.npy"):
            stale.unlink()  # cached codes of the weights about to change
        vae.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=epoch0, verbose=1 if progress else 0,
                callbacks=[Control()])
    elif status != "running":
        log(f"{out}: training already finished ({status}); nothing to do (pass --fresh to retrain)")
    trained = elapsed0 + time.time() - t_start
    if status == "time_limit":
        # a later call with the same command resumes
        state = json.loads(state_path.read_text())
        state["status"] = "running"
        write_json(state_path, state)
    if not (out / WEIGHTS).exists():
        save_weights(vae, out / WEIGHTS)
    meta = model_json(status, trained if ran else elapsed0)
    write_json(out / "model.json", meta)
    write_json(out / "history.json", history)
    plot_history(history, out / "history.png", title=f"{Path(db.path).name}, seed {seed}, {status}")
    return meta
