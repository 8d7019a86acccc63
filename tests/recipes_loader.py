"""Import a script of recipes/ or tools/ as a module (they are scripts, not a package)."""

import importlib.util

from conftest import ROOT


def _load(folder: str, name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_recipe(name: str):
    return _load("recipes", name)


def load_tool(name: str):
    return _load("tools", name)
