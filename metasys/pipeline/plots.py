"""Plots of a design's result: target against achieved displacements along each target node set (the
quantity the RRMSE measures), the refinement history, and a readable magnification for deformed shapes.

Figures are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import math

import numpy as np

from ..plotting import pyplot, save_figure


def deformation_scale(displacement, problem, fraction: float = 0.25) -> float:
    """Magnification that draws the largest displacement at ``fraction`` of the grid's smaller side.

    Rounded down to 1, 2 or 5 times a power of ten and never below 1 (true scale); displacements of
    0.1 on a beam 4 cells tall are invisible at true scale.
    """
    u = np.asarray(displacement, dtype=float)
    largest = max(float(np.nanmax(np.abs(u), initial=0.0)), float(np.max(np.abs(problem.target_values))))
    if not largest > 0:
        return 1.0
    raw = fraction * min(problem.width, problem.height) / largest
    if raw <= 1:
        return 1.0
    exponent = 10.0 ** math.floor(math.log10(raw))
    return float(max(m * exponent for m in (1, 2, 5) if m * exponent <= raw))


def target_sets(problem) -> list[tuple[str, np.ndarray]]:
    """The target degrees of freedom grouped into node sets drawn as one curve each: [(label, indices (m,))].

    Targets of one component on one row of nodes (same y) form a set ordered by x; on one column (same x), by
    y; the rest form one set per component in file order.
    """
    nodes, comps = problem.target_nodes, problem.target_components
    groups, used = [], np.zeros(len(nodes), dtype=bool)
    for comp in (0, 1):
        for axis, other in ((1, 0), (0, 1)):  # rows of nodes (same y), then columns (same x)
            for value in np.unique(nodes[comps == comp, axis]):
                members = np.flatnonzero((comps == comp) & (nodes[:, axis] == value) & ~used)
                if len(members) >= 2:
                    members = members[np.argsort(nodes[members, other], kind="stable")]
                    name = "y" if axis == 1 else "x"
                    groups.append((f"u_{'xy'[comp]} at {name} = {value}", members))
                    used[members] = True
        rest = np.flatnonzero((comps == comp) & ~used)
        if len(rest):
            groups.append((f"u_{'xy'[comp]}, other nodes", rest))
            used[rest] = True
    return groups


def plot_target_profiles(problem, path, *, full=None, macro=None, macro_label: str = "macro model", title: str = "") -> None:
    """Target and achieved displacements along each target node set, one panel per set.

    Parameters
    ----------
    problem : Problem
    full, macro : array (H + 1, W + 1, 2), optional
        Full-scale and macro-model displacements at the macro nodes.
    macro_label : str
        Legend of the macro curve.
    """
    plt = pyplot()
    groups = target_sets(problem)
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 2.6 * len(groups)), squeeze=False)
    nodes = problem.target_nodes
    for ax, (label, members) in zip(axes[:, 0], groups):
        comp = int(problem.target_components[members[0]])
        varying = 0 if np.ptp(nodes[members, 0]) >= np.ptp(nodes[members, 1]) else 1
        s = nodes[members, varying] if len(members) > 1 else np.arange(len(members))
        ax.plot(s, problem.target_values[members], "o-", color="tab:red", ms=3, lw=1.2, label="target")
        for name, u, style in (("full scale", full, "s-"), (macro_label, macro, "--")):
            if u is None:
                continue
            values = np.asarray(u, dtype=float)[nodes[members, 1], nodes[members, 0], comp]
            r = np.linalg.norm(values - problem.target_values[members]) / max(np.linalg.norm(problem.target_values[members]),
                                                                                 1e-300)
            ax.plot(s, values, style, ms=2.5, lw=1.0, color="k" if name == "full scale" else "tab:blue",
                    label=f"{name} (set RRMSE {r:.3f})")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("xy"[varying] + " (macro node)")
        ax.set_ylabel(f"u_{'xy'[comp]}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path, title=title or f"{problem.name}: target and achieved displacements")


def plot_refinement(history, path, *, title: str = "") -> None:
    """Full-scale RRMSE per refinement iteration: the design kept (line) and every move tried (kept or rejected)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    it = [h["iteration"] for h in history]
    ax.plot(it, [h["rrmse_full"] for h in history], "-", color="k", lw=1.2, label="kept design")
    tried = [(h["iteration"], h["tried"], h["accepted"]) for h in history[1:] if h.get("tried") is not None]
    for accepted, color, name in ((True, "tab:green", "move kept"), (False, "tab:red", "move rejected")):
        pts = [(i, r) for i, r, a in tried if a == accepted]
        if pts:
            ax.scatter(*zip(*pts), s=18, color=color, zorder=3, label=name)
    ax.set_xlabel("full-scale solve")
    ax.set_ylabel("full-scale RRMSE")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save_figure(fig, path, title=title or "full-scale refinement")
