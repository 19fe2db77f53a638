"""Diffusion backend: a DDIM prior over cells, noise-input optimization and loss-guided sampling.

- :class:`DiffusionModel` — trained U-Net + schedule (``metasys train diffusion`` writes one)
- :func:`generate_cells` — cells for a target stiffness (noise-input optimization, or ``method="guided"``)
- :func:`candidate_generator` — the generator hook of ``metasys.selection.candidates.diverse_candidates``
  (:func:`default_generator`: the same over the shipped weights, None without them)
- :class:`~metasys.diffusion.hyperelastic.HyperelasticTension` — neo-Hookean tension response (``response=``)
- :class:`~metasys.diffusion.plastic.PlasticTension`, :func:`~metasys.diffusion.plastic.plastic_tension_curve`,
  :func:`~metasys.diffusion.plastic.design_plastic` — elasto-plastic (J2) tension curves and the two-field design
- :func:`append_generated` — store generated cells in a database with provenance ``"generated"``
- :func:`train_diffusion` — training (resumable, seeded)

Names are imported lazily so that ``import metasys.diffusion`` (and the CLI) does not load JAX/flax.
"""

from importlib import import_module

_EXPORTS = {
    "DiffusionModel": "model", "default_model_path": "model",
    "GeneratedCells": "cells", "append_generated": "generate", "binarization": "cells",
    "candidate_generator": "generate", "default_generator": "generate", "generate_cells": "generate", "p_to_matrix": "cells",
    "bulk_modulus": "guided", "bulk_modulus_loss": "guided", "diversity": "guided", "frac": "guided",
    "guided_sample": "guided",
    "HyperelasticTension": "hyperelastic", "Schedule": "schedule", "train_diffusion": "train", "UNetConfig": "unet",
    "PlasticTension": "plastic", "plastic_tension_curve": "plastic", "design_plastic": "plastic",
    "paper_plastic_curves": "plastic", "parametric_curve": "plastic", "plastic_loss": "plastic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
