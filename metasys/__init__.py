"""metasys: design of multiscale mechanical metamaterial systems."""

from ._version import __version__
from .database import Database
from .fem import homogenize
from .material import Material

__all__ = ["Database", "Material", "homogenize", "__version__"]
