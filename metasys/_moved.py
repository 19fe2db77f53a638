"""Old module paths of metasys 0.1 that moved in the layout of 0.2: importing one still works for one release and
emits a `DeprecationWarning` naming the new path (README, "What moved")."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "metasys.candidates": "metasys.selection.candidates",
    "metasys.families": "metasys.selection.families",
    "metasys.family_plots": "metasys.selection.plots",
    "metasys.family_cli": "metasys.selection.cli",
    "metasys.property_optimization": "metasys.macro.optimization",
    "metasys.property_plots": "metasys.macro.plots",
    "metasys.design_cli": "metasys.pipeline.cli",
    "metasys.export": "metasys.pipeline.export",
}
"""Old module path -> new module path."""


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old path to the module at its new path (the same module object, not a copy)."""

    def find_spec(self, name, path=None, target=None):
        if name not in MOVED:
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; the old path will be removed in the next release",
                      DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new)
        self._spec = module.__spec__
        return module

    def exec_module(self, module):
        # The import system set __spec__ to the alias's spec; the module keeps its own.
        module.__spec__ = self._spec


def install() -> None:
    """Put the finder on `sys.meta_path` (once)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
