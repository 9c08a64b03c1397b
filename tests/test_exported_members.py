"""__all__ is the public surface, strictly (httpx's tests/test_exported_members.py):
every name it lists exists, and every public name a module defines is listed."""
from __future__ import annotations

import importlib
import inspect
import types

import pytest

import ratecontrol

MODULES = ["ratecontrol", "ratecontrol.api", "ratecontrol.errors", "ratecontrol.options", "ratecontrol.contract",
           "ratecontrol.fsutil", "ratecontrol.results", "ratecontrol.search", "ratecontrol.cache", "ratecontrol.media",
           "ratecontrol.batch", "ratecontrol.cli", "ratecontrol.probing.streams", "ratecontrol.probing.encode",
           "ratecontrol.probing.output", "ratecontrol.probing.request", "ratecontrol.probing.searching", "ratecontrol.probing.compare", "ratecontrol.presets",
           "ratecontrol.scoring.model", "ratecontrol.knob_search", "ratecontrol.ladder_search",
           "ratecontrol.guess"]


def _defined_here(mod: types.ModuleType) -> set[str]:
    out = set()
    for name, value in vars(mod).items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if (inspect.isclass(value) or inspect.isfunction(value)) and value.__module__ == mod.__name__:
            out.add(name)
    return out


@pytest.mark.parametrize("name", MODULES)
def test_all_lists_exactly_the_public_definitions(name):
    mod = importlib.import_module(name)
    listed = set(mod.__all__)
    assert len(listed) == len(mod.__all__), "no duplicates"
    missing = [n for n in listed if not hasattr(mod, n)]
    assert not missing, f"{name}.__all__ names what does not exist: {missing}"
    unlisted = _defined_here(mod) - listed
    assert not unlisted, f"{name} defines public names missing from __all__: {sorted(unlisted)}"


def test_package_exports_every_error_class():
    from ratecontrol import errors

    for n in errors.__all__:
        assert getattr(ratecontrol, n) is getattr(errors, n)


def test_error_tree_diagram_matches_the_classes():
    """errors.py draws the tree (httpx's _exceptions.py style): every class, its parent
    by indentation, and its exit code."""
    import re

    from ratecontrol import errors

    parents, stack = {}, []
    for line in errors.__doc__.splitlines():
        m = re.match(r"^(\s*)(?:[|+ -]*)(\w+(?:Error|Reachable))\b(?: \[(\d+)\])?", line)
        if not m or not hasattr(errors, m.group(2)):
            continue
        depth = len(line) - len(line.lstrip(" |+-"))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[m.group(2)] = stack[-1][1] if stack else None
        if m.group(3):
            assert getattr(errors, m.group(2)).exit_code == int(m.group(3)), m.group(2)
        stack.append((depth, m.group(2)))
    for name, parent in parents.items():
        if parent:
            assert issubclass(getattr(errors, name), getattr(errors, parent)), (name, parent)
    assert set(parents) == {n for n in errors.__all__ if n.endswith(("Error", "Reachable"))}
