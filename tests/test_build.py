"""Database building on a 2-worker local dask cluster: validity, provenance, determinism, resume after a kill."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest

from metasys import Database
from metasys.database.build import BuildSettings, build_database
from metasys.errors import InvalidValueError

SETTINGS = BuildSettings(n_cells=200, n_seeds=4, seed=3, seeds_per_task=2, parents_per_task=20, parents_per_round=40,
                         feasibility_grid=10)

BUILDER = """
from metasys.database.build import BuildSettings, build_database
build_database({path!r}, BuildSettings(**{settings!r}), workers=2, progress=False)
"""


def build_and_kill(path):
    """Run a build in its own process group and SIGKILL it (workers included) right after its first commit."""
    script = BUILDER.format(path=str(path), settings=SETTINGS.__dict__)
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if path.exists() and len(Database.open(path)) > 0:
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_small_build_resumes_after_a_kill_to_the_same_file(tmp_path):
    full = build_database(tmp_path / "full.h5", SETTINGS, workers=2, progress=False, command="test build")
    assert len(full) >= SETTINGS.n_cells and full.build_state["complete"]
    assert full.verify(sample=20).ok
    assert set(full.provenance()["source"]) == {"seed", "perturbation"}
    perturbed = full.source == 1
    assert np.all((full.parent[perturbed] >= 0) & (full.parent[perturbed] < np.flatnonzero(perturbed)))
    assert full.metadata["command"] == "test build" and full.metadata["seed"] == 3
    assert np.isfinite(full.feasibility(np.median(full.properties, axis=0))[0])

    part = tmp_path / "part.h5"
    build_and_kill(part)
    killed = Database.open(part)
    assert 0 < len(killed) < len(full) and not killed.build_state.get("complete")
    resumed = build_database(part, SETTINGS, workers=2, progress=False)
    assert resumed.build_state["complete"]
    assert resumed.fingerprint == full.fingerprint  # the same cells in the same order as without the kill

    with pytest.raises(InvalidValueError, match="settings"):
        build_database(part, replace(SETTINGS, n_seeds=5), workers=1, progress=False)
    assert len(Database.open(part)) == len(full)
    # A finished build can be extended: only the stopping size changes.
    more = build_database(part, replace(SETTINGS, n_cells=len(full) + 30), workers=2, progress=False)
    assert len(more) >= len(full) + 30 and more.build_state["complete"] and more.verify(sample=5).ok


@pytest.mark.slow
def test_time_limit_stops_cleanly_and_resumably(tmp_path):
    stopped = build_database(tmp_path / "t.h5", SETTINGS, workers=1, progress=False, stop_after=0.0)
    assert len(stopped) == 0 and not stopped.build_state.get("complete")
    assert Database.open(tmp_path / "t.h5").verify().ok
