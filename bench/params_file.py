"""A params file as a person writes it: YAML in which a key written twice is an error and 1e-3 is a float.

params.yaml and preset files are read here (a preset as overrides), bench.config types them. Anchors, aliases
and merge keys are refused: params need none, and nine nested aliases in 300 bytes are a billion values.
"""

from __future__ import annotations

import json
import re
import reprlib
from pathlib import Path
from typing import Any

import yaml

SHOWN = 80  # characters of a value that an error message shows


def shown(value: Any) -> str:
    """repr(value) for an error message, cut to about SHOWN characters: a value of a million items prints a few."""
    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxother = 3, 8, 8, SHOWN, SHOWN
    text = short.repr(value)
    return text if len(text) <= SHOWN else f"{text[: SHOWN - 3]}..."


class Unsupported(yaml.MarkedYAMLError):
    """Valid YAML that a params file may not use: anchors, aliases, merge keys."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (plain YAML keeps the last silently),
    refusing anchors, aliases and merge keys, and reading every float a person writes as a float: YAML 1.1
    (PyYAML) reads 1e-3 and 1E-4 as strings, since its floats need a dot; YAML 1.2's do not."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise Unsupported(None, None, "anchors and aliases (&name, *name) are not supported", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise Unsupported(None, None, "merge keys (<<) are not supported", key_node.start_mark)
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_implicit_resolver(  # after 1.1's own: an exponent without a dot (1e-3, 2E4, -1.5e+2 is 1.1's)
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def parse(text: str) -> Any:
    """A YAML document or value, as `_UniqueKeyLoader` reads it."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def read(path: Path) -> dict:
    """A params file (params.yaml, a preset) as a mapping of sections; ValueError in one line: what, and where."""
    try:
        raw = parse(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"params file {path} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"params file {path} cannot be read ({type(e).__name__}: {e})") from None
    except yaml.YAMLError as e:  # one line: what, and where
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        if isinstance(e, Unsupported):  # valid YAML, refused here
            raise ValueError(f"{path}: {e.problem} in params files{where}") from None
        raise ValueError(f"{path} is not valid YAML: {getattr(e, 'problem', None) or e}{where}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of sections (grid, data, ...), got {shown(raw)}")
    return raw


def preset(path: str | Path) -> list[str]:
    """A preset file (params.yaml's layout, holding only the keys it sets) as section.key=value overrides.
    Values are written as compact JSON, which YAML reads back: no spaces, so each override is one word."""
    raw = read(Path(path))
    if bad := [s for s, keys in raw.items() if not isinstance(keys, dict | None)]:
        raise ValueError(f"{path}: section {bad[0]} is {shown(raw[bad[0]])}, not a mapping of keys")
    return [
        f"{section}.{key}=" + (value if isinstance(value, str) else json.dumps(value, separators=(",", ":")))
        for section, keys in raw.items()
        for key, value in (keys or {}).items()
    ]
