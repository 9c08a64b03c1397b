"""A preset's YAML read safely: a size cap, no anchors or aliases, bounded nesting; any
failure one PresetError line naming the file."""
from __future__ import annotations

from pathlib import Path

import yaml

from .errors import PresetError

__all__ = ["MAX_PRESET_BYTES", "parse_yaml"]

#: a preset is a few KB of YAML (the packaged ones are 1-4 KB); the cap and the refusal
#: of anchors/aliases keep a hostile file from costing more than reading 64 KB (a
#: 558-byte alias bomb took 41.7 s and 2.9 GB, and printed a ~700 MB error)
MAX_PRESET_BYTES = 64 * 1024
#: nesting deeper than this is no preset (they nest 4 deep); PyYAML composes nodes
#: recursively, so 30,000 "[" would otherwise end in a RecursionError
_MAX_DEPTH = 16


def _text(text: str) -> str:
    """Plain text (a YAML parser's complaint) for a one-line message: escaped, cut."""
    text = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 120 else text[:117] + "..."



class _PresetLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases (``&a`` / ``*a``, also ``<<`` merge
    keys, which need them) and nesting deeper than ``_MAX_DEPTH``."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (& and *) are not allowed in a preset; write each value out",
                event.start_mark)
        self._depth += 1
        try:
            if self._depth > _MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {_MAX_DEPTH} levels", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1



def parse_yaml(text: str, source: str | Path | None = None):
    """The YAML mapping of a preset's text, through the loader that refuses anchors,
    aliases and deep nesting; any failure is a PresetError naming ``source``."""
    src = str(source) if source is not None else "<preset>"
    if len(text) > MAX_PRESET_BYTES:
        raise PresetError(f"{src}: a preset file is at most {MAX_PRESET_BYTES // 1024} KB of YAML")
    try:
        return yaml.load(text, Loader=_PresetLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        first = (str(exc).splitlines() or ["syntax error"])[0]
        problem = getattr(exc, "problem", None)
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise PresetError(f"{src}: invalid YAML{where}: {_text(problem or first)}") from None
    except (ValueError, OverflowError, RecursionError) as exc:
        # SafeLoader's own constructors: a 5000-digit int (Python's int-string limit),
        # a date like 2020-13-45
        raise PresetError(f"{src}: invalid YAML: {_text(str(exc))}") from None
