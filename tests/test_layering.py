"""Layering: no module reaches into another package's private names, and the leaf
packages import first in a fresh interpreter (no import cycle hidden by import order).

The rule (checked with ``ast``, no import of the code): a name with a leading
underscore (``_layouts``, ``_common``, ``_resample``, ``_parse``) is private to the
package that holds it and to that package's subpackages. So ``ratecontrol/media/_decode.py``
may import ``._ffmpeg``, ``ratecontrol/cli/encode.py`` may import
``ratecontrol.cli._common``, and ``ratecontrol/probing/*`` may import the top-level
``ratecontrol._resample`` (ratecontrol's own private module, used inside ratecontrol);
``ratecontrol/probing/track.py`` may not import ``ratecontrol.media._layouts`` (it
imports ``ratecontrol.media.lfe_indices``), and ``trainer/`` may not import
``ratecontrol._resample``. Imports (absolute and relative) and attribute chains on an
imported module (``media._layouts.lfe_indices``) are both checked; attributes of
classes and instances are not (``self._x`` is the object's own business).
Dunder names (``__version__``) are public. Tests are not walked: they may test
private helpers on purpose.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOP = ("ratecontrol", "trainer", "beetsplug")

#: (importing module, private target) pairs that break the rule today and are known;
#: each needs its fix in the owner's area. Empty: none at present.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    """Every module of the walked packages, by dotted name (a package by its own name)."""
    out = {}
    for top in TOP:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()
PACKAGES = {name for name, path in MODULES.items() if path.name == "__init__.py"} | {"beetsplug"}


def _package_of(module: str) -> str:
    return module if module in PACKAGES else module.rpartition(".")[0]


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def _owner(target: str) -> str | None:
    """The package a private dotted name belongs to (None: nothing private in it)."""
    parts = target.split(".")
    i = next((k for k, p in enumerate(parts) if _private(p)), None)
    if i is None:
        return None
    prefix = ".".join(parts[:i])
    return prefix if prefix in PACKAGES or prefix not in MODULES else _package_of(prefix)


def _resolve(module: str, level: int, name: str | None) -> str:
    """The absolute name of ``from <level dots><name> import ...`` inside ``module``."""
    if not level:
        return name or ""
    base = _package_of(module).split(".")
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def reach_ins(module: str, source: str) -> list[tuple[int, str]]:
    """(line, private target) of every use of another package's private name."""
    tree = ast.parse(source)
    bound: dict[str, str] = {}  # local name -> the module it was imported as
    targets: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                targets.append((node.lineno, a.name))
                if a.asname:
                    bound[a.asname] = a.name
                else:
                    head = a.name.split(".")[0]
                    bound[head] = head
        elif isinstance(node, ast.ImportFrom):
            src = _resolve(module, node.level, node.module)
            targets.append((node.lineno, src))
            for a in node.names:
                if a.name == "*":
                    continue
                full = f"{src}.{a.name}"
                targets.append((node.lineno, full))
                if full in MODULES:
                    bound[a.asname or a.name] = full
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain, cur = [], node
        while isinstance(cur, ast.Attribute):
            chain.append(cur.attr)
            cur = cur.value
        if not isinstance(cur, ast.Name) or cur.id not in bound:
            continue
        dotted = bound[cur.id]
        for attr in reversed(chain):
            if dotted not in MODULES:  # a class or function: its attributes are its own
                break
            dotted = f"{dotted}.{attr}"
            if _private(attr):
                targets.append((node.lineno, dotted))
                break
    mine = _package_of(module)
    out = []
    for line, target in targets:
        if target.split(".")[0] not in TOP:
            continue
        owner = _owner(target)
        if owner is None or mine == owner or mine.startswith(owner + "."):
            continue
        parts = target.split(".")
        first = next(k for k, p in enumerate(parts) if _private(p))
        out.append((line, ".".join(parts[: first + 1])))  # the private name itself
    return sorted(set(out))


def test_no_module_imports_another_packages_private_names():
    found = []
    for module, path in MODULES.items():
        for line, target in reach_ins(module, path.read_text(encoding="utf-8")):
            if (module, target) not in KNOWN_EXCEPTIONS:
                found.append(f"{path.relative_to(ROOT)}:{line}: {target}")
    assert not found, "private names of another package (export a public name instead):\n" + "\n".join(found)


def test_known_exceptions_are_still_needed():
    """An exception that no longer occurs is removed from the list, not kept as a licence."""
    seen = {(m, t) for m, p in MODULES.items() for _, t in reach_ins(m, p.read_text(encoding="utf-8"))}
    assert KNOWN_EXCEPTIONS <= seen, sorted(KNOWN_EXCEPTIONS - seen)


@pytest.mark.parametrize("module, source, expected", [
    # another package's private module, by every spelling
    ("ratecontrol.probing.track", "from ratecontrol.media._layouts import lfe_indices", ["ratecontrol.media._layouts"]),
    ("ratecontrol.probing.track", "import ratecontrol.media._layouts as L", ["ratecontrol.media._layouts"]),
    ("ratecontrol.probing.track", "from ratecontrol.media import _layouts", ["ratecontrol.media._layouts"]),
    ("ratecontrol.probing.track", "from .. import media\nx = media._layouts.lfe_indices",
     ["ratecontrol.media._layouts"]),
    ("ratecontrol.api", "import ratecontrol.media\nx = ratecontrol.media._decode", ["ratecontrol.media._decode"]),
    ("ratecontrol.batch", "from ratecontrol.cli._common import targets", ["ratecontrol.cli._common"]),
    ("trainer.data", "from ratecontrol._resample import resample", ["ratecontrol._resample"]),
    ("ratecontrol.api", "from ratecontrol.probing.track import _helper", ["ratecontrol.probing.track._helper"]),
    # inside the owner's package (or below it): allowed
    ("ratecontrol.media._decode", "from ._ffmpeg import run_args", []),
    ("ratecontrol.media", "from ._inspect import inspect", []),
    ("ratecontrol.cli.encode", "from ratecontrol.cli._common import echo_json", []),
    ("ratecontrol.probing.track", "from ratecontrol._resample import resample", []),
    ("ratecontrol.probing.session", "from ratecontrol.probing.track import _helper", []),
    # public names, dunders, other libraries, attributes of objects: not checked
    ("ratecontrol.probing.track", "from ratecontrol.media import lfe_indices", []),
    ("beetsplug.ratecontrol", "from ratecontrol import __version__", []),
    ("ratecontrol.api", "import numpy._core\nfrom ratecontrol.options import Options\nx = Options._fields", []),
])
def test_the_checker_flags_what_it_should(module, source, expected):
    assert [t for _, t in reach_ins(module, source)] == expected


@pytest.mark.parametrize("name", ["ratecontrol.presets", "ratecontrol.media", "ratecontrol.contract",
                                  "ratecontrol.errors", "ratecontrol.api"])
def test_module_imports_first_in_a_fresh_interpreter(name):
    """Imported before anything else of ratecontrol: an import cycle shows up here."""
    r = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=120,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
