"""VAE + property regressor (paper Sec. 3.2, Eq. 2-6), written with TensorFlow Probability.

Network
-------
Database cells are orthotropic: each is the mirror image of its bottom-left 25x25 quarter
(``cell[:25, :25]``, `metasys.fem.mirror_quarter`). The networks therefore work on that
quarter: the encoder reads it (for a cell that is not exactly symmetric, the average of its four
mirrored quarters), the decoder writes the quarter's solid probabilities and they are mirrored
back to 50x50. A decoded cell is symmetric by construction and an epoch costs a quarter of the
full-cell computation, which is what makes training on 2 CPU cores feasible.

* encoder: Conv2D 32-64-128 (3x3, stride 2, ReLU) -> Dense 256 -> (mu, sigma) of a diagonal
  Gaussian posterior ``q(z|x) = tfd.MultivariateNormalDiag(mu, sigma)``, 16 latent dimensions (the
  paper's; ``latent_dim``, ``metasys train vae --latent-dim``);
* decoder (shallower): Dense -> 7x7x64 -> Conv2DTranspose 32 (stride 2) -> Conv2DTranspose 16
  (stride 2) -> 3x3 Conv to 1 channel of logits, cropped to 25x25; likelihood
  ``p(x|z) = tfd.Independent(tfd.Bernoulli(logits), 3)`` (per-pixel Bernoulli). The seed shape, the
  widths and ``decoder_convs`` (3x3 convolutions of the same width after each transposed one, for
  a wider receptive field at 14x14 and 28x28 where the boundaries are placed) are hyper-parameters
  (``metasys train vae --decoder-seed-channels --decoder-filters --decoder-convs``);
* regressor: Dense 64-64 (ReLU) -> 4, from the posterior **mean** to the z-scored properties
  (C11, C12, C22, C33).

These are the training defaults (the paper's 16 dimensions). The shipped ``databases/vae`` has 32
latent dimensions, a 7x7x128 -> 64 -> 32 decoder with one 3x3 convolution after each transposed one
and a 128-128 regressor: on the shipped database 16 dimensions stop short of 98% held-out pixel
accuracy (``databases/README.md`` has the measurements; ``databases/vae-16d`` is the 16-d model).

Loss (per cell, Eq. 6): ``-log p(x|z) + beta * KL(q(z|x) || N(0, I)) + w * mean((f(mu) - p)^2)``
with ``z ~ q(z|x)`` (reparameterized sample; the noise goes to the decoder only). The Bernoulli
log-likelihood is summed over the quarter and multiplied by 4 so that it equals the full-cell sum.

Why plain ``tfp.distributions`` in a custom ``train_step`` rather than ``tfp.layers``: the
decoder must see a posterior *sample* while the regressor sees the posterior *mean* of the same
distribution object; with ``tfp.layers.MultivariateNormalTriL`` the tensor a layer hands on is
fixed by ``convert_to_tensor_fn``, which would need two distribution layers or a custom wrapper.
Keeping the distributions explicit also makes the analytic KL (``tfd.kl_divergence``) visible.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from ..errors import InvalidValueError

QUARTER = 25
LATENT_DIM = 16

DEFAULT_HYPER = {
    "latent_dim": LATENT_DIM,
    "quarter": QUARTER,
    "encoder_filters": [32, 64, 128],
    "encoder_dense": 256,
    "decoder_seed_shape": [7, 7, 64],
    "decoder_filters": [32, 16],
    "decoder_convs": 0,
    "regressor_units": [64, 64],
    "beta": 1.0,
    "regression_weight": 1000.0,
}


def _tf():
    """TensorFlow, imported once with its C++ start-up messages (oneDNN, "could not find cuda drivers",
    cuInit) kept off the terminal: they are written to file descriptor 2 before absl logging is set up,
    so neither TF_CPP_MIN_LOG_LEVEL nor Python's logging reaches them."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return tf


def keras():
    _tf()
    import tf_keras

    return tf_keras


def tfd():
    _tf()
    import tensorflow_probability as tfp

    return tfp.distributions


def to_quarters(cells) -> np.ndarray:
    """float32 (N, 25, 25, 1) network input from cells (N, 50, 50) (bool or [0, 1] floats).

    The four mirror images are averaged, so a symmetric cell gives exactly its quarter.
    """
    x = np.asarray(cells, dtype=np.float32)
    q = QUARTER
    sym = 0.25 * (x + x[:, ::-1, :] + x[:, :, ::-1] + x[:, ::-1, ::-1])
    return np.ascontiguousarray(sym[:, :q, :q, None])


def from_quarters(quarters) -> np.ndarray:
    """Cells (N, 50, 50) from quarters (N, 25, 25) mirrored about both mid-lines."""
    from ..fem.homogenization import mirror_quarter

    return mirror_quarter(np.asarray(quarters))


def decoder_size(hyper: dict) -> int:
    """Side of the decoder's output before cropping to the quarter; raises if it is smaller."""
    sy, sx, _ = hyper["decoder_seed_shape"]
    n, q = len(hyper["decoder_filters"]), int(hyper["quarter"])
    size = sy * 2**n
    if size < q:
        raise InvalidValueError(f"decoder_filters: {n} transposed convolutions grow the {sy}x{sx} seed to {size}x{size}, "
                                f"smaller than the {q}x{q} quarter; give at least two")
    return size


def build_networks(hyper: dict):
    """(encoder, decoder, regressor) Keras models for the hyper-parameters ``hyper``."""
    k = keras()
    layers = k.layers
    q, d = int(hyper["quarter"]), int(hyper["latent_dim"])

    x = layers.Input((q, q, 1), name="quarter")
    h = x
    for i, f in enumerate(hyper["encoder_filters"]):
        h = layers.Conv2D(f, 3, strides=2, padding="same", activation="relu", name=f"enc_conv{i}")(h)
    h = layers.Flatten()(h)
    h = layers.Dense(hyper["encoder_dense"], activation="relu", name="enc_dense")(h)
    params = layers.Dense(2 * d, name="enc_params")(h)
    encoder = k.Model(x, params, name="encoder")

    zin = layers.Input((d,), name="z")
    sy, sx, sc = hyper["decoder_seed_shape"]
    h = layers.Dense(sy * sx * sc, activation="relu", name="dec_dense")(zin)
    h = layers.Reshape((sy, sx, sc))(h)
    for i, f in enumerate(hyper["decoder_filters"]):
        h = layers.Conv2DTranspose(f, 3, strides=2, padding="same", activation="relu", name=f"dec_deconv{i}")(h)
        for j in range(int(hyper.get("decoder_convs", 0))):
            h = layers.Conv2D(f, 3, padding="same", activation="relu", name=f"dec_conv{i}_{j}")(h)
    h = layers.Conv2D(1, 3, padding="same", name="dec_logits")(h)
    size = decoder_size(hyper)
    h = layers.Cropping2D(((0, size - q), (0, size - q)))(h)
    decoder = k.Model(zin, h, name="decoder")

    rin = layers.Input((d,), name="mu")
    h = rin
    for i, u in enumerate(hyper["regressor_units"]):
        h = layers.Dense(u, activation="relu", name=f"reg_dense{i}")(h)
    out = layers.Dense(4, name="reg_out")(h)
    regressor = k.Model(rin, out, name="regressor")
    return encoder, decoder, regressor


def posterior(params):
    """Gaussian posterior ``q(z|x)`` from the encoder output (loc, softplus scale)."""
    tf = _tf()
    loc, raw = tf.split(params, 2, axis=-1)
    return tfd().MultivariateNormalDiag(loc=loc, scale_diag=tf.nn.softplus(raw) + 1e-5)


def prior(latent_dim: int = LATENT_DIM):
    tf = _tf()
    return tfd().MultivariateNormalDiag(loc=tf.zeros(latent_dim), scale_diag=tf.ones(latent_dim))


def likelihood(logits):
    """Per-pixel Bernoulli ``p(x|z)`` over the (25, 25, 1) quarter."""
    return tfd().Independent(tfd().Bernoulli(logits=logits, dtype="float32"), reinterpreted_batch_ndims=3)


def make_vae_class():
    """The Keras model class (created lazily so that importing metasys does not import TensorFlow)."""
    k = keras()
    tf = _tf()

    class VAE(k.Model):
        """Encoder, decoder and regressor trained jointly (paper Eq. 6)."""

        def __init__(self, hyper: dict, **kwargs):
            super().__init__(**kwargs)
            self.hyper = dict(hyper)
            self.encoder, self.decoder, self.regressor = build_networks(self.hyper)
            self._prior = prior(int(self.hyper["latent_dim"]))
            self.trackers = {n: k.metrics.Mean(name=n) for n in ("loss", "recon", "kl", "reg", "acc")}

        @property
        def metrics(self):
            return list(self.trackers.values())

        def call(self, x, training=False):
            q = posterior(self.encoder(x, training=training))
            return self.decoder(q.mean(), training=training), self.regressor(q.mean(), training=training)

        def _loss_terms(self, x, y, training):
            q = posterior(self.encoder(x, training=training))
            z = q.sample()                                   # reparameterized: noise to the decoder only
            logits = self.decoder(z, training=training)
            recon = -4.0 * likelihood(logits).log_prob(x)     # 4 mirrored quarters = the full cell
            kl = tfd().kl_divergence(q, self._prior)
            pred = self.regressor(q.mean(), training=training)
            reg = tf.reduce_mean(tf.square(pred - y), axis=-1)
            loss = tf.reduce_mean(recon + self.hyper["beta"] * kl + self.hyper["regression_weight"] * reg)
            acc = tf.reduce_mean(tf.cast(tf.equal(tf.cast(logits > 0, tf.float32), tf.round(x)), tf.float32))
            return loss, recon, kl, reg, acc

        def _record(self, loss, recon, kl, reg, acc):
            for name, v in zip(("loss", "recon", "kl", "reg", "acc"), (loss, recon, kl, reg, acc)):
                self.trackers[name].update_state(v)
            return {n: t.result() for n, t in self.trackers.items()}

        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                values = self._loss_terms(x, y, True)
            grads = tape.gradient(values[0], self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            return self._record(*values)

        def test_step(self, data):
            x, y = data
            return self._record(*self._loss_terms(x, y, False))

    return VAE


def build_vae(hyper: dict | None = None):
    """A built VAE model for ``hyper`` (defaults: `DEFAULT_HYPER`)."""
    h = dict(DEFAULT_HYPER)
    h.update(hyper or {})
    vae = make_vae_class()(h, name="vae")
    q = int(h["quarter"])
    vae(np.zeros((1, q, q, 1), np.float32))
    return vae
