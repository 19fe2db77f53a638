"""User-visible behaviour of the CLI and cell files."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metasys import homogenize
from metasys.errors import FileFormatError
from metasys.io import load_cell, save_cell

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cells" / "x_brace.png"


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "metasys.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("suffix", [".npy", ".png", ".txt"])
def test_cell_files_round_trip(tmp_path, rng, suffix):
    cell = rng.random((20, 16)) < 0.5
    save_cell(tmp_path / f"c{suffix}", cell)
    np.testing.assert_array_equal(load_cell(tmp_path / f"c{suffix}"), cell.astype(float))


def test_png_is_read_as_displayed(tmp_path):
    from PIL import Image

    img = np.full((4, 6), 255, np.uint8)
    img[0, :] = 0  # black top row of the picture
    Image.fromarray(img).save(tmp_path / "top.png")
    cell = load_cell(tmp_path / "top.png")
    assert cell[-1].all() and not cell[:-1].any()


def test_homogenize_command_writes_json(tmp_path):
    out = tmp_path / "c.json"
    result = run_cli("homogenize", str(EXAMPLE), "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert "C11" in result.stdout
    data = json.loads(out.read_text())
    np.testing.assert_allclose(data["C"], homogenize(load_cell(EXAMPLE)), rtol=1e-12)
    assert data["material"]["nu"] == 0.49


def test_missing_file_and_bad_suffix(tmp_path):
    result = run_cli("homogenize", str(tmp_path / "missing.npy"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    (tmp_path / "cell.csv").write_text("1,0\n0,1\n")
    result = run_cli("homogenize", str(tmp_path / "cell.csv"))
    assert result.returncode == 2 and ".npy" in result.stderr
    with pytest.raises(FileFormatError):
        load_cell(tmp_path / "cell.csv")


def test_bad_material_option_is_reported():
    result = run_cli("homogenize", str(EXAMPLE), "--nu", "0.7")
    assert result.returncode == 2 and "nu" in result.stderr


def test_help_and_version():
    assert run_cli("--help").returncode == 0
    result = run_cli("--version")
    assert result.returncode == 0 and "metasys" in result.stdout
