"""Style priors from any image stack (.npy (N, H, W) or a folder of PNGs): preprocessing, training, loading,
generation, and the CLI's errors on bad stacks (noise-optimization paper, Sec. 3.1.1; issue 21, item 3).

The trained priors use a TINY U-Net (two levels, 16 x 16 images, 8 channels) and a few steps, so every test
stays within seconds; they check the plumbing, not the quality of the shipped digit-style prior.
"""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from metasys.cli import app
from metasys.diffusion import DiffusionModel, generate_cells, train_diffusion
from metasys.diffusion.preprocess import ImageStack, images_to_cells, preprocess_images
from metasys.errors import FileFormatError, InvalidValueError

TINY = {"channels": 8, "groups": 4, "num_heads": 1, "image_size": 16, "channel_mults": [1, 2], "attention_levels": [1]}
TINY_TRAINING = {"warmup_steps": 2, "learning_rate": 3e-3, "ema_decay": 0.9, "checkpoint_every": 100, "log_every": 2}
CLI_TINY = ["--steps", "1", "--batch-size", "2", "--channels", "4", "--channel-mults", "1,2", "--attention-levels", "1",
            "--quiet", "--seed", "1"]


def digit_like(n=6, size=8, seed=0):
    """(n, size, size) float in [0, 16] (like sklearn's digits): a bright ring or bar on a dark background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    out = []
    for k in range(n):
        r = np.hypot(yy * rng.uniform(0.8, 1.2), xx * rng.uniform(0.8, 1.2))
        ring = np.clip(16 * (1 - np.abs(r - size / 4) / 1.5), 0, 16)
        bar = 16.0 * (np.abs(xx - rng.uniform(-1, 1)) < 1.0) * (np.abs(yy) < size / 3)
        out.append(ring if k % 2 == 0 else bar)
    return np.asarray(out)


def write_pngs(folder, images, rgb=False):
    folder.mkdir(parents=True, exist_ok=True)
    for k, img in enumerate(images):
        u8 = np.round(255 * img).astype(np.uint8)
        if rgb:
            u8 = np.stack([u8, u8, u8], axis=-1)
        Image.fromarray(u8).save(folder / f"img{k:03d}.png")
    return folder


# --- preprocessing -----------------------------------------------------------------------------------------------


def test_image_stack_preprocessing_gives_32x32_in_minus_one_one():
    raw = digit_like(6, 8)                                         # values 0..16: rescaled to [0, 1]
    stack = ImageStack(raw)
    assert stack.images.dtype == np.float32 and stack.images.min() == 0.0 and stack.images.max() == 1.0
    x = preprocess_images(stack, seed=0)
    assert x.shape == (6, 32, 32) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.min() < -0.5 and x.max() > 0.5
    assert np.array_equal(x, preprocess_images(stack, seed=0))    # deterministic in the seed
    assert not np.array_equal(x, preprocess_images(stack, seed=1))
    # invert: 1 - v before the same steps (the noise draws are equal, so the images are nearly negated)
    assert np.abs(preprocess_images(stack, seed=0, invert=True) + x).max() < 0.1
    # larger images are filtered at their own resolution and shrunk; any size gives 32 x 32
    big = preprocess_images(np.random.default_rng(0).integers(0, 256, (3, 50, 40)).astype(np.uint8))
    assert big.shape == (3, 32, 32) and big.min() >= -1.0 and big.max() <= 1.0
    # binary stacks are taken as they are (1 = solid): the image of a solid square is positive inside
    sq = np.zeros((2, 32, 32))
    sq[:, 8:24, 8:24] = 1
    cells = images_to_cells(preprocess_images(sq))
    assert cells.shape == (2, 50, 50) and cells[:, 25, 25].all() and not cells[:, 2, 2].any()


def test_png_folder_is_grayscale_and_row_zero_at_the_bottom(tmp_path):
    img = np.zeros((3, 10, 12))
    img[:, 0, :] = 1.0                                             # the top row of each PNG is white
    folder = write_pngs(tmp_path / "rgb", img, rgb=True)
    stack = ImageStack.load(folder)
    assert stack.images.shape == (3, 10, 12) and stack.path == str(folder)
    assert np.allclose(stack.images[:, -1, :], 1.0) and np.allclose(stack.images[:, :-1, :], 0.0)
    assert stack.fingerprint == ImageStack.load(write_pngs(tmp_path / "gray", img)).fingerprint
    assert stack.fingerprint != ImageStack(img[:, ::-1] * 0.5).fingerprint


# --- training, loading, generating ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def npy_prior(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("style")
    np.save(tmp / "stack.npy", digit_like(8, 8) / 16.0)
    out = tmp / "prior"
    train_diffusion(ImageStack.load(tmp / "stack.npy"), out, steps=6, batch_size=4, unet=TINY, training=TINY_TRAINING,
                    progress=False, log=lambda *a: None)
    return tmp, out


def test_style_prior_from_npy_loads_and_generates(npy_prior):
    tmp, out = npy_prior
    meta = json.loads((out / "model.json").read_text())
    src = meta["source"]
    assert src["kind"] == "images" and src["path"] == str((tmp / "stack.npy").resolve())
    assert src["fingerprint"] == ImageStack.load(tmp / "stack.npy").fingerprint and src["images"] == 8
    assert src["image_shape"] == [8, 8] and "database_fingerprint" not in meta
    assert meta["preprocess"] == {"noise_std": 0.01, "sigma": 1.2, "size": 16, "filter_mode": "nearest", "invert": False}
    model = DiffusionModel.load(out)
    assert model.source == src and model.image_size == 16
    assert model.sample_images(3, seed=0).shape == (3, 16, 16)
    cells = model.sample_cells(3, seed=0)
    assert cells.shape == (3, 50, 50) and cells.dtype == bool


@pytest.mark.slow
def test_style_prior_serves_generate_cells(npy_prior):
    _, out = npy_prior
    target = np.array([0.4, 0.1, 0.4, 0.1])
    res = generate_cells(target, n=2, model=out, seed=0, gammas=(5.0,), max_iter=2, polish=0)
    assert res.cells.shape == (2, 50, 50) and res.stiffness.shape == (2, 3, 3) and res.loss.shape == (2,)
    assert np.all(np.isfinite(res.loss))


def test_resume_checks_the_image_source(npy_prior, tmp_path):
    tmp, _ = npy_prior
    out = tmp_path / "prior"
    stack = ImageStack.load(tmp / "stack.npy")
    train_diffusion(stack, out, steps=6, batch_size=4, unet=TINY, training=TINY_TRAINING, progress=False, stop_after=2,
                    log=lambda *a: None)                           # the fixture's settings: its compilation is reused
    assert json.loads((out / "model.json").read_text())["training"]["steps_run"] == 2
    other = ImageStack(stack.images[::-1])                         # same images, another order: another stack
    with pytest.raises(FileFormatError, match="different run"):
        train_diffusion(other, out, steps=6, batch_size=4, unet=TINY, training=TINY_TRAINING, progress=False,
                        log=lambda *a: None)
    meta = train_diffusion(stack, out, steps=6, batch_size=4, unet=TINY, training=TINY_TRAINING, progress=False,
                           log=lambda *a: None)
    assert meta["training"]["steps_run"] == 6 and meta["training"]["status"] == "completed"


def test_style_prior_from_png_folder(tmp_path):
    folder = write_pngs(tmp_path / "pngs", digit_like(6, 12) / 16.0, rgb=True)
    out = tmp_path / "prior"
    train_diffusion(ImageStack.load(folder), out, steps=6, batch_size=4, unet=TINY, training=TINY_TRAINING,
                    progress=False, log=lambda *a: None)
    model = DiffusionModel.open(out)
    assert model.source["kind"] == "images" and model.source["path"] == str(folder.resolve())
    assert model.sample_cells(2, seed=3).shape == (2, 50, 50)


# --- the CLI -----------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_trains_a_style_prior(tmp_path):
    np.save(tmp_path / "stack.npy", digit_like(4, 8) / 16.0)
    out = tmp_path / "m"
    res = CliRunner().invoke(app, ["train", "diffusion", "--images", str(tmp_path / "stack.npy"), "--out", str(out),
                                   "--invert", *CLI_TINY])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["source"]["kind"] == "images" and meta["preprocess"]["invert"] is True
    assert meta["training"]["steps_run"] == 1 and meta["command"].startswith("metasys train diffusion")
    assert DiffusionModel.load(out).config.channels == 4


def _bad(runner, path, tmp_path, *extra):
    res = runner.invoke(app, ["train", "diffusion", "--images", str(path), "--out", str(tmp_path / "m"), *CLI_TINY, *extra])
    assert res.exit_code == 2, res.output
    assert str(path) in res.output, res.output
    return res.output


def test_cli_bad_image_stacks_exit_2_naming_the_path(tmp_path):
    runner = CliRunner()
    np.save(tmp_path / "flat.npy", np.zeros((8, 8)))
    assert "(N, H, W)" in _bad(runner, tmp_path / "flat.npy", tmp_path)
    np.save(tmp_path / "rgb.npy", np.zeros((4, 8, 8, 3)))
    assert "(N, H, W)" in _bad(runner, tmp_path / "rgb.npy", tmp_path)
    nan = digit_like(4, 8)
    nan[1, 2, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    assert "NaN" in _bad(runner, tmp_path / "nan.npy", tmp_path)
    inf = digit_like(4, 8)
    inf[0, 0, 0] = np.inf
    np.save(tmp_path / "inf.npy", inf)
    assert "infinite" in _bad(runner, tmp_path / "inf.npy", tmp_path)
    np.save(tmp_path / "one.npy", digit_like(1, 8))
    assert "at least 2" in _bad(runner, tmp_path / "one.npy", tmp_path)
    (tmp_path / "empty").mkdir()
    assert "no .png" in _bad(runner, tmp_path / "empty", tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"not a png")
    assert "a.png' could not be read" in _bad(runner, tmp_path / "broken", tmp_path)
    (tmp_path / "garbage.npy").write_bytes(b"garbage")
    assert "could not be read" in _bad(runner, tmp_path / "garbage.npy", tmp_path)
    assert "does not exist" in _bad(runner, tmp_path / "missing.npy", tmp_path)
    np.save(tmp_path / "ok.npy", digit_like(4, 8))
    res = runner.invoke(app, ["train", "diffusion", "--images", str(tmp_path / "ok.npy"), "--db", "x.h5", "--out",
                              str(tmp_path / "m"), *CLI_TINY])
    assert res.exit_code == 2 and "not both" in res.output


def test_image_stack_errors_name_the_argument():
    with pytest.raises(FileFormatError, match=r"images: expected an image stack of shape \(N, H, W\)"):
        ImageStack(np.zeros((2, 3, 4, 5)))
    with pytest.raises(InvalidValueError, match="nothing to learn"):
        ImageStack(np.full((3, 4, 4), 7.0))
    with pytest.raises(FileFormatError, match="numeric"):
        ImageStack(np.array([["a", "b"], ["c", "d"]]))
