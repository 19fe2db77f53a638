"""The background compilation of the numba kernels (`metasys.compilation`)."""

import numpy as np

from metasys import compilation
from metasys.fem.homogenization import boundary_tractions


def test_start_and_wait_leave_every_kernel_cached_and_results_unchanged():
    cells = np.zeros((9, 6, 6), dtype=bool)
    cells[:, 1:5, :] = True
    before = boundary_tractions(cells)
    compilation.start()
    compilation.wait()
    assert compilation.cached()
    assert compilation._PROCESS is None
    compilation.start()  # everything cached: no process
    assert compilation._PROCESS is None
    after = boundary_tractions(cells)
    for edge in before:
        np.testing.assert_array_equal(before[edge], after[edge])


def test_a_horizontal_bar_carries_uniaxial_traction_only_on_its_ends():
    # The warm-up problem itself: a full-width bar (rows 1-4 of 6) under unit strain e11 is in uniaxial stress:
    # zero traction on the top and bottom edges (void there), the same traction on the left and right edges.
    cells = np.zeros((1, 6, 6), dtype=bool)
    cells[:, 1:5, :] = True
    t = boundary_tractions(cells)
    assert np.allclose(t["top"][0, 0], 0.0, atol=1e-6) and np.allclose(t["bottom"][0, 0], 0.0, atol=1e-6)
    np.testing.assert_allclose(t["left"][0, 0], -t["right"][0, 0], atol=1e-9)
