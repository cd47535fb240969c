"""benchmarks/wheels.py, the offline wheelhouse: which distributions it would collect for a package."""
import importlib.util
from importlib import metadata

from helpers import ROOT


def load_wheels():
    spec = importlib.util.spec_from_file_location("wheels", ROOT / "benchmarks" / "wheels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_closure_of_a_package_is_it_and_its_installed_requirements_at_their_versions():
    wheels = load_wheels()
    pins = wheels.closure("dvc")
    assert pins["dvc"] == metadata.version("dvc")
    assert {"pyyaml", "networkx"} <= set(pins)  # dvc's requirements, and theirs
    assert "torch" not in pins and "lightning" not in pins  # nothing dvc does not need
    assert set(wheels.closure("pyyaml")) == {"pyyaml"}
