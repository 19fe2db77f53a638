"""Latent space of microstructures: VAE + property regressor (paper Sec. 3-4.1).

``LatentModel`` (see `metasys.latent.api`) loads a trained model and offers encode / decode /
to_cells / predict / interpolate / traverse / semantic arrows / PCA. TensorFlow is imported only
when a model is built or loaded.
"""

from __future__ import annotations

__all__ = ["LatentModel"]


def __getattr__(name):
    if name == "LatentModel":
        from .api import LatentModel

        return LatentModel
    raise AttributeError(f"module 'metasys.latent' has no attribute {name!r}")
