"""Compiling metasys's numba kernels in a background process before their first use.

numba compiles a kernel at its first call and keeps the machine code on disk (``cache=True``), so only the
first run after an install pays for it: about 33 s on a 2-core machine for the multifrontal solver of the cell
homogenization (30 s) and the MRF kernels (3 s), which `metasys.design` first needs after its macro and
candidate stages (about 23 s into a bridge design; they leave the second core idle). `start` compiles them in
a separate process meanwhile; `metasys.design` calls `wait` before its first use of a kernel, after which numba
loads the code from the disk cache instead of compiling it a second time. Once the cache holds every kernel
`start` does nothing. On a fresh install the bridge design took 134 s without it, 110 s with it (98 s with
the cache full; idle 2-core machine).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_PROCESS = None


def _dispatchers() -> list:
    from .fem import multifrontal
    from .mrf import _kernels

    return [multifrontal._solve_groups, multifrontal._solve_strided, _kernels.viterbi_chains, _kernels.chain_descent,
            _kernels.subgradient, _kernels.energy]


def cached() -> bool:
    """Whether numba's disk cache holds an index for every kernel (False when that cannot be told)."""
    try:
        return all(os.path.exists(d._cache._cache_file._index_path) for d in _dispatchers())
    except AttributeError:  # numba's cache internals moved: assume nothing is cached
        return False


def compile_kernels() -> None:
    """Compile (or load) every kernel by calling it on a tiny problem."""
    import numpy as np

    from .fem.homogenization import boundary_tractions
    from .mrf import solve_mrf

    # Nine cells: a group of eight for the SIMD kernel, one for the single-cell kernel.
    cells = np.zeros((9, 6, 6), dtype=bool)
    cells[:, 1:5, :] = True
    boundary_tractions(cells)
    rng = np.random.default_rng(0)
    solve_mrf(rng.random((4, 2)), np.array([[0, 1], [2, 3], [0, 2], [1, 3]]), rng.random((4, 2, 2)))


def start() -> None:
    """Compile the kernels in a background process, unless they are cached or a process already does."""
    global _PROCESS
    if _PROCESS is not None or cached():
        return
    # run from the directory holding this very package: from elsewhere (e.g. a source checkout next to an installed
    # copy) ``-m`` could import another copy and fill the cache of that one
    _PROCESS = subprocess.Popen([sys.executable, "-m", __name__], cwd=Path(__file__).resolve().parents[1],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait() -> None:
    """Wait for the process `start` began (no-op without one)."""
    global _PROCESS
    if _PROCESS is not None:
        _PROCESS.wait()
        _PROCESS = None


if __name__ == "__main__":
    compile_kernels()
