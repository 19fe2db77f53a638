"""``LatentModel``: a trained VAE + regressor and the latent-space operations of paper Sec. 3.3-4.1."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FileFormatError, InvalidCellError, InvalidValueError, describe
from .model import build_vae, from_quarters, to_quarters
from .train import FORMAT, FORMAT_VERSION

ARROWS = ("C11", "C12", "C22", "C33", "anisotropy", "poisson")
PROPERTY_INDEX = {"C11": 0, "C12": 1, "C22": 2, "C33": 3}
CLUSTER_FRACTION = 0.3


def default_model_dir() -> Path:
    """Location of the shipped model: the installed data package, else the source tree's databases/vae."""
    from ..database.storage import default_path

    return default_path().parent / "vae"


@dataclass
class LatentPCA:
    """PCA of the latent codes of a database (``coords`` are the projected codes, one row per cell)."""

    coords: np.ndarray                 # (N, n)
    components: np.ndarray             # (n, latent_dim)
    mean: np.ndarray                   # (latent_dim,)
    explained_variance_ratio: np.ndarray

    def transform(self, z) -> np.ndarray:
        return (np.atleast_2d(z) - self.mean) @ self.components.T


class LatentModel:
    """A trained VAE + property regressor.

    Open one with `load` (a model directory written by ``metasys train vae``) or
    `default` (the shipped ``databases/vae``). Cells are (N, 50, 50) arrays (row 0 at the
    bottom), latent codes (N, d) arrays with d = `latent_dim` (32 for the shipped model, 16 for the
    paper's dimension in ``databases/vae-16d``); a single cell (50, 50) or code (d,) gives unbatched results.

    Examples
    --------
    >>> lm = LatentModel.default()                                     # doctest: +SKIP
    >>> z = lm.encode(lm.database.get_cells([0, 1]))                   # doctest: +SKIP
    >>> cells = lm.to_cells(z + 1.0 * lm.arrow("C11"))                 # doctest: +SKIP
    """

    def __init__(self, vae, meta: dict, directory: Path, database=None):
        self._vae = vae
        self.meta = meta
        self.directory = Path(directory)
        self._database = database
        self._codes = None
        self._arrows: dict = {}
        norm = meta["normalization"]
        self._mean = np.asarray(norm["mean"], np.float64)
        self._std = np.asarray(norm["std"], np.float64)

    # ------------------------------------------------------------------ opening
    @classmethod
    def load(cls, directory, database=None) -> LatentModel:
        """Load a model directory; ``database`` (a Database) is the one codes and arrows refer to.

        Warns (``UserWarning``) when ``database`` is not the database the model was trained on.
        """
        directory = Path(directory)
        path = directory / "model.json"
        if not path.exists():
            raise FileFormatError(f"{str(directory)!r} is not a latent model directory (no model.json)")
        try:
            meta = json.loads(path.read_text())
        except ValueError as exc:
            raise FileFormatError(f"{str(path)!r} is not valid JSON ({exc})") from None
        if meta.get("format") != FORMAT:
            raise FileFormatError(f"{str(path)!r} is not a metasys latent model (format {meta.get('format')!r})")
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise FileFormatError(f"{str(path)!r} has format version {meta['format_version']}, newer than this metasys reads "
                                  f"(<= {FORMAT_VERSION}); upgrade metasys")
        weights = directory / meta.get("weights", "weights.h5")
        if not weights.exists():
            raise FileFormatError(f"the weights file {str(weights)!r} is missing")
        vae = build_vae(meta["hyper"])
        vae.load_weights(str(weights))
        model = cls(vae, meta, directory)
        if database is not None:
            model._set_database(database)
        return model

    @classmethod
    def default(cls, database=None) -> LatentModel:
        """The shipped model (``databases/vae``), trained on the shipped database."""
        d = default_model_dir()
        if not (d / "model.json").exists():
            raise FileFormatError(f"the shipped latent model {str(d)!r} is missing; train one with "
                                  "'metasys train vae --out databases/vae'")
        return cls.load(d, database=database)

    def _set_database(self, database):
        if database.fingerprint != self.meta["database_fingerprint"]:
            warnings.warn(f"the latent model in {str(self.directory)!r} was trained on a database with fingerprint "
                          f"{self.meta['database_fingerprint']} ({self.meta.get('database_path')}), not on "
                          f"{str(database.path)!r} (fingerprint {database.fingerprint}); codes, arrows and PCA refer to "
                          "the given database", UserWarning, stacklevel=3)
        self._database = database
        self._codes, self._arrows = None, {}

    @property
    def database(self):
        """The database of `latent_codes`, `arrow`, `pca` (the training database by default)."""
        if self._database is None:
            from ..database import Database

            path = Path(self.meta.get("database_path", ""))
            if path.is_file():
                db = Database.open(path)
            else:
                db = Database.default()
            self._set_database(db)
        return self._database

    @property
    def latent_dim(self) -> int:
        return int(self.meta["hyper"]["latent_dim"])

    @property
    def validation_indices(self) -> np.ndarray:
        """Database indices held out from training."""
        return np.load(self.directory / self.meta["split"]["file"])

    def __repr__(self) -> str:
        t = self.meta.get("training", {})
        return (f"LatentModel({str(self.directory)!r}, latent_dim={self.latent_dim}, trained on "
                f"{self.meta.get('database_cells')} cells, {t.get('epochs_run')} epochs)")

    # ------------------------------------------------------------- conversions
    def _cells_in(self, cells, name="cells"):
        x = np.asarray(cells)
        single = x.ndim == 2
        if single:
            x = x[None]
        if x.ndim != 3 or x.shape[1:] != (50, 50):
            raise InvalidCellError(f"{name} must be (N, 50, 50) or (50, 50), got {describe(cells)}")
        if x.dtype != bool and (np.nanmin(x, initial=0) < 0 or np.nanmax(x, initial=0) > 1 or not np.isfinite(x).all()):
            raise InvalidCellError(f"{name} must hold values in [0, 1], got values in [{x.min()}, {x.max()}]")
        return x, single

    def _z_in(self, z, name="z"):
        a = np.asarray(z, dtype=np.float32)
        single = a.ndim == 1
        if single:
            a = a[None]
        if a.ndim != 2 or a.shape[1] != self.latent_dim:
            raise InvalidValueError(f"{name} must be ({self.latent_dim},) or (N, {self.latent_dim}), got {describe(z)}")
        if not np.isfinite(a).all():
            raise InvalidValueError(f"{name} must be finite")
        return a, single

    def encode(self, cells, return_scale: bool = False, batch_size: int = 2048):
        """Posterior means (N, d) of cells (and the posterior scales (N, d) when ``return_scale``).

        ``cells`` are binary or grayscale in [0, 1]. The network reads the bottom-left quarter; a cell
        that is not mirror-symmetric is first replaced by the average of its four mirror images.
        """
        from .model import posterior

        x, single = self._cells_in(cells)
        mus, sigmas = [], []
        for s in range(0, len(x), batch_size):
            q = posterior(self._vae.encoder(to_quarters(x[s:s + batch_size]), training=False))
            mus.append(q.mean().numpy())
            sigmas.append(q.stddev().numpy())
        mu = np.concatenate(mus) if mus else np.zeros((0, self.latent_dim), np.float32)
        sigma = np.concatenate(sigmas) if sigmas else np.zeros((0, self.latent_dim), np.float32)
        if single:
            mu, sigma = mu[0], sigma[0]
        return (mu, sigma) if return_scale else mu

    def decode(self, z, batch_size: int = 2048) -> np.ndarray:
        """Solid probabilities (N, 50, 50) of latent codes (mirror-symmetric by construction)."""
        import tensorflow as tf

        a, single = self._z_in(z)
        out = [tf.sigmoid(self._vae.decoder(a[s:s + batch_size], training=False)).numpy()[..., 0]
               for s in range(0, len(a), batch_size)]
        q = np.concatenate(out) if out else np.zeros((0, 25, 25), np.float32)
        cells = from_quarters(q)
        return cells[0] if single else cells

    def refine_codes(self, cells, steps: int = 300, learning_rate: float = 0.05) -> np.ndarray:
        """Codes (N, latent_dim) under which the decoder reconstructs ``cells`` best, from their posterior means.

        The encoder is amortized (one network for all cells), so its mean is near, not at, the code
        with the highest decoder log-likelihood. Adam on each cell's Bernoulli log-likelihood (no prior
        term) closes that gap; every cell keeps its best code seen, so its log-likelihood never falls
        below the posterior mean's. ``benchmarks/latent.py --refine N`` uses this to separate the
        decoder's share of the reconstruction error from the encoder's.
        """
        import tensorflow as tf

        from .model import keras, likelihood

        x, single = self._cells_in(cells)
        if steps < 0 or not learning_rate > 0:
            raise InvalidValueError(f"steps must be >= 0 and learning_rate > 0, got {steps!r} and {learning_rate!r}")
        q = tf.constant(to_quarters(x))
        z = tf.Variable(np.atleast_2d(self.encode(x)))
        opt = keras().optimizers.Adam(learning_rate)

        def nll(codes):
            return -likelihood(self._vae.decoder(codes, training=False)).log_prob(q)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                values = nll(z)
                total = tf.reduce_sum(values)
            opt.apply_gradients([(tape.gradient(total, z), z)])
            return values

        best_z, best = z.numpy(), np.full(len(x), np.inf)
        for _ in range(steps):
            before = z.numpy()
            values = step().numpy()                 # negative log-likelihood of the codes before this update
            better = values < best
            best_z[better], best[better] = before[better], values[better]
        final = nll(z).numpy()
        better = final < best
        best_z[better] = z.numpy()[better]
        return best_z[0] if single else best_z

    def to_cells(self, z, threshold: float = 0.9) -> np.ndarray:
        """Binary orthotropic cells (N, 50, 50) from latent codes.

        The decoded probabilities are symmetrized (average of the four mirror images), pixels with
        probability above ``threshold`` become solid (0.9 as in the paper, Sec. 3.2), and
        `metasys.database.repair.repair` removes isolated pixels and checkerboards and keeps
        the largest connected solid.
        """
        from ..database.repair import repair

        if not 0 <= threshold < 1:
            raise InvalidValueError(f"threshold must lie in [0, 1), got {threshold!r}")
        p = np.asarray(self.decode(z))
        single = p.ndim == 2
        p = p[None] if single else p
        sym = 0.25 * (p + p[:, ::-1, :] + p[:, :, ::-1] + p[:, ::-1, ::-1])
        cells = repair(sym > threshold)
        return cells[0] if single else cells

    def predict(self, z, batch_size: int = 8192) -> np.ndarray:
        """Regressor prediction of (C11, C12, C22, C33), shape (N, 4), from latent codes."""
        a, single = self._z_in(z)
        out = [self._vae.regressor(a[s:s + batch_size], training=False).numpy() for s in range(0, len(a), batch_size)]
        p = (np.concatenate(out) if out else np.zeros((0, 4), np.float32)) * self._std + self._mean
        return p[0] if single else p

    # ----------------------------------------------------------- latent moves
    def interpolate(self, z_a, z_b, n: int = 7) -> np.ndarray:
        """``n`` codes (n, d) evenly spaced on the segment from ``z_a`` to ``z_b`` (both included)."""
        a, _ = self._z_in(z_a, "z_a")
        b, _ = self._z_in(z_b, "z_b")
        if a.shape[0] != 1 or b.shape[0] != 1:
            raise InvalidValueError("interpolate: z_a and z_b must each be one code of shape (d,)")
        if int(n) < 2:
            raise InvalidValueError(f"interpolate: n must be >= 2, got {n!r}")
        t = np.linspace(0.0, 1.0, int(n))[:, None]
        out = (1 - t) * a.astype(np.float64) + t * b.astype(np.float64)
        out[0], out[-1] = a[0], b[0]
        return out.astype(np.float32)

    def traverse(self, z, axis, steps: int = 7, size: float = 0.5) -> np.ndarray:
        """Codes along a direction through ``z``, centred on it (paper Fig. 7, 9, 10).

        ``axis`` is a latent axis (int) or a direction vector (d,) (e.g. `arrow`; used as
        given, not normalized). Point ``k`` is ``z + (k - (steps - 1) / 2) * size * direction``.
        Returns (steps, d) for one code, (N, steps, d) for N codes.
        """
        a, single = self._z_in(z)
        if isinstance(axis, (int, np.integer)):
            if not 0 <= int(axis) < self.latent_dim:
                raise InvalidValueError(f"traverse: axis must lie in [0, {self.latent_dim}), got {axis!r}")
            d = np.zeros(self.latent_dim, np.float32)
            d[int(axis)] = 1.0
        else:
            d, _ = self._z_in(axis, "axis")
            if d.shape[0] != 1:
                raise InvalidValueError(f"traverse: axis must be an int or one vector ({self.latent_dim},)")
            d = d[0]
        if int(steps) < 1:
            raise InvalidValueError(f"traverse: steps must be >= 1, got {steps!r}")
        t = (np.arange(int(steps)) - (int(steps) - 1) / 2) * float(size)
        out = a[:, None, :] + t[None, :, None] * d[None, None, :]
        return (out[0] if single else out).astype(np.float32)

    # ------------------------------------------------------- database in latent space
    def latent_codes(self) -> np.ndarray:
        """Posterior means (N, d) of every cell of `database`.

        Computed once and cached next to the model as ``latent_codes_<fingerprint>.npy``.
        """
        if self._codes is not None:
            return self._codes
        db = self.database
        path = self.directory / f"latent_codes_{db.fingerprint}.npy"
        if path.exists():
            codes = np.load(path)
            if codes.shape == (len(db), self.latent_dim):
                self._codes = codes
                return codes
        chunk = 8192
        codes = np.concatenate([self.encode(db.get_cells(np.arange(s, min(s + chunk, len(db)))))
                                for s in range(0, len(db), chunk)]).astype(np.float32)
        try:
            tmp = path.with_name(path.stem + ".tmp.npy")
            np.save(tmp, codes)
            os.replace(tmp, path)
        except OSError as exc:  # read-only install: keep it in memory
            warnings.warn(f"could not cache the latent codes in {str(path)!r} ({exc})", stacklevel=2)
        self._codes = codes
        return codes

    def arrow(self, kind: str, normalize: bool = True) -> np.ndarray:
        """Semantic arrow (d,) from the latent cluster centres of `database` (paper Sec. 4.1).

        ``kind``: ``"C11"``, ``"C12"``, ``"C22"``, ``"C33"`` (centre of the 30% of cells with the
        highest value minus centre of the 30% with the lowest), ``"poisson"`` (same with
        nu12 = C12 / C22), ``"anisotropy"`` (centre of the cells with C11/C22 > 2 minus centre of the
        cells with C22/C11 > 2). Unit norm when ``normalize`` (default), else the raw difference.
        """
        if kind not in ARROWS:
            raise InvalidValueError(f"arrow: kind must be one of {ARROWS}, got {kind!r}")
        if kind not in self._arrows:
            codes = self.latent_codes()
            p = np.asarray(self.database.properties, np.float64)
            if kind == "anisotropy":
                c11, c22 = p[:, 0], p[:, 2]
                high, low = c11 > 2 * c22, c22 > 2 * c11
                if not high.any() or not low.any():
                    raise InvalidValueError(f"arrow('anisotropy'): the database has {int(high.sum())} cells with C11/C22 > 2 "
                                            f"and {int(low.sum())} with C22/C11 > 2; both sets must be non-empty")
            else:
                if kind == "poisson":
                    value = p[:, 1] / np.where(p[:, 2] > 0, p[:, 2], np.nan)
                else:
                    value = p[:, PROPERTY_INDEX[kind]]
                ok = np.flatnonzero(np.isfinite(value))
                order = ok[np.argsort(value[ok], kind="stable")]
                m = max(1, int(round(CLUSTER_FRACTION * len(order))))
                low, high = order[:m], order[-m:]
            self._arrows[kind] = (codes[high].mean(0) - codes[low].mean(0)).astype(np.float64)
        a = self._arrows[kind]
        if normalize:
            norm = np.linalg.norm(a)
            a = a / norm if norm > 0 else a
        return a.astype(np.float32)

    def pca(self, n: int = 2) -> LatentPCA:
        """PCA (scikit-learn) of the latent codes of `database` (paper Fig. 8)."""
        from sklearn.decomposition import PCA

        if not 1 <= int(n) <= self.latent_dim:
            raise InvalidValueError(f"pca: n must lie in [1, {self.latent_dim}], got {n!r}")
        codes = self.latent_codes()
        p = PCA(n_components=int(n)).fit(codes)
        return LatentPCA(coords=p.transform(codes), components=p.components_, mean=p.mean_,
                         explained_variance_ratio=p.explained_variance_ratio_)

    def sample_prior(self, n: int, seed=None) -> np.ndarray:
        """``n`` codes (n, d) drawn from the N(0, I) prior."""
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return rng.standard_normal((int(n), self.latent_dim)).astype(np.float32)
