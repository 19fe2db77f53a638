"""Database storage: round trips, deduplication, clear errors, crash safety, feasibility, CLI."""

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from metasys import Database, Material, homogenize
from metasys.database.repair import is_valid
from metasys.errors import FileFormatError, InvalidCellError, InvalidValueError


def crosses(n: int, offset: int = 0) -> np.ndarray:
    """Distinct valid orthotropic cells: a cross of bars of half-widths (a, b) inside a frame of width t."""
    y, x = np.mgrid[0:50, 0:50] + 0.5
    k = np.arange(offset, offset + n)
    a, b, t = 2 + k % 20, 2 + (k // 20) % 20, (k // 400) % 4
    frame = (np.minimum(x, 50 - x) < t[:, None, None]) | (np.minimum(y, 50 - y) < t[:, None, None])
    cells = (np.abs(x - 25) < a[:, None, None]) | (np.abs(y - 25) < b[:, None, None]) | frame
    assert is_valid(cells).all()
    return cells


@pytest.fixture
def db(tmp_path):
    d = Database.create(tmp_path / "db.h5")
    d.append(crosses(40))
    return d


def test_round_trip_and_metadata(tmp_path, db):
    cells = crosses(40)
    assert len(db) == 40
    np.testing.assert_array_equal(db.get_cells(np.arange(40)), cells)
    np.testing.assert_array_equal(db.get_cells([7, 3, 7]), cells[[7, 3, 7]])
    np.testing.assert_allclose(db.C, homogenize(cells), rtol=1e-12)
    np.testing.assert_allclose(db.properties, db.C[:, [0, 0, 1, 2], [0, 1, 1, 2]])
    again = Database.open(tmp_path / "db.h5")
    assert len(again) == 40 and again.material == Material() and again.fingerprint == db.fingerprint
    assert again.metadata["schema_version"] == 1 and again.metadata["library_version"]
    assert list(again.provenance()["source"][:2]) == ["imported", "imported"]


def test_append_deduplicates(db):
    cells = crosses(50)
    added = db.append(cells, source="perturbation", parent=np.arange(50) % 7, iteration=3)
    np.testing.assert_array_equal(added, np.arange(40, 50))
    assert len(db) == 50 and db.verify().ok
    assert list(db.provenance(slice(40, 42))["source"]) == ["perturbation"] * 2
    assert len(db.append(np.concatenate([crosses(2, 60), crosses(2, 60)]))) == 2


def test_nearest_and_feasibility(db):
    d, idx = db.nearest(db.properties[5], k=3)
    assert idx[0] == 5 and d[0] == 0 and np.all(np.diff(d) >= 0)
    db.append(crosses(400, 40))
    db.build_feasibility(n_grid=12)
    centre = np.median(db.properties, axis=0)
    far = db.properties.max(axis=0) * 3
    d_in, g_in = db.feasibility(centre)
    d_out, g_out = db.feasibility(far)
    assert d_out < 0 and np.dot(g_out, centre - far) > 0  # outside: the gradient points back in
    # The stored gradient is the derivative of the interpolated distance (up to interpolation error).
    step = 1e-4 * (db.properties.max(axis=0) - db.properties.min(axis=0))
    fd = (db.feasibility(far + step * np.eye(4)[0])[0] - db.feasibility(far - step * np.eye(4)[0])[0]) / (2 * step[0])
    assert fd == pytest.approx(g_out[0], rel=1e-3)
    assert np.isfinite(d_in)


def test_clear_errors(tmp_path, db):
    with pytest.raises(FileFormatError, match="does not exist"):
        Database.open(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(FileFormatError, match="not a metasys database"):
        Database.open(tmp_path / "other.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(FileFormatError, match="not a readable HDF5"):
        Database.open(tmp_path / "text.h5")
    newer = tmp_path / "newer.h5"
    newer.write_bytes((tmp_path / "db.h5").read_bytes())
    with h5py.File(newer, "r+") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(FileFormatError, match="newer"):
        Database.open(newer)
    with pytest.raises(InvalidCellError, match="shape"):
        db.append(np.ones((2, 40, 40), bool))
    with pytest.raises(InvalidCellError, match="binary"):
        db.append(np.full((1, 50, 50), 0.5))
    with pytest.raises(InvalidValueError, match="read-only"):
        Database.open(tmp_path / "db.h5").append(crosses(1, 70))
    with pytest.raises(FileFormatError, match="already exists"):
        Database.create(tmp_path / "db.h5")


def test_verify_reports_corruption(tmp_path, db):
    assert db.verify().ok
    with h5py.File(db.path, "r+") as f:
        f["properties"][3, 0] += 0.1
        f["C"][5, 0, 0] += 0.1
        f["properties"][5, 0] += 0.1
        f["hash"][7, 0] ^= 1
    report = Database.open(db.path).verify(sample=40)
    text = str(report)
    assert not report.ok and "hash" in text and "properties differ" in text and "re-homogenize" in text


WRITER = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
from test_database import crosses
from metasys import Database
db = Database.open({path!r}, mode="a")
k = len(db)
while True:
    db.append(crosses(20, 1000 + k), build_state={{"batches": k}})
    k = len(db)
    print(k, flush=True)
"""


def test_kill_at_any_moment_leaves_a_whole_file(tmp_path):
    path = tmp_path / "kill.h5"
    Database.create(path)
    rng = np.random.default_rng(0)
    script = WRITER.format(tests=os.path.dirname(__file__), path=str(path))
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        reported = 0
        deadline = time.monotonic() + 3.0 + rng.uniform(0, 2)
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            reported = int(line)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        db = Database.open(path)
        assert len(db) >= reported  # every batch that was reported written is there
        assert db.verify(sample=10).ok
    leftovers = [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert len(leftovers) <= 1  # at most the temporary file of the killed commit, never the database itself


def test_cli_info_verify_export_merge(tmp_path, db):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "metasys.cli", "db", *args], capture_output=True, text=True)

    result = run("info", str(db.path), "--plot", str(tmp_path / "p.png"))
    assert result.returncode == 0, result.stderr
    assert "40 cells" in result.stdout and (tmp_path / "p.png").stat().st_size > 1000
    assert run("verify", str(db.path)).returncode == 0
    result = run("export", str(db.path), str(tmp_path / "p.csv"))
    assert result.returncode == 0
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0].startswith("index,C11") and len(rows) == 41
    assert float(rows[1].split(",")[1]) == db.properties[0, 0]
    assert run("export", str(db.path), str(tmp_path / "a.npz"), "--cells").returncode == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npz")["cells"], db.get_cells())
    other = Database.create(tmp_path / "other.h5")
    other.append(crosses(30, 20))
    result = run("merge", str(tmp_path / "m.h5"), str(db.path), str(other.path))
    assert result.returncode == 0, result.stderr
    assert len(Database.open(tmp_path / "m.h5")) == 50
    result = run("verify", str(tmp_path / "missing.h5"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert json.loads(Database.open(tmp_path / "m.h5").metadata["material"])["nu"] == 0.49
