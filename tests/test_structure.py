"""The package's shape: one subpackage per DVC stage, DVC deps that cover what each stage's command imports, the
layers between the folders, no import cycle, and small modules and functions."""

import ast
import functools
import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml
from helpers import ROOT

from bench import code

PACKAGE = ROOT / "bench"
# the folders of bench/
STAGES = ("prepare", "train", "diagnostics", "landscape", "curvature", "paths", "report", "scale")
MAX_LINES, MAX_FUNCTION_LINES = 300, 60
PARSERS = {"parser"}  # argument parsers: one add_argument per line, longer than 60 lines by nature
# bench/cli.py parses arguments and hands them on; it is in no stage's deps, so that a help text retrains nothing.
# Every value it hands a stage is on dvc.yaml's command line or in the stage's declared params.
NOT_A_DEP = {"bench/cli.py", "bench/arguments.py", "bench/__init__.py", "bench/__main__.py"}


@pytest.fixture(autouse=True, scope="module")
def parsed_once():
    """The questions below ask of the same sources many times: each file is parsed once here (it does not change)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(code, "imports", functools.cache(code.imports))
        yield


def modules() -> list[str]:
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in PACKAGE.rglob("*.py"))


def graph() -> dict[str, set[str]]:
    """module -> the bench modules it imports (a package's __init__ aside)."""
    g = {}
    for m in modules():
        path = code.module_path(m)
        g[m] = {i for i in code.imports(path) if code.module_path(i).name != "__init__.py"} - {m}
    return g


def cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, three colours)."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(g.get(m, ())):
            if state.get(n) == "open":
                return stack[stack.index(n) :] + [n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(g):
        if m not in state and (found := visit(m)):
            return found
    return None


@functools.cache
def external(module: str) -> set[str]:
    """The top-level packages outside bench that `module`'s import closure imports (torch, lightning, ...)."""
    found = set()
    for path in code.closure(module):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found - {"bench", "__future__"}


def in_folder(folder: str) -> list[str]:
    return [m for m in modules() if m.startswith(f"bench.{folder}.")]


# --- the tree ---


def test_bench_shows_its_stages():
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert folders == sorted(STAGES)


def test_the_subpackages_init_files_are_empty():
    for stage in STAGES:
        assert (PACKAGE / stage / "__init__.py").read_text() == "", stage


def test_the_cycle_finder_finds_one():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_among_bench_modules():
    g = graph()
    assert "bench.record" in g["bench.train.stage"]  # the walk sees the package, subpackages included
    assert cycle(g) is None, " -> ".join(cycle(g))


def test_no_module_over_300_lines():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert not {n: s for n, s in sizes.items() if s > MAX_LINES}


def test_no_function_over_60_lines_but_the_argument_parser():
    long = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            is_function = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name not in PARSERS
            if is_function and (n := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES:
                long[f"{path.relative_to(ROOT)}:{node.name}"] = n
    assert not long


# --- the layers ---


def test_the_model_and_the_diagnostics_import_no_lightning():
    for m in ["bench.models", *in_folder("diagnostics")]:
        assert "lightning" not in external(m), m
        assert "pytorch_lightning" not in external(m), m


def test_the_studies_of_trained_cells_import_no_lightning():
    """Lightning's import is several seconds of a study stage's start-up, in it and in each of its workers."""
    for m in [*in_folder("landscape"), *in_folder("curvature"), *in_folder("paths")]:
        assert "lightning" not in external(m), m


def test_the_model_knows_no_params():
    assert graph()["bench.models"] <= {"bench.record"}  # the variant names only: no config, no Lightning
    assert "bench.config" not in graph()["bench.train.module"]  # the LightningModule takes plain arguments


def test_training_and_the_landscapes_import_nothing_from_the_report_or_the_tools_that_scale_out():
    for m in [*in_folder("train"), *in_folder("landscape")]:
        bad = {p for p in code.closure(m) if p.parent.name in ("report", "scale")}
        assert not bad, m


def test_the_report_imports_no_torch():
    for m in in_folder("report"):
        assert "torch" not in external(m), m


def test_the_tools_that_scale_out_do_not_import_training():
    for m in in_folder("scale"):
        assert not {p for p in code.closure(m) if p.parent.name == "train"}, m


# --- DVC deps cover imports ---


def command_modules(command: str) -> set[str]:
    """The bench modules `bench COMMAND` imports: cli.py's module-level imports and those of its command's function."""
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    function = next(
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == f"cmd_{command.replace('-', '_')}"
    )
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    found = set()
    for node in [*top, *ast.walk(function)]:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if code.module_path(m)}


def uncovered(dvc_yaml: dict) -> dict[str, list[str]]:
    """stage -> the source files its command can run that its deps do not cover (a file, or a folder above it)."""
    missing = {}
    for name, stage in dvc_yaml["stages"].items():
        command = stage["cmd"].split()[1]
        files = {str(p.relative_to(ROOT)) for m in command_modules(command) for p in code.closure(m)}
        deps = [d.rstrip("/") for d in stage["deps"]]
        files = {f for f in files - NOT_A_DEP if not f.endswith("/__init__.py")}  # empty (tested): nothing to run
        lost = sorted(f for f in files if not any(f == d or f.startswith(d + "/") for d in deps))
        if lost:
            missing[name] = lost
    return missing


def test_every_stage_s_deps_cover_the_code_its_command_runs():
    assert not uncovered(yaml.safe_load((ROOT / "dvc.yaml").read_text()))


def test_the_deps_check_catches_a_module_left_out():
    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    deps = dvc_yaml["stages"]["prepare"]["deps"]
    deps[deps.index("bench/prepare")] = "bench/prepare/stage.py"  # the deps as they were kept by hand
    deps.append("bench/prepare/__init__.py")
    assert uncovered(dvc_yaml) == {"prepare": ["bench/prepare/readers.py"]}  # it decides the prepared arrays
    dvc_yaml["stages"]["report"]["deps"].remove("bench/record.py")
    assert uncovered(dvc_yaml)["report"] == ["bench/record.py"]


def test_the_run_key_hashes_the_train_stage_s_import_closure():
    from bench.run_key import TRAIN_ENTRY

    files = {str(p.relative_to(ROOT)) for p in code.closure(TRAIN_ENTRY)}
    assert {"bench/models.py", "bench/train/schedule.py", "bench/diagnostics/probe.py"} <= files
    assert not {f for f in files if f.startswith(("bench/report/", "bench/scale/"))}


# --- packaging ---


@pytest.mark.integration
def test_a_wheel_holds_every_subpackage(tmp_path):
    source = tmp_path / "source"  # a copy: setuptools builds in the source tree, and the checkout stays clean
    for name in ("pyproject.toml", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("bench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")}
    assert expected <= names, sorted(expected - names)
