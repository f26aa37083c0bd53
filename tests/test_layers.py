"""The package's structure, kept so by tests: every import points down a layer, and every folder with
Python files is packaged (a folder without ``__init__.py`` is silently left out of a wheel).

Layers, lowest first (``docs/design.md``):
0 ``lit_propulse.core``; 1 ``datamodules``, ``lit_propulse.networks``; 2 ``lit_propulse.losses``;
3 ``lit_propulse.metrics``, ``lit_propulse.pulse``; 4 ``lit_propulse.modules``, ``callbacks``,
``inference``, ``faces``, ``editing``, ``loggers``, ``runs``, ``refine``, ``dial``, ``samples``; 5 ``lit_propulse.evaluation``;
6 ``lit_propulse.commands``, ``cli``, ``__main__``. Imports inside functions count too.
``datamodules`` is a client of the core: nothing in ``lit_propulse`` below layer 4 imports it.
"""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

import pytest
from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]

LAYERS: dict[str, int] = {
    "lit_propulse.core": 0,
    "datamodules": 1,
    "lit_propulse.networks": 1,
    "lit_propulse.losses": 2,
    "lit_propulse.metrics": 3,
    "lit_propulse.pulse": 3,
    "lit_propulse.modules": 4,
    "lit_propulse.callbacks": 4,
    "lit_propulse.inference": 4,
    "lit_propulse.faces": 4,
    "lit_propulse.editing": 4,
    "lit_propulse.loggers": 4,
    "lit_propulse.runs": 4,
    "lit_propulse.refine": 4,
    "lit_propulse.dial": 4,
    "lit_propulse.samples": 4,
    "lit_propulse.evaluation": 5,
    "lit_propulse.commands": 6,
    "lit_propulse.cli": 6,
    "lit_propulse.__main__": 6,
    "lit_propulse": 6,  # the package's own __init__
}
#: the lowest layer that may import ``datamodules`` (the LightningModules and above)
DATAMODULES_FROM = 4


def layer_of(module: str) -> int | None:
    """The layer of a dotted module name: its longest prefix in LAYERS; None = not ours."""
    if module == "lit_propulse":
        return LAYERS[module]
    parts = module.split(".")
    for n in range(len(parts), 1 if parts[0] == "lit_propulse" else 0, -1):  # "lit_propulse.x" needs its own entry
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return LAYERS[prefix]
    return None


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, name: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = package.split(".")
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names if layer_of(f"{base}.{a.name}") != layer_of(base)]
    return out


def violations(root: Path) -> list[str]:
    """One line per import that points up a layer, or into ``datamodules`` from below layer 4."""
    found = []
    for top in ("lit_propulse", "datamodules"):
        for path in sorted((root / top).rglob("*.py")):
            name = module_name(path, root)
            mine = layer_of(name)
            if mine is None:
                found.append(f"{path.relative_to(root)}: {name} has no layer (add it to LAYERS)")
                continue
            for line, target in imports_of(path, name):
                theirs = layer_of(target)
                if theirs is None:
                    continue
                if theirs > mine:
                    found.append(f"{path.relative_to(root)}:{line}: layer {mine} imports {target} (layer {theirs})")
                elif target.split(".")[0] == "datamodules" and name.split(".")[0] == "lit_propulse" and mine < DATAMODULES_FROM:
                    found.append(f"{path.relative_to(root)}:{line}: {name} (layer {mine}) imports {target}: only layers >= {DATAMODULES_FROM} may")
    return found


def test_every_import_points_down_a_layer():
    assert violations(ROOT) == []


@pytest.mark.parametrize(
    "where, source",
    [
        ("lit_propulse/core/bad.py", "from lit_propulse.networks import stylegan2\n"),
        ("lit_propulse/losses/bad.py", "def f():\n    import lit_propulse.evaluation\n"),  # lazy imports count
        ("lit_propulse/networks/bad.py", "from datamodules.folder import ImageFolderDataset\n"),
        ("lit_propulse/modules/bad.py", "from ..evaluation import suite\n"),  # relative
        ("lit_propulse/unplaced.py", "x = 1\n"),
    ],
)
def test_the_layer_check_catches_an_upward_import(tmp_path, where, source):
    for top in ("lit_propulse", "datamodules"):
        (tmp_path / top).mkdir()
    (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / where).write_text(source)
    assert len(violations(tmp_path)) == 1


def test_every_folder_with_python_files_is_packaged():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    include = [p.strip() for p in cfg["options.packages.find"]["include"].split() if p.strip()]
    packaged = set(find_packages(str(ROOT), include=include))
    for top in ("lit_propulse", "datamodules"):
        for folder in sorted({p.parent for p in (ROOT / top).rglob("*.py")}):
            name = ".".join(folder.relative_to(ROOT).parts)
            assert (folder / "__init__.py").is_file(), f"{folder.relative_to(ROOT)} has .py files but no __init__.py: a wheel leaves it out"
            assert name in packaged, f"{name} is not found by setup.cfg's packages = find:"
    assert "lit_propulse.modules" in packaged and "lit_propulse.core" in packaged
