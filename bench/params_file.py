"""A params file as a person writes it: YAML in which a key written twice is an error and 1e-3 is a float.

params.yaml and preset files are read here, bench.config types them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (plain YAML keeps the last silently),
    and reading every float a person writes as a float: YAML 1.1 (PyYAML) reads 1e-3 and 1E-4 as strings,
    since its floats need a dot; YAML 1.2's do not."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
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
        raise ValueError(f"{path} is not valid YAML: {getattr(e, 'problem', None) or e}{where}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of sections (grid, data, ...), got {raw!r}")
    return raw
