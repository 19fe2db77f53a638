"""Candidate selection in the latent space: diverse candidates per target (k-means, VAE paper Sec. 4.2),
metamaterial families along a gradation (Dijkstra paths, Sec. 4.3), their plots and ``metasys family``."""

from .candidates import DEFAULT_TOLERANCE, Candidates, diverse_candidates, diversity, greedy_candidates
from .families import Family, Gradation, family_candidates, find_families, paper_gradation

__all__ = ["DEFAULT_TOLERANCE", "Candidates", "Family", "Gradation", "diverse_candidates", "diversity", "family_candidates",
           "find_families", "greedy_candidates", "paper_gradation"]
