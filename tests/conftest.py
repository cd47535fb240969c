from pathlib import Path

import pytest

from bench import config

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"


@pytest.fixture
def params():
    """The repo's params.yaml, shortened to a quick CPU run."""
    def make(*overrides):
        return config.load(PARAMS, ["trainer.accelerator=cpu", *overrides])
    return make
