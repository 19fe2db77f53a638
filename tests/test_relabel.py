"""Label search on the corrected macro model (metasys.pipeline.relabel): the Woodbury swap values against direct
macro solves, local optimality, the discrepancy shift, the compatibility weight and bad input."""

import numpy as np
import pytest
from test_design import small_arch

from metasys.errors import InvalidValueError
from metasys.fem.macro import MacroModel
from metasys.pipeline.relabel import relabel


@pytest.fixture(scope="module")
def instance():
    """A 4 x 2 arch with 5 random positive definite candidates per element and random edge costs."""
    problem = small_arch()
    h, w, n_labels = problem.height, problem.width, 5
    rng = np.random.default_rng(3)
    c11 = rng.uniform(0.05, 0.6, (h, w, n_labels))
    c22 = rng.uniform(0.05, 0.6, (h, w, n_labels))
    c12 = rng.uniform(0.0, 0.5, (h, w, n_labels)) * np.sqrt(c11 * c22)
    c33 = rng.uniform(0.01, 0.2, (h, w, n_labels))
    props = np.stack([c11, c12, c22, c33], axis=-1)
    nodes = np.arange(h * w).reshape(h, w)
    edges = np.concatenate([np.stack([nodes[:, :-1].ravel(), nodes[:, 1:].ravel()], 1),
                            np.stack([nodes[:-1].ravel(), nodes[1:].ravel()], 1)])
    pairwise = rng.uniform(0, 1, (len(edges), n_labels, n_labels))
    labels = rng.integers(0, n_labels, (h, w))
    return problem, props, labels, edges, pairwise


def _objective(problem, props, labels, shift, edges=None, pairwise=None, weight=0.0):
    chosen = np.take_along_axis(props, labels[:, :, None, None], axis=2)[:, :, 0]
    u = MacroModel(problem.width, problem.height, problem.conditions).solve(chosen).vector
    value = np.linalg.norm(u[problem.target_dofs] + shift - problem.target_values) / np.linalg.norm(problem.target_values)
    if weight:
        x = labels.ravel()
        value += weight * pairwise[np.arange(len(edges)), x[edges[:, 0]], x[edges[:, 1]]].sum()
    return value


def test_result_is_a_local_optimum_of_the_direct_objective(instance):
    """No single relabelling, each evaluated by a direct macro solve, beats the result; its prediction is exact."""
    problem, props, labels, edges, pairwise = instance
    shift = np.random.default_rng(1).normal(scale=0.02, size=len(problem.target_dofs))
    full = np.zeros((problem.height + 1, problem.width + 1, 2))
    chosen = np.take_along_axis(props, labels[:, :, None, None], axis=2)[:, :, 0]
    u = MacroModel(problem.width, problem.height, problem.conditions).solve(chosen).vector
    full.reshape(-1)[problem.target_dofs] = u[problem.target_dofs] + shift  # a "full-scale" response with that shift
    for weight in (0.0, 0.01):
        out = relabel(problem, props, labels, pairwise, edges, full_displacement=full, compatibility_weight=weight)
        assert out.start == pytest.approx(_objective(problem, props, labels, shift), rel=1e-12)
        assert out.predicted == pytest.approx(_objective(problem, props, out.labels, shift), rel=1e-9)
        best = _objective(problem, props, out.labels, shift, edges, pairwise, weight)
        assert best < _objective(problem, props, labels, shift, edges, pairwise, weight)
        for j in range(problem.height):
            for i in range(problem.width):
                for label in range(props.shape[2]):
                    trial = out.labels.copy()
                    trial[j, i] = label
                    assert _objective(problem, props, trial, shift, edges, pairwise, weight) >= best - 1e-9


def test_heavy_compatibility_weight_bounds_the_edge_energy(instance):
    """Each kept swap lowers J + w E, and J >= 0, so E(result) <= E(start) + J(start) / w."""
    problem, props, labels, edges, pairwise = instance

    def energy(x):
        x = x.ravel()
        return pairwise[np.arange(len(edges)), x[edges[:, 0]], x[edges[:, 1]]].sum()

    weight = 10.0
    out = relabel(problem, props, labels, pairwise, edges, compatibility_weight=weight)
    assert out.predicted + weight * energy(out.labels) < out.start + weight * energy(labels)
    assert energy(out.labels) <= energy(labels) + out.start / weight


def test_bad_input(instance):
    problem, props, labels, edges, pairwise = instance
    with pytest.raises(InvalidValueError, match="properties"):
        relabel(problem, props[:, :-1], labels, pairwise, edges)
    with pytest.raises(InvalidValueError, match="labels"):
        relabel(problem, props, labels + props.shape[2], pairwise, edges)
    with pytest.raises(InvalidValueError, match="compatibility_weight"):
        relabel(problem, props, labels, pairwise, edges, compatibility_weight=-1.0)


def test_group_moves_leave_no_better_group_move(instance):
    """With cell identities, the result admits no group move (every element showing one cell moved to another cell
    of its list) that lowers J + w E, and J + w E never rises."""
    problem, props, labels, edges, pairwise = instance
    h, w, n_labels = props.shape[:3]
    ids = np.tile(np.arange(n_labels), (h, w, 1))  # the same cells in every list: label l is cell l everywhere
    shared = np.broadcast_to(props[:1, :1], props.shape).copy()
    start = np.zeros((h, w), dtype=int)
    weight = 0.001
    out = relabel(problem, shared, start, pairwise, edges, compatibility_weight=weight, identities=ids)
    best = _objective(problem, shared, out.labels, 0.0, edges, pairwise, weight)
    assert best <= _objective(problem, shared, start, 0.0, edges, pairwise, weight)
    current = out.labels
    for cell in np.unique(current):
        for other in range(n_labels):
            trial = np.where(current == cell, other, current)
            assert _objective(problem, shared, trial, 0.0, edges, pairwise, weight) >= best - 1e-12


def test_gauss_newton_sensitivity_matches_finite_differences():
    """d u[target dofs] / d p of `gauss_newton_targets` against central differences of macro solves, and the
    step lowers the linearized residual."""
    from metasys.pipeline.sensitivity import gauss_newton_targets

    problem = small_arch()
    h, w = problem.height, problem.width
    rng = np.random.default_rng(5)
    p = np.stack([rng.uniform(0.2, 0.6, (h, w)), rng.uniform(0.0, 0.1, (h, w)), rng.uniform(0.2, 0.6, (h, w)),
                  rng.uniform(0.05, 0.2, (h, w))], axis=-1)
    targets, sens, _ = gauss_newton_targets(problem, p)
    model = MacroModel(w, h, problem.conditions)
    dofs = problem.target_dofs
    for (j, i, q) in [(0, 0, 0), (1, 2, 1), (0, 3, 2), (1, 1, 3)]:
        step = 1e-6
        plus, minus = p.copy(), p.copy()
        plus[j, i, q] += step
        minus[j, i, q] -= step
        fd = (model.solve(plus).vector[dofs] - model.solve(minus).vector[dofs]) / (2 * step)
        np.testing.assert_allclose(sens[j, i, :, q], fd, rtol=1e-6, atol=1e-9)
    residual = model.solve(p).vector[dofs] - problem.target_values
    linear = residual + np.einsum("hwtq,hwq->t", sens, targets - p)
    assert np.linalg.norm(linear) < np.linalg.norm(residual)
