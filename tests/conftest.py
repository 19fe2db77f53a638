import numpy as np
import pytest


def mirror(quarter: np.ndarray) -> np.ndarray:
    """Doubly mirror-symmetric cells (N, 2a, 2b) from quarters (N, a, b)."""
    half = np.concatenate([quarter, quarter[:, ::-1]], axis=1)
    return np.concatenate([half, half[:, :, ::-1]], axis=2)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def symmetric_cells(rng):
    return mirror(rng.random((6, 25, 25)) < 0.6)
