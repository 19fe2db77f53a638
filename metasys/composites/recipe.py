"""How the shipped material table is made: real materials from maintained packages, completed by a seeded recipe.

The paper's table (500 MatWeb materials, 168 non-empty chunks) is not public. metasys ships its own:

1. **Real materials** (`real_materials`): every entry with E, nu and rho inside the box from two
   maintained, permissively licensed packages: ``bd_materials`` (Apache-2.0; typical-value engineering
   materials: metals, plastics, resins, glass, wood; the midpoints of its E and nu ranges) and
   ``pymatgen-core`` (MIT; the elements' Young's modulus, Poisson's ratio and solid density in
   ``pymatgen/core/periodic_table.json.gz``). Identical (E, nu, rho) triples are kept once. The extract
   is shipped as ``databases/composites/real_materials.csv`` so that the table can be rebuilt without them.
2. **Synthetic completion** (`build_table`): a seeded pool of ``pool`` candidates drawn from broad
   material-family boxes (`FAMILIES`: elastomers, polymers, foams and woods, fibre composites, light
   and heavy alloys, ceramics and glasses, hard technical ceramics) stands in for the thousands of MatWeb entries.
3. **Chunk selection as the paper**: the chunks of the real materials are kept; the other chunks are
   ranked by how many pool candidates fall in them (most populated first, ties at random) and kept
   until ``n_chunks`` (168) chunks are non-empty; then every chunk is capped at the largest count ``c``
   with ``sum(min(n_k, c)) <= n_materials`` (the paper's per-chunk maximum), real materials first, and
   the last few places go to randomly chosen chunks that hold more than ``c``.
"""

from __future__ import annotations

import gzip
import json

import numpy as np

from ..errors import InvalidValueError
from .materials import MaterialTable, chunk_of, in_box, load_table

FAMILIES = (
    # name, weight, E range (GPa) and whether log-uniform, nu range, rho range (g/cm^3) and whether log-uniform
    ("elastomer", 0.12, (1e-3, 0.1, True), (0.45, 0.4999), (0.9, 2.0, False)),
    ("polymer", 0.18, (0.1, 12.0, True), (0.3, 0.45), (0.8, 2.3, False)),
    ("foam-wood", 0.08, (5e-3, 20.0, True), (0.05, 0.45), (0.03, 1.0, True)),
    ("composite", 0.12, (10.0, 250.0, False), (0.03, 0.4), (1.3, 2.6, False)),
    ("light-alloy", 0.14, (40.0, 320.0, False), (0.03, 0.4), (1.7, 4.8, False)),
    ("heavy-alloy", 0.22, (60.0, 300.0, False), (0.25, 0.45), (4.5, 9.99, False)),
    ("ceramic-glass", 0.10, (50.0, 480.0, False), (0.1, 0.32), (2.2, 6.5, False)),
    ("hard-ceramic", 0.08, (250.0, 470.0, False), (0.12, 0.28), (2.4, 4.0, False)),
)
"""Material families of the synthetic pool: (name, weight, E range, nu range, rho range)."""


def real_materials() -> MaterialTable:
    """Extract the in-box materials of ``bd_materials`` and ``pymatgen-core`` (both must be installed).

    Returns a table whose ``sources`` are ``bd_materials <version>`` / ``pymatgen-core <version>``.
    """
    import importlib
    import importlib.metadata as md
    import pkgutil

    rows = []
    try:
        import bd_materials.materials as bdm
    except ImportError as exc:
        raise InvalidValueError(f"real_materials: needs the package bd-materials ({exc})") from None
    bd_version = md.version("bd-materials")
    for info in pkgutil.iter_modules(bdm.__path__):
        module = importlib.import_module(f"bd_materials.materials.{info.name}")
        for key, catalogue in sorted(vars(module).items()):
            if not (key.endswith("_MATERIALS") and isinstance(catalogue, dict)):
                continue
            for m in catalogue.values():
                e, nu = getattr(m, "modulus_of_elasticity", None), getattr(m, "poisson_ratio", None)
                rho = getattr(m, "density", None)
                if e is None or nu is None or rho is None:
                    continue
                rows.append((m.name, f"bd_materials {bd_version}", (e.min + e.max) / 2, (nu.min + nu.max) / 2, rho / 1000.0))
    try:
        dist = md.distribution("pymatgen-core")
    except md.PackageNotFoundError:
        raise InvalidValueError("real_materials: needs the package pymatgen-core") from None
    with gzip.open(dist.locate_file("pymatgen/core/periodic_table.json.gz")) as fh:
        elements = json.load(fh)
    for symbol, data in sorted(elements.items()):
        e, nu, rho = data.get("Youngs modulus"), data.get("Poissons ratio"), data.get("Density of solid")
        if isinstance(e, (int, float)) and isinstance(nu, (int, float)) and isinstance(rho, (int, float)):
            rows.append((f"element {symbol}", f"pymatgen-core {dist.version}", float(e), float(nu), rho / 1000.0))
    values = np.array([r[2:] for r in rows], dtype=float)
    keep = in_box(values)
    _, first = np.unique(values, axis=0, return_index=True)
    keep &= np.isin(np.arange(len(rows)), first)
    sel = np.flatnonzero(keep)
    return MaterialTable(values[sel], [rows[i][0] for i in sel], [rows[i][1] for i in sel],
                         {"what": "in-box materials of bd_materials and pymatgen-core (E GPa, nu, rho g/cm^3)"})


def _draw_pool(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3) synthetic candidates and (n,) family indices from `FAMILIES`."""
    weights = np.array([f[1] for f in FAMILIES])
    fam = rng.choice(len(FAMILIES), size=n, p=weights / weights.sum())
    out = np.empty((n, 3))
    u = rng.random((n, 3))
    for k, (_, _, (e0, e1, e_log), (n0, n1), (r0, r1, r_log)) in enumerate(FAMILIES):
        m = fam == k
        out[m, 0] = np.exp(np.log(e0) + u[m, 0] * np.log(e1 / e0)) if e_log else e0 + u[m, 0] * (e1 - e0)
        out[m, 1] = n0 + u[m, 1] * (n1 - n0)
        out[m, 2] = np.exp(np.log(r0) + u[m, 2] * np.log(r1 / r0)) if r_log else r0 + u[m, 2] * (r1 - r0)
    return out, fam


def build_table(seed: int = 0, real: MaterialTable | None = None, *, n_materials: int = 500, n_chunks: int = 168,
                pool: int = 8000, command: str = "") -> MaterialTable:
    """Build the material table: real materials completed by the seeded recipe (module docstring).

    Parameters
    ----------
    seed : int
        Seed of the synthetic pool and of the subsampling.
    real : MaterialTable, optional
        The real materials (default: the shipped ``real_materials.csv`` extract).
    n_materials, n_chunks, pool : int, keyword-only
        Table size (500), non-empty chunks (168) and synthetic pool size (8000).

    Returns
    -------
    MaterialTable with exactly ``n_materials`` materials in exactly ``n_chunks`` chunks.
    """
    from .materials import default_table_path

    if real is None:
        real = load_table(default_table_path().with_name("real_materials.csv"))
    rng = np.random.default_rng(seed)
    synth, fam = _draw_pool(rng, int(pool))
    values = np.concatenate([real.values, synth])
    names = list(real.names) + [f"synthetic {FAMILIES[f][0]} {i}" for i, f in enumerate(fam)]
    sources = list(real.sources) + [f"recipe seed {seed}"] * len(synth)
    is_real = np.arange(len(values)) < len(real)
    chunk = chunk_of(values)
    real_chunks = np.unique(chunk[is_real])
    if len(real_chunks) > n_chunks:
        raise InvalidValueError(f"n_chunks: the real materials alone occupy {len(real_chunks)} chunks, more than {n_chunks}")
    ids, counts = np.unique(chunk[~is_real], return_counts=True)
    others = ~np.isin(ids, real_chunks)
    ids, counts = ids[others], counts[others]
    order = np.lexsort((rng.random(len(ids)), -counts))  # most populated first, ties at random
    kept = np.concatenate([real_chunks, ids[order][: n_chunks - len(real_chunks)]])
    if len(kept) < n_chunks:
        raise InvalidValueError(f"pool: {pool} candidates reach only {len(kept)} chunks, fewer than n_chunks = {n_chunks}")
    # candidates per kept chunk: real first, then the synthetic ones in random order
    cand = np.flatnonzero(np.isin(chunk, kept))
    cand = cand[np.lexsort((rng.random(len(cand)), ~is_real[cand], chunk[cand]))]
    per_chunk = {c: cand[chunk[cand] == c] for c in kept}
    sizes = np.array([len(per_chunk[c]) for c in kept])
    if sizes.sum() < n_materials:
        raise InvalidValueError(f"pool: {pool} candidates give only {sizes.sum()} materials in the kept chunks")
    cap = max(c for c in range(1, sizes.max() + 1) if np.minimum(sizes, c).sum() <= n_materials)
    take = np.minimum(sizes, cap)
    extra = n_materials - take.sum()
    if extra:
        take[rng.choice(np.flatnonzero(sizes > cap), size=extra, replace=False)] += 1
    chosen = np.sort(np.concatenate([per_chunk[c][:t] for c, t in zip(kept, take)]))
    meta = {"what": "metasys composite material table (E GPa, nu, rho g/cm^3)", "seed": seed, "command": command,
            "recipe": f"metasys.composites.recipe.build_table(n_materials={n_materials}, n_chunks={n_chunks}, pool={pool})",
            "real": f"{int(is_real[chosen].sum())} materials from {sorted(set(real.sources))}",
            "per_chunk_cap": cap}
    return MaterialTable(values[chosen], [names[i] for i in chosen], [sources[i] for i in chosen], meta)
