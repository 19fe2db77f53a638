"""Building a database as in the VAE paper, Sec. 3.2, on a dask.distributed cluster.

1. Seeds: SIMP inverse homogenization for uniformly sampled target stiffness matrices.
2. Repair and validation of every candidate cell.
3. Rounds of stochastic shape perturbation of parents drawn with weights favouring extreme and
   sparse properties, until the database holds the requested number of cells.

Workers do all the numerical work (optimization, perturbation, repair, homogenization) and
return finished cells; the calling process is the only writer of the file. Every commit stores
the builder state with the cells, so running the same build on an existing file resumes where it
stopped: each task's random stream is derived from (seed, phase, round, task), results are committed
in task order, and a round's parents are drawn from the cells committed before the round began, so
the same command gives the same file, whether or not it was interrupted.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidValueError
from ..material import Material
from .storage import Database


@dataclass(frozen=True)
class BuildSettings:
    """What a build makes; recorded in the file so that a resume continues the same build."""

    n_cells: int = 100_000
    n_seeds: int = 1400
    seed: int = 0
    seeds_per_task: int = 8
    parents_per_task: int = 400
    parents_per_round: int = 8000
    feasibility_grid: int = 24

    def __post_init__(self):
        for name in ("n_cells", "n_seeds", "seeds_per_task", "parents_per_task", "parents_per_round", "feasibility_grid"):
            if int(getattr(self, name)) < 1:
                raise InvalidValueError(f"BuildSettings.{name} must be a positive integer, got {getattr(self, name)!r}")


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, keys)]))


def _finish(cells: np.ndarray, material: Material, parents: np.ndarray | None = None):
    """Repair, keep valid cells, homogenize: the common tail of every worker task."""
    import numba

    from ..fem import homogenize
    from .repair import is_valid, repair

    numba.set_num_threads(1)  # one worker process per core: no nested threading
    cells = repair(cells)
    ok = is_valid(cells)
    cells = cells[ok]
    c = homogenize(cells, material, batch_size=256) if len(cells) else np.zeros((0, 3, 3))
    return cells, c, (None if parents is None else parents[ok])


def seed_task(targets: np.ndarray, seeds: np.ndarray, material: Material):
    """Worker task: optimize a chunk of seeds; returns (cells, C)."""
    from .seeds import optimize_seeds

    results = optimize_seeds(targets, seeds, material)
    cells = np.stack([r.cell for r in results]) if results else np.zeros((0, 50, 50), bool)
    return _finish(cells, material)[:2]


def perturb_task(cells: np.ndarray, parents: np.ndarray, seed: int, round_: int, task: int, material: Material):
    """Worker task: perturb a chunk of parent cells; returns (cells, C, parent indices)."""
    from .perturb import perturb

    children = perturb(cells, _rng(seed, 2, round_, task))
    return _finish(children, material, parents)


@contextmanager
def _client(workers: int | None, scheduler: str | None):
    from dask.distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with LocalCluster(n_workers=workers or 1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            yield client


def build_database(path, settings: BuildSettings = BuildSettings(), material: Material = Material(), workers: int | None = 2,
                   scheduler: str | None = None, command: str | None = None, progress: bool = True,
                   stop_after: float | None = None) -> Database:
    """Build (or resume building) a database at ``path``.

    Parameters
    ----------
    path : str or Path
        The HDF5 file; created if missing, resumed if it holds a build with the same settings.
    settings : BuildSettings
    material : Material
        Base material of a new file (an existing file keeps its own).
    workers : int
        Size of the local dask cluster started when no ``scheduler`` is given.
    scheduler : str, optional
        Address of an existing dask scheduler (``tcp://host:8786``) to run on a cluster of machines.
    command : str, optional
        The command line recorded in the file.
    progress : bool
        Show a live progress display.
    stop_after : float, optional
        Stop cleanly after this many seconds (the file is resumable).
    """
    path = Path(path)
    wanted = settings.__dict__
    if path.exists():
        db = Database.open(path, mode="a")
        state = db.build_state
        # n_cells only says when to stop, so a finished build can be extended; anything else would mix two builds.
        old = state.get("settings")

        def fixed(settings):
            return {k: v for k, v in settings.items() if k != "n_cells"}

        if old is not None and fixed(old) != fixed(wanted):
            raise InvalidValueError(f"{str(path)!r} was built with settings {old}; resuming with different settings "
                                    f"{wanted} would mix two builds (use a new file)")
        state.pop("complete", None)
    else:
        db = Database.create(path, material=material, command=command, seed=settings.seed)
        state = {}
    state = {"seed_tasks_done": 0, "round": 0, "round_start": 0, "round_tasks_done": 0, "round_complete": True, **state,
             "settings": wanted}
    if command:
        db.set_metadata(command=command, seed=settings.seed)
    started = time.monotonic()

    def out_of_time():
        return stop_after is not None and time.monotonic() - started > stop_after

    with _client(workers, scheduler) as client, _Display(progress, settings.n_cells) as display:
        display.update(db, "seeds")
        # Phase 1: seeds.
        from .seeds import sample_targets

        targets = sample_targets(settings.n_seeds, _rng(settings.seed, 1), db.material)
        chunks = [np.arange(i, min(i + settings.seeds_per_task, settings.n_seeds))
                  for i in range(0, settings.n_seeds, settings.seeds_per_task)]
        futures = [client.submit(seed_task, targets[chunk], settings.seed * 1_000_003 + chunk, db.material, pure=False)
                   for chunk in chunks[state["seed_tasks_done"]:]]
        _drain(futures, db, state, "seed_tasks_done", display, out_of_time, source="seed", iteration=0)
        if out_of_time():
            return db
        # Phase 2: perturbation rounds.
        while len(db) < settings.n_cells and not out_of_time():
            if state["round_complete"]:
                state.update(round=state["round"] + 1, round_start=len(db), round_tasks_done=0, round_complete=False)
                db.set_build_state(state)
            r = state["round"]
            from .perturb import select_parents

            parents = select_parents(db.properties[: state["round_start"]], settings.parents_per_round, _rng(settings.seed, 3, r))
            parents = np.sort(parents)
            chunks = np.array_split(parents, max(1, len(parents) // settings.parents_per_task))
            first = state["round_tasks_done"]
            futures = [client.submit(perturb_task, db.get_cells(chunk), chunk, settings.seed, r, k, db.material, pure=False)
                       for k, chunk in enumerate(chunks) if k >= first]
            display.update(db, f"perturbation round {r}")
            _drain(futures, db, state, "round_tasks_done", display, out_of_time, source="perturbation", iteration=r)
            if state["round_tasks_done"] == len(chunks):
                state["round_complete"] = True
                db.set_build_state(state)
        if len(db) >= settings.n_cells and not out_of_time():
            display.update(db, "feasibility field")
            db.build_feasibility(settings.feasibility_grid)
            state["complete"] = True
            db.set_build_state(state)
        display.update(db, "done" if state.get("complete") else "stopped (resumable)")
    return db


def _drain(futures, db, state, done_key, display, out_of_time, source, iteration, commit_cells=4000, commit_seconds=20.0):
    """Commit finished tasks in task order (one writer), so that the file does not depend on timing.

    Results that finish early wait for their predecessors. Results are committed together once
    ``commit_cells`` cells or ``commit_seconds`` have accumulated (each commit rewrites the file),
    and always at the end; ``state[done_key]`` counts committed tasks. When out of time, the
    remaining tasks are cancelled and the build can resume from the state.
    """
    batch, last = [], time.monotonic()

    def commit():
        nonlocal batch, last
        if batch:
            state[done_key] += len(batch)
            cells = np.concatenate([b[0] for b in batch])
            c = np.concatenate([b[1] for b in batch])
            parents = None if len(batch[0]) < 3 else np.concatenate([b[2] for b in batch])
            db.append(cells, source=source, parent=parents, iteration=iteration, stiffness=c, build_state=state)
            display.update(db)
        batch, last = [], time.monotonic()

    for future in futures:
        if out_of_time():
            for f in futures:
                f.cancel()
            break
        batch.append(future.result())
        if sum(len(b[0]) for b in batch) >= commit_cells or time.monotonic() - last > commit_seconds:
            commit()
    commit()


class _Display:
    """Live progress: cells, rate, coverage, phase (rich), or nothing."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total = enabled, total
        self.phase = ""

    def __enter__(self):
        self.t0 = time.monotonic()
        self.n0 = None
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TextColumn("{task.fields[info]}"))
            self.bar.__enter__()
            self.task = self.bar.add_task("build", total=self.total, info="")
        return self

    def update(self, db: Database, phase: str | None = None):
        from .perturb import coverage

        if phase is not None:
            self.phase = phase
        if self.n0 is None:
            self.n0 = len(db)
        if not self.enabled:
            return
        rate = (len(db) - self.n0) / max(time.monotonic() - self.t0, 1e-9)
        cov = coverage(db.properties, *_box(db.properties)) if len(db) > 1 else 0
        self.bar.update(self.task, completed=min(len(db), self.total), description=self.phase,
                        info=f"{rate:6.1f} cells/s  coverage {cov} bins")

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.__exit__(*exc)
        return False


def _box(properties: np.ndarray):
    return properties.min(axis=0), properties.max(axis=0)
