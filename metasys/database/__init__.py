"""Microstructure database: HDF5 storage, generation (seeds, repair, perturbation), feasibility."""

from .storage import SOURCES, Database, VerificationReport

__all__ = ["SOURCES", "Database", "VerificationReport"]
