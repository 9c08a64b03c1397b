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
           "ratecontrol.batch", "ratecontrol.cli"]


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
