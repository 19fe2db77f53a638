"""The package layout: no import cycles between modules, old module paths still import (with a warning), the
root CLI only mounts each subpackage's commands."""

import ast
import importlib
import pathlib
import sys
import warnings

import networkx as nx
import pytest

import metasys
from metasys._moved import MOVED

ROOT = pathlib.Path(metasys.__file__).parent


def _module_graph() -> nx.DiGraph:
    """Modules of metasys and the modules they import (relative imports, also those inside functions)."""
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = ["metasys", *path.relative_to(ROOT).with_suffix("").parts]
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = nx.DiGraph()
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                for imported in [target] + [f"{target}.{alias.name}" for alias in node.names]:
                    if imported in modules and imported != name and modules[imported].name != "__init__.py":
                        graph.add_edge(name, imported)
    return graph


def test_no_import_cycles_between_modules():
    graph = _module_graph()
    assert graph.number_of_edges() > 50
    assert list(nx.simple_cycles(graph)) == []


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_module_paths_import_with_a_deprecation_warning(old):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old])
    assert module.__spec__.name == MOVED[old]
    assert any(issubclass(w.category, DeprecationWarning) and MOVED[old] in str(w.message) for w in caught)


def test_public_top_level_names_are_unchanged():
    for name in ("design", "Design", "homogenize", "Database", "LatentModel", "optimize_properties", "MacroResult",
                 "diverse_candidates", "find_families", "solve_mrf", "assemble", "mrf_from_candidates", "Material"):
        assert hasattr(metasys, name), name
    assert importlib.import_module("metasys.problems") is metasys.problems
    assert metasys.problems.bridge().name == "bridge"


def test_root_cli_mounts_every_subpackage_command():
    from typer.testing import CliRunner

    from metasys.cli import app

    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("homogenize", "db", "latent", "train", "family", "design", "export"):
        assert command in result.output
    assert "diffusion" in CliRunner().invoke(app, ["train", "--help"]).output
