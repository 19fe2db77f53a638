"""Candidates chosen by what the full-scale RRMSE is sensitive to.

The candidate stage ranks database cells by ``||p - p_target||_inf``, but the RRMSE is far more sensitive to
some property combinations than to others: on a block squeezed so that its edges bulge (Poisson effect), the
bulge follows C12 / C22 of the interior cells, and cells within 0.03 of their targets in every component left
the full-scale RRMSE at 0.21 (the macro model of those cells' own properties: 0.22). `sensitive_candidates`
adds cells chosen in the metric of the RRMSE itself:

1. Linearize the target displacements of the discrepancy-corrected macro model (`metasys.pipeline.relabel`)
   around the chosen cells' own properties: ``r + S dp`` with ``S`` (T, H W 4) from T adjoint solves.
2. One damped Gauss-Newton step over all elements together (minimum-norm, in relative property units) gives
   new per-element targets ``q``.
3. Per element, the database cells nearest to ``q_e`` in the metric ``S_e^T S_e`` (plus a small ridge, so that
   directions the RRMSE does not see stay near ``q_e`` too) join its candidate list.
4. Every candidate's distance to ``q_e`` in that metric, ``||S_e (p - q_e)|| / ||u_t||`` (RRMSE units), is a
   unary cost for an assembly MRF that weighs accuracy as the RRMSE does (`metasys.pipeline.run` solves it with
   the compatibility costs to propose labels for the relabel search).

If every element of that block took its nearest cell to ``q`` (compatibility ignored), the corrected macro
model predicts 0.061 instead of 0.214.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidValueError

RIDGE = 0.05
"""Ridge of the per-element metric, relative to its mean eigenvalue (in relative property units)."""
MAX_RELATIVE_STEP = 0.5
"""Largest change of log-property a Gauss-Newton step asks of one element (a factor of 1.65)."""


def gauss_newton_targets(problem, properties, shift=None, damping: float = 1e-3):
    """New per-element property targets from one damped Gauss-Newton step on the corrected macro RRMSE.

    Parameters
    ----------
    problem : Problem
    properties : array (H, W, 4)
        The chosen cells' own properties.
    shift : array (T,), optional
        Full-scale minus macro displacement at ``problem.target_dofs`` (default 0).
    damping : float
        Levenberg damping relative to the mean eigenvalue of ``S S^T``.

    Returns
    -------
    targets : array (H, W, 4)
    sensitivity : array (H, W, T, 4)
        ``d u[target_dofs] / d p`` of each element.
    scale : array (H, W, 4)
        The relative units of the step (``|p|``, floored for C12 near zero).
    """
    from ..fem.macro import MacroModel

    p = np.asarray(properties, dtype=float)
    h, w = problem.height, problem.width
    model = MacroModel(w, h, problem.conditions)
    dofs, target = problem.target_dofs, problem.target_values
    lu, u = model._factorize(p)
    free_of = np.full(model.n_dofs, -1)
    free_of[model.free] = np.arange(len(model.free))
    unit = np.zeros((len(model.free), len(dofs)))
    rows = free_of[dofs]
    unit[rows[rows >= 0], np.flatnonzero(rows >= 0)] = 1.0
    green = np.zeros((len(dofs), model.n_dofs))
    green[:, model.free] = lu.solve(unit).T  # K is symmetric: rows of K^-1 at the target dofs
    bu = np.einsum("qab,hwb->hwqa", model.basis, u[model.element_dofs])  # (H, W, 4, 8)
    sens = -np.einsum("thwa,hwqa->hwtq", green[:, model.element_dofs], bu)  # (H, W, T, 4)
    residual = u[dofs] - target + (0.0 if shift is None else np.asarray(shift, dtype=float))
    scale = np.abs(p)
    scale[..., 1] = np.maximum(scale[..., 1], 0.1 * np.sqrt(p[..., 0] * p[..., 2]))
    a = (sens * scale[:, :, None, :]).transpose(2, 0, 1, 3).reshape(len(dofs), -1)  # (T, H W 4)
    gram = a @ a.T
    lam = damping * np.trace(gram) / len(dofs)
    step = -(a.T @ np.linalg.solve(gram + lam * np.eye(len(dofs)), residual)).reshape(h, w, 4)
    step = np.clip(step, -MAX_RELATIVE_STEP, MAX_RELATIVE_STEP)
    return p + scale * step, sens, scale


def sensitive_candidates(problem, candidates, labels, database, codes, *, shift=None, per_element: int = 8,
                         chunk: int = 32):
    """``candidates`` with ``per_element`` more database cells per element, chosen in the RRMSE's metric.

    Parameters
    ----------
    problem : Problem
    candidates : Candidates
        Database-mode candidates (H, W, L); the new cells come after the L old ones, so labels stay valid.
    labels : int array (H, W)
        The current design.
    database : Database
    codes : array (N, d)
        Latent codes of the database (the new candidates' ``z``).
    shift : array (T,), optional
        Full-scale minus macro displacement of the current design at the target dofs.
    per_element : int
        Cells added per element (those already in its list are skipped).

    Returns
    -------
    candidates : Candidates
        (H, W, L + per_element).
    unary : array (H W, L + per_element)
        ``||S_e (p - q_e)|| / ||u_t||`` of every candidate (RRMSE units).
    """
    from ..selection.candidates import Candidates, _read_cells

    if per_element < 1:
        raise InvalidValueError(f"per_element: expected an integer >= 1, got {per_element!r}")
    h, w = problem.height, problem.width
    chosen = np.take_along_axis(np.asarray(candidates.properties), labels[:, :, None, None], axis=2)[:, :, 0]
    targets, sens, scale = gauss_newton_targets(problem, chosen, shift)
    metric = np.einsum("hwtq,hwtr->hwqr", sens, sens) * scale[..., :, None] * scale[..., None, :]
    ridge = RIDGE * np.trace(metric, axis1=-2, axis2=-1)[..., None, None] / 4 * np.eye(4)
    metric = (metric + ridge) / (scale[..., :, None] * scale[..., None, :])  # back to property units
    props = np.asarray(database.properties, dtype=float)
    flat_t, flat_m = targets.reshape(-1, 4), metric.reshape(-1, 4, 4)
    old = np.asarray(candidates.indices).reshape(h * w, -1)
    new = np.empty((h * w, per_element), dtype=np.int64)
    for start in range(0, h * w, chunk):
        part = slice(start, start + chunk)
        diff = props[None, :, :] - flat_t[part, None, :]  # (c, N, 4)
        dist = np.einsum("cnq,cqr,cnr->cn", diff, flat_m[part], diff)
        np.put_along_axis(dist, np.maximum(old[part], 0), np.inf, axis=1)
        near = np.argpartition(dist, per_element, axis=1)[:, :per_element]
        new[part] = np.take_along_axis(near, np.argsort(np.take_along_axis(dist, near, axis=1), axis=1), axis=1)
    new = new.reshape(h, w, per_element)
    cells = _read_cells(database, new.ravel()).reshape(h, w, per_element, *database.resolution)
    new_props = props[new]
    errors = np.abs(new_props - np.asarray(candidates.targets)[:, :, None, :]).max(axis=-1)
    every = np.concatenate([candidates.properties, new_props], axis=2) - targets[:, :, None, :]
    unary = np.sqrt(np.einsum("hwlq,hwqr,hwlr->hwl", every, metric, every)) / np.linalg.norm(problem.target_values)
    widened = Candidates(indices=np.concatenate([candidates.indices, new], axis=-1),
                      cells=np.concatenate([candidates.cells, cells], axis=2),
                      properties=np.concatenate([candidates.properties, new_props], axis=2),
                      errors=np.concatenate([candidates.errors, errors], axis=-1),
                      covered=candidates.covered, targets=candidates.targets,
                      z=np.concatenate([candidates.z, np.asarray(codes, np.float32)[new]], axis=2),
                      n_within=candidates.n_within, tolerance=candidates.tolerance, method=candidates.method)
    return widened, unary.reshape(h * w, -1)
