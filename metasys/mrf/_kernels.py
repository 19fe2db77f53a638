"""Numba kernels of the dual-decomposition solver (one call per iteration, all chains at once).

Layout shared by all kernels: the chains are stored flat. Chain ``c`` owns the copies
``chain_ptr[c] .. chain_ptr[c + 1] - 1``; copy ``k`` is a copy of node ``copy_node[k]``; the link
from copy ``k`` to copy ``k + 1`` of the same chain is edge ``link_edge[k]`` (read transposed when
``link_flip[k]``, i.e. when the chain runs from the edge's second node to its first).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def _forward(k0, k1, theta, pairwise, link_edge, link_flip, msg, back):
    """Forward min-sum messages of the chain of copies k0 .. k1 - 1 (msg, back rows k0 .. k1 - 1)."""
    n_labels = theta.shape[1]
    for b in range(n_labels):
        msg[k0, b] = theta[k0, b]
    for k in range(k0 + 1, k1):
        e = link_edge[k - 1]
        flip = link_flip[k - 1]
        for b in range(n_labels):
            best = np.inf
            arg = 0
            for a in range(n_labels):
                if flip:
                    val = msg[k - 1, a] + pairwise[e, b, a]
                else:
                    val = msg[k - 1, a] + pairwise[e, a, b]
                if val < best:
                    best = val
                    arg = a
            msg[k, b] = best + theta[k, b]
            back[k, b] = arg


@numba.njit(cache=True)
def viterbi_chains(theta, pairwise, chain_ptr, link_edge, link_flip, labels, values, msg, back):
    """Exact min-sum DP on every chain; writes the argmin labels per copy and the minimum per chain.

    theta (K, L) copy costs; msg (K, L) float and back (K, L) int are workspaces.
    """
    n_chains = chain_ptr.shape[0] - 1
    n_labels = theta.shape[1]
    for c in range(n_chains):
        k0 = chain_ptr[c]
        k1 = chain_ptr[c + 1]
        _forward(k0, k1, theta, pairwise, link_edge, link_flip, msg, back)
        best = np.inf
        arg = 0
        for b in range(n_labels):
            if msg[k1 - 1, b] < best:
                best = msg[k1 - 1, b]
                arg = b
        values[c] = best
        labels[k1 - 1] = arg
        for k in range(k1 - 1, k0, -1):
            labels[k - 1] = back[k, labels[k]]


@numba.njit(cache=True)
def subgradient(labels, copy_node, n_copies, counts, g):
    """Projected supergradient g (K, L) = onehot(copy label) - mean over the node's copies; returns ||g||^2."""
    counts[:, :] = 0.0
    for k in range(labels.shape[0]):
        counts[copy_node[k], labels[k]] += 1.0
    norm2 = 0.0
    n_labels = g.shape[1]
    for k in range(labels.shape[0]):
        i = copy_node[k]
        inv = 1.0 / n_copies[i]
        for a in range(n_labels):
            v = -counts[i, a] * inv
            if a == labels[k]:
                v += 1.0
            g[k, a] = v
            norm2 += v * v
    return norm2


@numba.njit(cache=True)
def energy(labels, unary, pairwise, eu, ev):
    """Total cost of a labelling."""
    total = 0.0
    for i in range(unary.shape[0]):
        total += unary[i, labels[i]]
    for e in range(eu.shape[0]):
        total += pairwise[e, labels[eu[e]], labels[ev[e]]]
    return total


@numba.njit(cache=True)
def chain_descent(x, unary, pairwise, eu, ev, adj_ptr, adj_edge, chain_ptr, copy_node, link_edge, link_flip,
                  msg, back, cond, new, sweeps):
    """Block coordinate descent on a labelling x (n,) in place: each chain in turn is re-solved with all
    other nodes fixed (a chain-wise ICM); returns the sweeps done. new (K,) int is a workspace.

    A chain's conditional cost counts every edge at a chain node that is not one of the chain's links
    against the current label of its other end. When no edge joins two nodes of the same chain other
    than its links (the rows and columns of a grid, every ``chains="difference"`` decomposition of a
    grid), that is the exact energy change, a move is taken only if it strictly lowers it, and the
    energy never increases. A chord (an edge between two nodes of one chain that another chain
    covers, common in the greedy path covers of general graphs) is counted twice against the old
    labels, so a move that changes both of its ends can RAISE the energy: the descent is then not
    monotone. Callers compare energies and keep the best labelling seen (`solve_mrf` does).
    """
    n_chains = chain_ptr.shape[0] - 1
    n_labels = unary.shape[1]
    for sweep in range(sweeps):
        changed = False
        for c in range(n_chains):
            k0 = chain_ptr[c]
            k1 = chain_ptr[c + 1]
            # conditional unary: own cost + every incident edge that is not a link of this chain
            for k in range(k0, k1):
                i = copy_node[k]
                prev_e = link_edge[k - 1] if k > k0 else -1
                next_e = link_edge[k] if k < k1 - 1 else -1
                for a in range(n_labels):
                    cond[k, a] = unary[i, a]
                for p in range(adj_ptr[i], adj_ptr[i + 1]):
                    e = adj_edge[p]
                    if e == prev_e or e == next_e:
                        continue
                    if eu[e] == i:
                        j = x[ev[e]]
                        for a in range(n_labels):
                            cond[k, a] += pairwise[e, a, j]
                    else:
                        j = x[eu[e]]
                        for a in range(n_labels):
                            cond[k, a] += pairwise[e, j, a]
            _forward(k0, k1, cond, pairwise, link_edge, link_flip, msg, back)
            # keep the current labels on ties so the descent terminates
            cur = x[copy_node[k1 - 1]]
            best = msg[k1 - 1, cur]
            arg = cur
            for b in range(n_labels):
                if msg[k1 - 1, b] < best:
                    best = msg[k1 - 1, b]
                    arg = b
            new[k1 - 1] = arg
            for k in range(k1 - 1, k0, -1):
                new[k - 1] = back[k, new[k]]
            # accept only a strict improvement of the chain's conditional cost (ties keep x)
            old_cost = 0.0
            new_cost = 0.0
            for k in range(k0, k1):
                old_cost += cond[k, x[copy_node[k]]]
                new_cost += cond[k, new[k]]
                if k < k1 - 1:
                    e = link_edge[k]
                    if link_flip[k]:
                        old_cost += pairwise[e, x[copy_node[k + 1]], x[copy_node[k]]]
                        new_cost += pairwise[e, new[k + 1], new[k]]
                    else:
                        old_cost += pairwise[e, x[copy_node[k]], x[copy_node[k + 1]]]
                        new_cost += pairwise[e, new[k], new[k + 1]]
            if new_cost < old_cost - 1e-12 * (abs(old_cost) + 1.0):
                for k in range(k0, k1):
                    x[copy_node[k]] = new[k]
                changed = True
        if not changed:
            return sweep + 1
    return sweeps
