"""Latent model (VAE + regressor): training CLI, resume, save/load, API shapes and semantics, cache."""

import json
import shutil
import warnings

import numpy as np
import pytest
from test_database import crosses

pytest.importorskip("tensorflow_probability")
pytest.importorskip("tf_keras")

from typer.testing import CliRunner  # noqa: E402

from metasys import Database  # noqa: E402
from metasys.cli import app  # noqa: E402
from metasys.errors import FileFormatError, InvalidCellError, InvalidValueError  # noqa: E402
from metasys.latent import LatentModel  # noqa: E402

N_CELLS = 300


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 300-cell database and a model trained on it for 2 epochs through the CLI."""
    root = tmp_path_factory.mktemp("latent")
    db = Database.create(root / "tiny.h5")
    db.append(crosses(N_CELLS))
    out = root / "model"
    result = CliRunner().invoke(app, ["train", "vae", "--db", str(db.path), "--out", str(out), "--epochs", "2",
                                            "--batch-size", "64", "--seed", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    return db, out


@pytest.fixture(scope="module")
def model(tiny):
    db, out = tiny
    return LatentModel.load(out, database=db)


def test_cli_writes_model_dir(tiny):
    db, out = tiny
    for name in ("model.json", "history.json", "history.png", "weights.h5", "validation_indices.npy", "checkpoint/state.json"):
        assert (out / name).exists(), name
    meta = json.loads((out / "model.json").read_text())
    assert meta["format"] == "metasys-latent-model" and meta["format_version"] == 1
    assert meta["database_fingerprint"] == db.fingerprint and meta["seed"] == 3
    assert meta["training"]["epochs_run"] == 2 and meta["command"].startswith("metasys train vae")
    val = np.load(out / "validation_indices.npy")
    assert len(val) == 30 and len(np.unique(val)) == 30
    assert len(json.loads((out / "history.json").read_text())["val_loss"]) == 2


def test_cli_bad_db_path(tmp_path):
    result = CliRunner().invoke(app, ["train", "vae", "--db", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "m")])
    assert result.exit_code != 0
    assert "missing.h5" in result.output and "does not exist" in result.output
    assert not (tmp_path / "m").exists()


def test_shapes(model, tiny):
    db, _ = tiny
    cells = db.get_cells(np.arange(5))
    z, s = model.encode(cells, return_scale=True)
    assert z.shape == (5, 16) and s.shape == (5, 16) and (s > 0).all()
    assert model.encode(cells[0]).shape == (16,)
    p = model.decode(z)
    assert p.shape == (5, 50, 50) and p.min() >= 0 and p.max() <= 1
    assert model.decode(z[0]).shape == (50, 50)
    assert model.predict(z).shape == (5, 4) and model.predict(z[0]).shape == (4,)
    with pytest.raises(InvalidCellError, match="cells"):
        model.encode(np.zeros((3, 40, 40)))
    with pytest.raises(InvalidValueError, match="z"):
        model.decode(np.zeros((3, 15)))


def test_save_load_round_trip(model, tiny, tmp_path):
    db, out = tiny
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    again = LatentModel.load(copy, database=db)
    cells = db.get_cells(np.arange(7))
    z = model.encode(cells)
    np.testing.assert_array_equal(again.encode(cells), z)
    np.testing.assert_array_equal(again.decode(z), model.decode(z))
    np.testing.assert_array_equal(again.predict(z), model.predict(z))
    np.testing.assert_allclose(model.meta["normalization"]["mean"], db.properties[np.setdiff1d(
        np.arange(len(db)), model.validation_indices)].mean(0))


def test_newer_format_refused(tiny, tmp_path):
    _, out = tiny
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    meta = json.loads((copy / "model.json").read_text())
    meta["format_version"] = 99
    (copy / "model.json").write_text(json.dumps(meta))
    with pytest.raises(FileFormatError, match="format version 99"):
        LatentModel.load(copy)
    with pytest.raises(FileFormatError, match="model.json"):
        LatentModel.load(tmp_path)


def test_resume_continues_epoch_count(tiny, tmp_path):
    from metasys.latent.train import train_vae

    db, out = tiny
    copy = tmp_path / "resume"
    shutil.copytree(out, copy)
    logs = []
    np.random.seed(11)
    state = np.random.get_state()[1].copy()
    meta = train_vae(db, copy, epochs=3, batch_size=64, seed=3, progress=False, log=logs.append)
    assert np.array_equal(np.random.get_state()[1], state)      # training leaves NumPy's global generator alone
    assert any("resuming" in m and "epoch 2" in m for m in logs)
    assert meta["training"]["epochs_run"] == 3
    history = json.loads((copy / "history.json").read_text())
    assert len(history["loss"]) == 3
    with pytest.raises(FileFormatError, match="different run"):
        train_vae(db, copy, epochs=4, seed=4, progress=False, log=logs.append)


def test_other_database_warns(tiny, tmp_path):
    _, out = tiny
    other = Database.create(tmp_path / "other.h5")
    other.append(crosses(40, offset=500))
    with pytest.warns(UserWarning, match="fingerprint"):
        LatentModel.load(out, database=other)
    db, _ = tiny
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LatentModel.load(out, database=db)


def test_to_cells_binary_symmetric(model):
    z = model.sample_prior(8, seed=1)
    cells = model.to_cells(z)
    assert cells.shape == (8, 50, 50) and cells.dtype == bool
    assert (cells == cells[:, ::-1, :]).all() and (cells == cells[:, :, ::-1]).all()
    assert model.to_cells(z[0]).shape == (50, 50)
    p = model.decode(z)
    np.testing.assert_array_equal(p, p[:, ::-1, :])
    np.testing.assert_array_equal(p, p[:, :, ::-1])


def test_interpolate_and_traverse(model):
    z = model.sample_prior(2, seed=2)
    path = model.interpolate(z[0], z[1], 6)
    assert path.shape == (6, 16)
    np.testing.assert_array_equal(path[0], z[0])
    np.testing.assert_array_equal(path[-1], z[1])
    t = model.traverse(z, 4, steps=5, size=0.5)
    assert t.shape == (2, 5, 16)
    np.testing.assert_allclose(t[:, 2], z)
    np.testing.assert_allclose(t[0, 4] - t[0, 0], np.eye(16)[4] * 2.0, atol=1e-6)
    a = model.arrow("C11")
    np.testing.assert_allclose(model.traverse(z[0], a, 3, 1.0)[2] - z[0], a, atol=1e-6)
    with pytest.raises(InvalidValueError, match="axis"):
        model.traverse(z, 16)


def test_arrows_are_differences_of_cluster_centres(model, tiny):
    # the definition (paper Sec. 4.1): centre of the 30 % highest minus centre of the 30 % lowest codes;
    # that the codes project higher on the arrow follows from it. What the arrow does to the decoded
    # cells is checked with the shipped model below (this 2-epoch model decodes nearly solid cells).
    db, _ = tiny
    codes = model.latent_codes()
    p = db.properties
    for kind, value in (("C11", p[:, 0]), ("C33", p[:, 3]), ("poisson", p[:, 1] / p[:, 2])):
        a = model.arrow(kind)
        assert a.shape == (16,) and np.isclose(np.linalg.norm(a), 1, atol=1e-5)
        order = np.argsort(value, kind="stable")
        m = round(0.3 * len(order))
        raw = model.arrow(kind, normalize=False)
        np.testing.assert_allclose(raw, codes[order[-m:]].mean(0) - codes[order[:m]].mean(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(a, raw / np.linalg.norm(raw), rtol=1e-5, atol=1e-6)
    stiff_x, stiff_y = p[:, 0] > 2 * p[:, 2], p[:, 2] > 2 * p[:, 0]
    assert stiff_x.any() and stiff_y.any()
    np.testing.assert_allclose(model.arrow("anisotropy", normalize=False),
                               codes[stiff_x].mean(0) - codes[stiff_y].mean(0), rtol=1e-4, atol=1e-5)
    with pytest.raises(InvalidValueError, match="kind"):
        model.arrow("C99")


def test_shipped_c11_arrow_raises_the_homogenized_c11_of_decoded_cells():
    """Stepping along the C11 arrow makes stiffer cells: the homogenized C11 of the decoded cells
    (probabilities thresholded at 0.5) rises along it, from ten database cells and between the centres."""
    from metasys import homogenize

    lm = LatentModel.default()
    codes = lm.latent_codes()
    a = lm.arrow("C11")
    spread = float((codes @ a).std())
    starts = codes[np.random.default_rng(0).choice(len(codes), 10, replace=False)]
    steps = np.linspace(-1.0, 1.0, 5) * spread  # one standard deviation of the codes along the arrow each way
    paths = (starts[:, None, :] + steps[:, None] * a).reshape(-1, lm.latent_dim)
    c11 = homogenize(lm.decode(paths) > 0.5)[:, 0, 0].reshape(10, 5)
    # measured: every path strictly increasing; mean 0.50, 0.61, 0.69, 0.76, 0.85
    assert np.all(np.diff(c11, axis=1) > 0), np.round(c11, 3)
    assert np.all(c11[:, -1] - c11[:, 0] > 0.1)
    # from the centre of the 30 % least stiff cells along the raw arrow to the centre of the stiffest
    p = lm.database.properties[:, 0]
    order = np.argsort(p, kind="stable")
    low = codes[order[:round(0.3 * len(order))]].mean(0)
    ends = homogenize(lm.decode(np.stack([low, low + lm.arrow("C11", normalize=False)])) > 0.5)[:, 0, 0]
    assert ends[1] - ends[0] > 0.5  # measured 0.22 -> 1.15 (the database's C11 spans 0.002 .. 1.316)


def test_latent_cache_created_and_reused(tiny):
    db, out = tiny
    lm = LatentModel.load(out, database=db)
    codes = lm.latent_codes()
    cache = out / f"latent_codes_{db.fingerprint}.npy"
    assert cache.exists() and codes.shape == (N_CELLS, 16)
    np.testing.assert_allclose(codes[:4], lm.encode(db.get_cells(np.arange(4))), atol=1e-5)
    marked = codes.copy()
    marked[0] = 123.0
    np.save(cache, marked)
    try:
        assert LatentModel.load(out, database=db).latent_codes()[0, 0] == 123.0
    finally:
        np.save(cache, codes)
    pca = lm.pca(2)
    assert pca.coords.shape == (N_CELLS, 2) and pca.components.shape == (2, 16)


def test_latent_plot_cli(tiny, tmp_path):
    db, out = tiny
    result = CliRunner().invoke(app, ["latent", "plot", "--model", str(out), "--db", str(db.path),
                                      "--out", str(tmp_path / "fig")])
    assert result.exit_code == 0, result.output
    for name in ("latent_pca.png", "traversal_axes.png", "traversal_arrows.png", "prior_samples.png", "reconstructions.png"):
        assert (tmp_path / "fig" / name).stat().st_size > 1000
    bad = CliRunner().invoke(app, ["latent", "plot", "--model", str(tmp_path), "--out", str(tmp_path / "fig2")])
    assert bad.exit_code != 0 and "model.json" in bad.output


def test_regressor_refit_keeps_encoder_and_decoder(model, tiny, tmp_path):
    db, out = tiny
    copy = tmp_path / "model"
    shutil.copytree(out, copy)
    cells = db.get_cells(np.arange(12))
    z_before = model.encode(cells)
    runner = CliRunner()
    result = runner.invoke(app, ["train", "regressor", "--model", str(copy), "--db", str(db.path), "--units", "24,12",
                                       "--epochs", "3", "--seed", "1"])
    assert result.exit_code == 0, result.output
    refit = LatentModel.load(copy, database=db)
    np.testing.assert_array_equal(refit.encode(cells), z_before)
    np.testing.assert_array_equal(refit.decode(z_before), model.decode(z_before))
    meta = json.loads((copy / "model.json").read_text())
    assert meta["hyper"]["regressor_units"] == [24, 12]
    record = meta["regressor_refit"]
    assert record["epochs_run"] == 3 and len(record["val_r2_after"]) == 4
    assert record["command"].startswith("metasys train regressor")
    assert refit.predict(z_before).shape == (12, 4)
    bad = runner.invoke(app, ["train", "regressor", "--model", str(copy), "--db", str(db.path), "--units", "a,b"])
    assert bad.exit_code == 2 and "--units" in bad.output


def test_wider_decoder_from_cli(tiny, tmp_path):
    db, _ = tiny
    out = tmp_path / "wide"
    result = CliRunner().invoke(app, ["train", "vae", "--db", str(db.path), "--out", str(out), "--epochs", "1",
                                      "--batch-size", "64",
                                            "--decoder-seed-channels", "8", "--decoder-filters", "6,4", "--decoder-convs", "2",
                                            "--latent-dim", "5", "--quiet"])
    assert result.exit_code == 0, result.output
    hyper = json.loads((out / "model.json").read_text())["hyper"]
    assert hyper["decoder_seed_shape"] == [7, 7, 8] and hyper["decoder_filters"] == [6, 4] and hyper["decoder_convs"] == 2
    lm = LatentModel.load(out, database=db)
    convs = [la for la in lm._vae.decoder.layers if la.name.startswith("dec_conv")]
    assert [la.name for la in convs] == ["dec_conv0_0", "dec_conv0_1", "dec_conv1_0", "dec_conv1_1"]
    assert [la.filters for la in convs] == [6, 6, 4, 4]
    z = lm.encode(db.get_cells(np.arange(3)))
    assert lm.latent_dim == 5 and z.shape == (3, 5) and lm.predict(z).shape == (3, 4)
    p = lm.decode(z)
    assert p.shape == (3, 50, 50)
    np.testing.assert_array_equal(p, p[:, ::-1, ::-1])


@pytest.mark.parametrize("args, message", [
    (["--decoder-filters", "16"], "at least two"),
    (["--decoder-filters", "16,x"], "--decoder-filters"),
    (["--decoder-filters", "16,0"], "--decoder-filters"),
    (["--decoder-convs", "-1"], "--decoder-convs"),
    (["--latent-dim", "0"], "--latent-dim"),
])
def test_cli_bad_decoder_options(tiny, tmp_path, args, message):
    db, _ = tiny
    result = CliRunner().invoke(app, ["train", "vae", "--db", str(db.path), "--out", str(tmp_path / "m"), "--quiet", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "m").exists()


def test_model_and_checkpoint_without_new_hyper_parameters(model, tiny, tmp_path):
    """Model directories written before ``decoder_convs`` existed load, and their checkpoints resume, unchanged."""
    from metasys.latent.train import train_vae

    db, out = tiny
    copy = tmp_path / "old"
    shutil.copytree(out, copy)
    for path in (copy / "model.json", copy / "checkpoint" / "state.json"):
        data = json.loads(path.read_text())
        hyper = data["hyper"] if "hyper" in data else data["identity"]["hyper"]
        del hyper["decoder_convs"]
        path.write_text(json.dumps(data))
    cells = db.get_cells(np.arange(6))
    z = model.encode(cells)
    old = LatentModel.load(copy, database=db)
    np.testing.assert_array_equal(old.encode(cells), z)
    np.testing.assert_array_equal(old.decode(z), model.decode(z))
    logs = []
    meta = train_vae(db, copy, epochs=3, batch_size=64, seed=3, progress=False, log=logs.append)
    assert any("resuming" in m for m in logs) and meta["training"]["epochs_run"] == 3


def test_learning_rate_reduced_on_plateau_and_resumed(tiny, tmp_path):
    """The rate follows the rule on the recorded validation losses, and a resumed run goes on with it."""
    from metasys.latent.train import train_vae

    db, _ = tiny
    out = tmp_path / "plateau"
    kwargs = dict(batch_size=64, seed=5, learning_rate=1e-9, lr_patience=1, lr_factor=0.25, patience=100, progress=False,
                  log=lambda m: None)
    train_vae(db, out, epochs=5, **kwargs)
    train_vae(db, out, epochs=7, **kwargs)
    history = json.loads((out / "history.json").read_text())
    lr, best, expected = 1e-9, np.inf, []
    for val in history["val_loss"]:
        expected.append(lr)
        if val < best:
            best = val
        else:
            lr *= 0.25
    assert len(history["lr"]) == 7
    np.testing.assert_allclose(history["lr"], expected, rtol=1e-6)
    assert min(expected) < 1e-9
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert np.isclose(state["learning_rate"], lr, rtol=1e-6)
    with pytest.raises(InvalidValueError, match="lr_factor"):
        train_vae(db, tmp_path / "bad", epochs=1, lr_patience=2, lr_factor=1.5, progress=False)


def test_refine_codes_never_lowers_the_likelihood(model, tiny):
    import tensorflow as tf

    from metasys.latent.model import likelihood, to_quarters

    db, _ = tiny
    cells = db.get_cells(np.arange(8))
    z0 = model.encode(cells)
    z = model.refine_codes(cells, steps=30, learning_rate=0.05)
    assert z.shape == (8, 16)

    def nll(codes):
        return -likelihood(model._vae.decoder(tf.constant(codes), training=False)).log_prob(to_quarters(cells)).numpy()

    before, after = nll(z0), nll(z)
    assert (after <= before + 1e-3).all() and after.sum() < before.sum()
    np.testing.assert_array_equal(model.refine_codes(cells, steps=0), z0)
    assert model.refine_codes(cells[0], steps=2).shape == (16,)
    with pytest.raises(InvalidValueError, match="steps"):
        model.refine_codes(cells, steps=-1)
