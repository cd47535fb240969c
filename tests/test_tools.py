"""The tools beside the package, run through their command lines: benchmarks/speed.py (the speed figures),
benchmarks/cifar10_official.py (CIFAR-10 in the official layout) and dev/offline_wheels.py (a wheelhouse),
and benchmarks/gpu_table.py (the documents' GPU figures)."""

import ast
import json
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata

import numpy as np
import pytest
from archives import write_imagefolder
from helpers import PARAMS, ROOT, run

from bench import config
from bench.prepare.readers import file_md5, read_imagefolder
from bench.prepare.stage import prepare
from bench.train.data import load_prepared

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]  # label order


def tool(script, *args, **kw):
    """A script beside the package, run by its command line: tests never import one."""
    return run([sys.executable, str(ROOT / script), *map(str, args)], **kw)


def top_level_imports(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_the_tests_and_the_tools_do_not_import_each_other():
    tools = {p.stem for folder in ("benchmarks", "dev") for p in (ROOT / folder).glob("*.py")} | {"benchmarks", "dev"}
    tests = {p.stem for p in (ROOT / "tests").glob("*.py")} | {"tests"}
    for path in (ROOT / "tests").glob("*.py"):
        assert not top_level_imports(path) & tools, path.name
    for path in [*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "dev").glob("*.py")]:
        assert not top_level_imports(path) & tests, path.name


def test_the_documents_gpu_figures_are_the_ones_computed_from_perf_gpu():
    r = tool("benchmarks/gpu_table.py", "--check", check=False)
    assert r.returncode == 0, r.stderr
    table = tool("benchmarks/gpu_table.py").stdout
    assert "12,329 images/s" in table  # the compiled real path's JSON figure
    assert "46,178 images/s of training in all (23,459, 22,719 per cell)" in table  # two cells at once: their sum
    assert "4 ResNet-20 residual_bn cells at once | not measured: cut off" in table  # a grid no cell of which finished


def test_the_closure_of_a_package_is_it_and_its_installed_requirements_at_their_versions():
    pins = dict(line.split("==") for line in tool("dev/offline_wheels.py", "--list").stdout.split())
    assert pins["dvc"] == metadata.version("dvc")
    assert {"pyyaml", "networkx"} <= set(pins)  # dvc's requirements, and theirs
    assert "torch" not in pins  # nothing dvc does not need
    assert "lightning" not in pins
    assert tool("dev/offline_wheels.py", "--list", "--package", "pyyaml").stdout.split() == [
        f"pyyaml=={metadata.version('pyyaml')}"
    ]


def test_a_wheelhouse_installs_what_this_python_lacks_into_a_folder_of_its_own(tmp_path):
    house = tmp_path / "wheels"
    house.mkdir()
    with zipfile.ZipFile(house / "speedcheck-1.0-py3-none-any.whl", "w") as whl:  # a wheel, as small as they come
        whl.writestr("speedcheck.py", "ANSWER = 42\n")
        whl.writestr("speedcheck-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: speedcheck\nVersion: 1.0\n")
        whl.writestr("speedcheck-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr("speedcheck-1.0.dist-info/RECORD", "")
    pyyaml = f"PyYAML-{metadata.version('pyyaml')}-cp312-cp312-manylinux_2_17_x86_64.whl"
    (house / pyyaml).write_bytes(b"")  # installed here already: left alone
    missing = tool("dev/offline_wheels.py", "--missing", "--out", house).stdout.split()
    assert missing == [str(house / "speedcheck-1.0-py3-none-any.whl")]
    r = tool("dev/offline_wheels.py", "--out", house, "--install", tmp_path / "site")
    assert "installed 1 wheels" in r.stdout
    check = run([sys.executable, "-c", "import speedcheck; print(speedcheck.ANSWER)"], cwd=tmp_path / "site")
    assert check.stdout.strip() == "42"


def test_an_imagefolder_becomes_an_official_cifar10_archive_that_bench_prepare_reads_with_its_md5(tmp_path):
    folder = write_imagefolder(tmp_path / "jpeg", classes=CIFAR10, per_class=(3, 2), size=(32, 32))
    archive = tmp_path / "cifar-10-python.tar.gz"
    md5 = tool("benchmarks/cifar10_official.py", folder, archive).stdout.strip()
    assert md5 == file_md5(archive)
    again = tool("benchmarks/cifar10_official.py", folder, tmp_path / "again" / "cifar-10-python.tar.gz")
    assert again.stdout.strip() == md5  # the same archive, byte for byte
    header = archive.read_bytes()[:10]  # gzip's: magic, method, flags, mtime (4 bytes), extra flags, OS
    assert header[3] & 0x08 == 0  # no file name (FNAME)
    assert header[4:8] == bytes(4)  # no time
    overrides = ["data.name=cifar10", f"data.source={archive}", f"data.md5={md5}", "data.val_size=0"]
    cfg = config.load(PARAMS, overrides).data
    prepare(cfg, tmp_path / "prepared")
    data, raw = load_prepared(tmp_path / "prepared", cfg), read_imagefolder(folder, None, 1024, 10**6)
    assert data.classes == CIFAR10
    assert data.md5 == md5
    # the same pixels and labels, read back through the official reader (PNG: lossless)
    assert np.array_equal(data.test.x.numpy(), raw.test_x)
    assert np.array_equal(data.test.y.numpy(), raw.test_y)
    assert sorted(map(bytes, data.train.x.numpy())) == sorted(map(bytes, raw.train_x))
    refused = tool(
        "benchmarks/cifar10_official.py", write_imagefolder(tmp_path / "three"), tmp_path / "three.tar.gz", check=False
    )
    assert refused.returncode == 1
    assert "not CIFAR-10's" in refused.stderr
    assert not (tmp_path / "three.tar.gz").exists()


@pytest.mark.integration  # 1.5 to 5 minutes on 2 cores, with their load
def test_the_gpu_check_runs_its_cifar10_steps_on_the_cpu(tmp_path, monkeypatch):
    """benchmarks/speed.py --dry-run: ResNet-20 through He et al.'s protocol by `bench train`, and 1, 2 and 4 cells
    through `bench grid`, eager and a few iterations each, on a small CIFAR-10 ImageFolder of JPEGs."""
    jpeg = write_imagefolder(tmp_path / "jpeg", classes=CIFAR10, per_class=(130, 30), size=(32, 32), fmt="JPEG")
    out = tmp_path / "cuda"
    args = ["--device", "cuda", "--dry-run", "--steps", "he20", "grid", "--compile", "null", "--he-iters", "4"]
    args += ["--grid-iters", "2", "--cifar", jpeg, "--out", out]
    monkeypatch.setenv("OUT", str(tmp_path / "packed"))  # as on a device machine
    (tmp_path / "packed").mkdir()
    r = tool("benchmarks/speed.py", *args, check=False, timeout=900)
    summary = (out / "summary.txt").read_text()
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "cut to 4 of 64,000 iterations" in summary
    assert "exit 0" in summary.split("he20")[1].splitlines()[0]
    metrics = json.loads((out / "he2016-resnet20" / "metrics.json").read_text())
    assert metrics["dataset"] == "cifar10"
    assert metrics["steps"] == 4
    assert metrics["train_images"] == 1300
    figures = json.loads((out / "summary.json").read_text())
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert figures["versions"]["commit"] == head  # what the figures were measured at
    assert figures["he20"]["exit"] == 0
    assert figures["he20"]["test/error"] == metrics["test/error"]
    for k in (1, 2, 4):
        assert f"grid x{k}: exit 0, {k} of {k} cells" in summary
        assert len(list((out / f"grid-x{k}").glob("residual_bn-20-*.json"))) == k
        assert len(list((out / f"grid-x{k}").glob("residual_bn-20-*.log"))) == k  # each cell's own log
        assert figures["grid"][f"x{k}"]["cells"] == k
    with tarfile.open(tmp_path / "packed" / "cuda.tar.gz") as tar:  # what a device machine sends back
        assert {"cuda/summary.txt", "cuda/summary.json", "cuda/he2016-resnet20/metrics.json"} <= set(tar.getnames())


def test_the_arithmetic_check_as_is_refuses_a_perturbation_before_any_work():
    r = tool("benchmarks/arithmetic.py", "--as-is", "-S", "speed.threads=2", check=False)
    assert r.returncode == 2
    assert "--as-is perturbs nothing" in r.stderr


def test_the_claims_documents_arithmetic_checks_are_the_ones_computed_from_perf_arithmetic():
    r = tool("benchmarks/arithmetic_table.py", "--check", check=False)
    assert r.returncode == 0, r.stderr
    table = tool("benchmarks/arithmetic_table.py").stdout
    assert "| nothing: another CPU type | 2-core AMD EPYC, AVX512 kernels" in table  # the --as-is check's row
    assert "`landscape/skips`: holds (+0.395" in table  # a flip: the committed statistic, then the retrained one
    assert "-> not shown (+0.429, 95 % interval [-0.0186, +0.876]" in table
    # seeds.py's study: each claim by arithmetic and number of seeds, and on which they hold under both
    assert "| ATEN_CPU_CAPABILITY=default | 5 | `landscape/skips` | holds (+0.465" in table
    assert "At 5 seeds, under both arithmetics: `branches/near_zero` and `landscape/skips` hold." in table


def test_the_claims_documents_schedules_are_the_ones_computed_from_perf_schedule():
    r = tool("benchmarks/schedule.py", "--check", check=False)
    assert r.returncode == 0, r.stderr
    table = tool("benchmarks/schedule.py", "--table").stdout
    # the schedule params.yaml holds, and the one it replaced, each with its stalled seeds counted
    assert "| batch 64, lr 0.02, 150 iterations, lr / 10 at 100 and 125 | 0 of 5 |" in table
    assert "| batch 128, lr 0.05, 200 iterations, lr / 10 at 100 and 150 | 1 of 5 | 3.9, 5.6, 36.4, 4.7, 3.1 |" in table


def test_the_seeds_study_refuses_no_more_seeds_than_the_grid_before_any_work(tmp_path):
    grid = len(config.load(PARAMS).grid.seeds)
    r = tool("benchmarks/seeds.py", "--seeds", str(grid), "--out", tmp_path / "seeds.json", check=False)
    assert r.returncode == 2
    assert f"the point is more than the grid's {grid}" in r.stderr
    assert not (tmp_path / "seeds.json").exists()
