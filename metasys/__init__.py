"""metasys: design of multiscale mechanical metamaterial systems."""

from . import problems
from ._version import __version__
from .database import Database
from .fem import homogenize
from .latent.api import LatentModel
from .material import Material
from .property_optimization import MacroResult, optimize_properties

__all__ = ["Database", "LatentModel", "MacroResult", "Material", "homogenize", "optimize_properties", "problems", "__version__"]
