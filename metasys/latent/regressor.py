"""Refit the property regressor of a trained latent model on its frozen posterior means
(``metasys train regressor``).

The VAE and its regressor are trained jointly (paper Eq. 6). The regressor's input, the posterior
mean, stops changing once the encoder is trained, so a wider regressor head can be fitted afterwards
on the fixed codes in minutes, without touching the encoder or the decoder: encodings, decodings and
cached latent codes stay exactly as they were. The model directory is rewritten in place (weights
and ``model.json``, whose ``regressor_refit`` entry records the command and the figures).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..errors import FileFormatError, InvalidValueError
from .model import build_vae
from .train import WEIGHTS, save_weights, write_json


def refit_regressor(model_dir, db=None, *, units=(128, 128), epochs: int = 200, batch_size: int = 256,
                    learning_rate: float = 1e-3, patience: int = 10, seed: int = 0, command: str | None = None,
                    log=print) -> dict:
    """Fit a new regressor head ``posterior mean (d,) -> normalized properties (4,)`` and store it.

    Parameters
    ----------
    model_dir : path of a model directory written by ``metasys train vae``
    db : Database, optional
        The database the model was trained on (default: the shipped one); its recorded validation
        split is kept: the head is fitted on the training cells and early-stopped on the held-out ones.
    units : sequence of int
        Widths of the hidden ReLU layers of the new head.
    epochs, batch_size, learning_rate, patience : Adam on the mean squared error of the z-scored
        properties; training stops after ``patience`` epochs without a lower validation error and
        keeps the best weights.
    seed : seeds the initialization and the shuffling.

    Returns
    -------
    dict: the ``regressor_refit`` record (units, epochs run, validation R^2 per property before and after).
    """
    from .api import LatentModel
    from .model import keras

    units = [int(u) for u in units]
    if not units or min(units) < 1:
        raise InvalidValueError(f"units: expected positive layer widths, got {units!r}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("patience", patience)):
        if int(value) != value or value < 1:
            raise InvalidValueError(f"{name}: expected an integer >= 1, got {value!r}")
    directory = Path(model_dir)
    if db is None:
        from ..database import Database

        db = Database.default()
    old = LatentModel.load(directory, database=db)
    meta = json.loads((directory / "model.json").read_text())
    if meta.get("database_fingerprint") != db.fingerprint:
        raise FileFormatError(f"{str(directory)!r} was trained on another database (fingerprint "
                              f"{meta.get('database_fingerprint')!r}); refit on that one")
    t0 = time.perf_counter()
    z = old.latent_codes().astype(np.float32)
    mean, std = old._mean, old._std
    y = ((db.properties - mean) / std).astype(np.float32)
    val = old.validation_indices
    train = np.setdiff1d(np.arange(len(db)), val)
    before = _r2(db.properties[val], old.predict(z[val]))

    hyper = {**meta["hyper"], "regressor_units": units}
    new = build_vae(hyper)
    new.encoder.set_weights(old._vae.encoder.get_weights())
    new.decoder.set_weights(old._vae.decoder.get_weights())
    k = keras()
    import tensorflow as tf

    # TensorFlow's seed drives the initializers, shuffling and dropout; NumPy's global generator is left alone
    tf.random.set_seed(int(seed))
    head = build_vae(hyper).regressor                          # freshly initialized with the seed above
    head.compile(optimizer=k.optimizers.Adam(learning_rate), loss="mse")
    stop = k.callbacks.EarlyStopping(patience=int(patience), restore_best_weights=True)
    fit = head.fit(z[train], y[train], validation_data=(z[val], y[val]), epochs=int(epochs), batch_size=int(batch_size),
                   callbacks=[stop], verbose=0, shuffle=True)
    new.regressor.set_weights(head.get_weights())
    pred = new.regressor.predict(z[val], batch_size=8192, verbose=0) * std + mean
    after = _r2(db.properties[val], pred)
    record = {"units": units, "epochs_run": len(fit.history["loss"]), "seed": int(seed), "learning_rate": learning_rate,
              "batch_size": int(batch_size), "patience": int(patience), "seconds": round(time.perf_counter() - t0, 1),
              "val_r2_before": before, "val_r2_after": after, "command": command}
    save_weights(new, directory / meta.get("weights", WEIGHTS))
    meta["hyper"] = hyper
    meta["regressor_refit"] = record
    write_json(directory / "model.json", meta)
    log(f"regressor {units}: {record['epochs_run']} epochs, validation R^2 "
        + ", ".join(f"{n} {b:.4f} -> {a:.4f}" for n, b, a in zip(("C11", "C12", "C22", "C33"), before, after)))
    return record


def _r2(true: np.ndarray, pred: np.ndarray) -> list[float]:
    ss_res = ((true - pred) ** 2).sum(axis=0)
    ss_tot = ((true - true.mean(axis=0)) ** 2).sum(axis=0)
    return [round(float(v), 5) for v in 1.0 - ss_res / ss_tot]
