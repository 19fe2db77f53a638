"""The result of a composite inverse design: materials, geometry, K_theta and the paper's metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .metrics import cov as cov_metric
from .metrics import frac as frac_metric
from .metrics import relative_error


@dataclass(frozen=True)
class DesignResult:
    """``n`` designs for one target.

    ``matrix`` / ``particle`` (n, 3): table materials (E [GPa], nu, rho [g/cm^3]) and their table indices
    ``matrix_index`` / ``particle_index`` (n,); ``radius`` (n,) as a fraction of the side (NaN without
    particles); ``volume_fraction`` (n,); ``k_theta`` (n,): mean K of 10 re-sampled microstructures of the
    backprojected design; ``k_sample`` (n,): K of the generated image itself (K_s; for the Bayesian baseline the
    first re-sampled microstructure); ``eps_r`` (n,) = |K_theta - K*| / K*; ``images`` (n, 3, 64, 64) physical
    (E, nu, rho) per pixel (3D designs: (n, 3, 32, 32, 32) per voxel, and ``info["dim"] == 3``);
    ``density`` (n,): the design's mean density (1 - f_p) rho_m + f_p rho_p;
    ``chunks`` (n, 2): the chunk ids of matrix and particle; ``n_chunks``: non-empty chunks of the table.
    """

    k_target: float
    method: str
    objective: str
    density_weight: float
    matrix: np.ndarray
    particle: np.ndarray
    matrix_index: np.ndarray
    particle_index: np.ndarray
    radius: np.ndarray
    volume_fraction: np.ndarray
    k_theta: np.ndarray
    k_sample: np.ndarray
    images: np.ndarray
    density: np.ndarray
    chunks: np.ndarray
    n_chunks: int
    wall_time_s: float
    info: dict = field(default_factory=dict)

    @property
    def eps_r(self) -> np.ndarray:
        """Relative error of K_theta to the target (NaN K_theta, designs that cannot be packed, count as misses)."""
        return np.nan_to_num(relative_error(self.k_theta, self.k_target), nan=np.inf)

    def frac(self, threshold: float = 0.05) -> float:
        """Share of the designs with ``eps_r < threshold``."""
        return frac_metric(self.eps_r, threshold)

    def cov(self, threshold: float = 0.05) -> float:
        """Distinct chunks used by the designs with ``eps_r < threshold``, over the non-empty chunks."""
        return cov_metric(self.eps_r, self.chunks[:, 0], self.chunks[:, 1], self.n_chunks, threshold)

    def mean_density(self, threshold: float = 0.05) -> float:
        """Mean design density of the designs with ``eps_r < threshold`` (NaN if none; the paper's Table 3b)."""
        ok = self.eps_r < threshold
        return float(np.mean(self.density[ok])) if ok.any() else float("nan")



def design_result(rows, table, k_target, k_sample, images, method, objective, density_weight, wall_time_s, info):
    """`DesignResult` of backprojected ``rows`` ((Backprojection, K_theta) per design)."""
    mi = np.array([bp.matrix for bp, _ in rows], dtype=int)
    pi = np.array([bp.particle for bp, _ in rows], dtype=int)
    vf = np.array([bp.volume_fraction for bp, _ in rows], dtype=float)
    m, p = table.values[mi], table.values[pi]
    ids = table.chunk_ids
    return DesignResult(k_target=float(k_target), method=method, objective=objective, density_weight=float(density_weight),
                        matrix=m, particle=p, matrix_index=mi, particle_index=pi,
                        radius=np.array([bp.radius for bp, _ in rows], dtype=float), volume_fraction=vf,
                        k_theta=np.array([k for _, k in rows], dtype=float), k_sample=np.asarray(k_sample, float),
                        images=np.asarray(images, dtype=np.float32), density=(1.0 - vf) * m[:, 2] + vf * p[:, 2],
                        chunks=np.stack([ids[mi], ids[pi]], axis=1), n_chunks=len(table.chunks),
                        wall_time_s=float(wall_time_s), info=info)
