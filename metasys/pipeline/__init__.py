"""End-to-end design: problem -> macro properties -> candidates -> MRF assembly -> full-scale check, the
`Design` result, its plots and exports, and ``metasys design`` / ``metasys export``."""

from .export import export_structure
from .result import Design
from .run import STAGES, candidates_per_element, design

__all__ = ["STAGES", "Design", "candidates_per_element", "design", "export_structure"]
