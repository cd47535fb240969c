from pathlib import Path

import pytest

from bench import config
from bench.datasets import prepare

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"


@pytest.fixture
def params():
    """The repo's params.yaml, shortened to a quick CPU run."""
    def make(*overrides):
        return config.load(PARAMS, ["trainer.accelerator=cpu", *overrides])
    return make


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    """The offline default dataset, prepared once by the real `bench prepare` code."""
    out = tmp_path_factory.mktemp("prepared") / "digits"
    prepare(config.load(PARAMS).data, out)
    return out
