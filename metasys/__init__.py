"""metasys: design of multiscale mechanical metamaterial systems."""

from .fem import homogenize
from .material import Material

__version__ = "0.1.0"
__all__ = ["Material", "homogenize", "__version__"]
