"""Database building on a 2-worker local dask cluster: validity, provenance, determinism, resume."""

from dataclasses import replace

import numpy as np
import pytest

from metasys import Database
from metasys.database.build import BuildSettings, build_database
from metasys.errors import InvalidValueError

SETTINGS = BuildSettings(n_cells=120, n_seeds=4, seed=3, seeds_per_task=2, parents_per_task=25, parents_per_round=50,
                         feasibility_grid=10)


@pytest.mark.slow
def test_small_build_resumes_to_the_same_file(tmp_path):
    full = build_database(tmp_path / "full.h5", SETTINGS, workers=2, progress=False, command="test build")
    assert len(full) >= SETTINGS.n_cells and full.build_state["complete"]
    assert full.verify(sample=20).ok
    sources = set(full.provenance()["source"])
    assert sources == {"seed", "perturbation"}
    perturbed = full.source == 1
    assert np.all((full.parent[perturbed] >= 0) & (full.parent[perturbed] < np.flatnonzero(perturbed)))
    assert full.metadata["command"] == "test build" and full.metadata["seed"] == 3
    d, _ = full.feasibility(np.median(full.properties, axis=0))
    assert np.isfinite(d)

    part = build_database(tmp_path / "part.h5", SETTINGS, workers=2, progress=False, stop_after=6.0)
    assert not part.build_state.get("complete")
    assert 0 < len(part) < len(full)
    resumed = build_database(tmp_path / "part.h5", SETTINGS, workers=2, progress=False)
    assert resumed.build_state["complete"]
    assert resumed.fingerprint == full.fingerprint

    with pytest.raises(InvalidValueError, match="settings"):
        build_database(tmp_path / "part.h5", BuildSettings(n_cells=500, n_seeds=5), workers=1, progress=False)
    assert len(Database.open(tmp_path / "part.h5")) == len(full)
    # A finished build can be extended: only the stopping size changes.
    more = build_database(tmp_path / "part.h5", replace(SETTINGS, n_cells=len(full) + 30), workers=2, progress=False)
    assert len(more) >= len(full) + 30 and more.build_state["complete"] and more.verify(sample=5).ok
