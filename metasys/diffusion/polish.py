"""Discrete polish of binary cells toward a stiffness loss: greedy pixel flips, checked by exact homogenization.

Thresholding the optimized grayscale design (the gamma -> infinity limit of the projection) moves the
stiffness: with the paper's stages a binary cell can miss a target that its relaxed design met (paper
targets, shipped weights: relaxed loss 0.007, binary 0.37). The polish works on the binary cell itself.
Each step ranks the pixels on the phase boundary by the first-order change of the loss that flipping them
would cause (adjoint sensitivity ``dC/dE_e = u_e^T k0 u_e``, times the jump in modulus, contracted with
``dloss/dC``), homogenizes the ``width`` best-ranked flipped cells exactly, and keeps the best one if it
lowers the loss. It stops at ``loss < tol``, when no ranked flip helps, or after ``max_flips`` flips.

Flips are whole mirror orbits (4 pixels) for doubly symmetric cells, so symmetric cells stay symmetric;
with ``keep_valid`` a flip may not break a validity criterion that the cell met
(`metasys.database.repair.validity_report`: connected tiling, solid on every edge, no isolated pixels or
checkerboards).
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np

from ..material import Material


@lru_cache(maxsize=16)
def _loss_functions(loss_fn):
    """Jitted batched ``(C (m, 3, 3), targets (m, 3, 3)) -> (losses (m,), dloss/dC (m, 3, 3))``."""
    import jax

    return jax.jit(jax.vmap(jax.value_and_grad(loss_fn)))


def _boundary(cells: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour (periodic) of the other phase (n, ny, nx)."""
    out = np.zeros_like(cells)
    for axis in (1, 2):
        for shift in (1, -1):
            out |= np.roll(cells, shift, axis=axis) != cells
    return out


def _orbit_sum(a: np.ndarray) -> np.ndarray:
    """Sum over the four mirror images (n, ny, nx) -> (n, ny, nx)."""
    return a + a[:, ::-1, :] + a[:, :, ::-1] + a[:, ::-1, ::-1]


def _flip(out: np.ndarray, rows: np.ndarray, cols: np.ndarray, symmetric: np.ndarray) -> None:
    """Flip pixel (rows[k], cols[k]) of ``out[k]`` in place, with its mirror orbit where ``symmetric[k]``."""
    ny, nx = out.shape[1:]
    k = np.arange(len(out))
    out[k, rows, cols] ^= True
    for r, c in ((ny - 1 - rows, cols), (rows, nx - 1 - cols), (ny - 1 - rows, nx - 1 - cols)):
        out[k[symmetric], r[symmetric], c[symmetric]] ^= True


def _best_pairs(tried, c, target, evaluate, w):
    """(first pixels, second pixels) of the ``w`` pairs of evaluated single flips predicted best.

    The stiffness change of a pair is predicted as the sum of the two exact single-flip changes.
    """
    pix, cs = np.asarray(tried[0], int), np.asarray(tried[1], float).reshape(-1, 3, 3)
    iu, ju = np.triu_indices(len(pix), 1)
    keep = pix[iu] != pix[ju]
    iu, ju = iu[keep], ju[keep]
    if not len(iu):
        return iu, ju
    pred = evaluate(cs[iu] + cs[ju] - c, np.broadcast_to(target, (len(iu), 3, 3)))[0]
    top = np.argsort(pred, kind="stable")[:w]
    return pix[iu[top]], pix[ju[top]]


def polish_cells(cells, targets, loss_fn, material: Material = Material(), *, max_flips: int = 100, width: int = 24,
                 patience: int = 3, tol: float = 0.0, keep_valid: bool | None = None):
    """Greedy descent of ``loss_fn(C, target)`` by single and paired pixel flips of binary cells, batched over cells.

    Parameters
    ----------
    cells : bool (n, ny, nx)        binary cells (1 = phase of modulus ``material.E``)
    targets : (n, 3, 3)             second argument of ``loss_fn`` per cell
    loss_fn : JAX function ``(C (3, 3), target (3, 3)) -> scalar``, differentiable in ``C``
    material : homogenization material (its ``penal`` is irrelevant: the cells are binary)
    max_flips : most flips per cell (0 returns the cells unchanged)
    width : flipped cells homogenized per cell and step (the best-ranked candidates)
    patience : blocks of ``width`` ranked candidates tried after a step without a gain before the cell stops
        (None: all boundary pixels, which makes the result a local minimum over single flips but costs a
        full pass over the boundary, about 1,000 homogenizations for a non-symmetric 50x50 cell)
    tol : a cell stops once its loss is below ``tol``
    keep_valid : keep every validity criterion a cell meets; default True for an (almost) empty void phase
        (``material.E_void < 1e-3``: connectivity matters there), False for two-phase materials

    Returns
    -------
    (cells bool (n, ny, nx), stiffness (n, 3, 3), loss (n,), flips int (n,))
    """
    import jax.numpy as jnp

    from ..database.repair import validity_report
    from ..fem import homogenize
    from ..fem.differentiable import _forward
    from ..fem.homogenization import is_doubly_symmetric

    x = np.array(cells, dtype=bool, copy=True)
    n, ny, nx = x.shape
    targets = np.asarray(targets, dtype=np.float32)
    if keep_valid is None:
        keep_valid = material.E_void < 1e-3
    value_and_grad = _loss_functions(loss_fn)
    jump = material.E * (1.0 - material.E_void)
    unit = replace(material, penal=1.0)       # binary cells: the interpolation does not matter, the sensitivity does

    def evaluate(c, tg):
        m = len(c)
        size = 1 << max(m - 1, 0).bit_length()              # padded to a power of two: few compilations
        pad = ((0, size - m), (0, 0), (0, 0))
        f, g = value_and_grad(jnp.asarray(np.pad(c, pad), jnp.float32), jnp.asarray(np.pad(tg, pad)))
        return np.asarray(f, np.float64)[:m], np.asarray(g, np.float64)[:m]

    c, sens = _forward(unit.modulus(x.astype(float)), unit)
    f, g = evaluate(c, targets)
    symmetric = is_doubly_symmetric(x) if ny % 2 == 0 and nx % 2 == 0 else np.zeros(n, bool)
    flips = np.zeros(n, int)
    stage = np.zeros(n, int)              # blocks of ranked single flips tried since the last gain
    tried = {i: ([], []) for i in range(n)}   # per cell: single flips evaluated since the last gain, their C
    active = (f >= tol) & (max_flips > 0)
    if keep_valid:
        valid = np.stack(list(validity_report(x).values()), axis=1)
    quarter_mask = np.zeros((ny, nx), bool)
    quarter_mask[: ny // 2, : nx // 2] = True
    while active.any():
        idx = np.flatnonzero(active)
        # first-order change of the loss per pixel flip: sign of the modulus jump x dloss/dE_e
        dl = np.einsum("nkl,nyxkl->nyx", g[idx], sens[idx]) * np.where(x[idx], -jump, jump)
        cand = _boundary(x[idx])
        quarter = symmetric[idx]
        if quarter.any():
            dl[quarter] = _orbit_sum(dl[quarter])
            cand[quarter] &= quarter_mask
        score = np.where(cand, dl, np.inf).reshape(len(idx), -1)
        order = np.argsort(score, axis=1, kind="stable")
        n_cand = np.isfinite(score).sum(axis=1)
        w = min(width, score.shape[1])
        blocks = -(-n_cand // w)
        if patience is not None:
            blocks = np.minimum(blocks, patience + 1)
        # trials: a block of single flips, or (once the blocks are spent) pairs of the single flips evaluated
        # since the last gain, the w pairs whose summed stiffness changes predict the lowest loss
        single_pos = stage[idx, None] * w + np.arange(w)
        use_single = (stage[idx, None] < blocks[:, None]) & (single_pos < n_cand[:, None])
        rows = np.broadcast_to(np.arange(len(idx))[:, None], use_single.shape)[use_single]
        first = np.take_along_axis(order, np.minimum(single_pos, order.shape[1] - 1), 1)[use_single]
        second = np.full(len(first), -1)
        pairs = [(i, *_best_pairs(tried[i], c[i], targets[i], evaluate, w))
                 for i in idx[(stage[idx] == blocks) & (flips[idx] + 2 <= max_flips)]]
        owner = np.concatenate([idx[rows]] + [np.full(len(a), i) for i, a, _ in pairs]).astype(int)
        first = np.concatenate([first] + [a for _, a, _ in pairs]).astype(int)
        second = np.concatenate([second] + [b for _, _, b in pairs]).astype(int)
        trials = x[owner]
        _flip(trials, first // nx, first % nx, symmetric[owner])
        two = second >= 0
        sub = trials[two]
        _flip(sub, second[two] // nx, second[two] % nx, symmetric[owner[two]])
        trials[two] = sub
        ok = np.ones(len(trials), bool)
        if keep_valid and len(trials):
            rep = np.stack(list(validity_report(trials).values()), axis=1)
            ok = (rep | ~valid[owner]).all(axis=1)
        ft = np.full(len(trials), np.inf)
        ct_all = np.zeros((len(trials), 3, 3))
        if ok.any():
            ct_all[ok] = homogenize(trials[ok], unit).reshape(-1, 3, 3)
            ft[ok] = evaluate(ct_all[ok], targets[owner[ok]])[0]
        for i in np.unique(owner[ok & (second < 0)]):
            sel = ok & (second < 0) & (owner == i)
            tried[i][0].extend(first[sel])
            tried[i][1].extend(ct_all[sel])
        # best trial per cell
        by_owner = np.lexsort((ft, owner))
        best = by_owner[np.r_[True, owner[by_owner][1:] != owner[by_owner][:-1]]] if len(owner) else by_owner
        gain = ft[best] < f[owner[best]] - 1e-12 * np.abs(f[owner[best]])
        won, cells_won = best[gain], owner[best[gain]]
        # no gain: the next block (then the pairs, then stop)
        stage[idx] += 1
        active[idx] = stage[idx] <= blocks
        if len(won):
            stage[cells_won] = 0
            for i in cells_won:
                tried[i] = ([], [])
            x[cells_won] = trials[won]
            flips[cells_won] += np.where(two[won], 2, 1)
            c_new, s_new = _forward(unit.modulus(x[cells_won].astype(float)), unit)
            c[cells_won], sens[cells_won] = c_new, s_new
            f[cells_won], g[cells_won] = evaluate(c_new, targets[cells_won])
            if keep_valid:
                valid[cells_won] = np.stack(list(validity_report(x[cells_won]).values()), axis=1)
            active[cells_won] = (f[cells_won] >= tol) & (flips[cells_won] < max_flips)
    return x, homogenize(x, unit).reshape(n, 3, 3), f, flips
