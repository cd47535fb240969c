"""The code a command runs: the import closure of its entry module inside the `bench` package.

One definition serves two jobs: a checkpoint's run key hashes the closure of the train stage (a checkpoint from
other code is not resumed), and a test checks that every DVC stage's deps cover the closure of its command.
Imports are read from the source (every `import`, at any depth, lazy ones included), never executed.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGE = Path(__file__).parent  # bench/
ROOT = PACKAGE.parent  # the project's root: dvc.yaml's paths are relative to it


def module_path(module: str, root: Path = ROOT) -> Path | None:
    """`bench.train.stage` -> bench/train/stage.py; a package -> its __init__.py; None outside bench."""
    parts = module.split(".")
    if parts[0] != PACKAGE.name:
        return None
    base = root.joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imports(path: Path, root: Path = ROOT) -> set[str]:
    """The modules inside bench that the source file at `path` imports, wherever in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # `from bench.train import stage`
    return {m for m in found if module_path(m, root) is not None}


def closure(module: str, root: Path = ROOT) -> list[Path]:
    """Every source file of bench that importing `module` can run, `module` included, as sorted paths."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        path = module_path(todo.pop(), root)
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(imports(path, root))
        parts = path.relative_to(root).with_suffix("").parts
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # bench.a.b runs bench/a/__init__.py first
    return sorted(seen)


def code_hash(module: str, root: Path = ROOT) -> str:
    """A hash of the closure's sources, by path relative to the root: the code identity of a run."""
    h = hashlib.sha256()
    for path in closure(module, root):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]
