"""bench.weights: a cell's final weights in safetensors, checked against its metrics.json; stale, missing or
diverged weights are refused with a message that says what to do. (Training and `dvc exp` around it:
tests/test_train.py and tests/test_pipeline.py.)"""

import json

import pytest
import torch

from bench import models, weights

ARCHITECTURE = {"variant": "residual_bn", "depth": 8, "num_classes": 10, "in_channels": 1}
DATA = {"classes": [str(i) for i in range(10)], "mean": [0.3], "std": [0.2]}


def cell(folder, seed=0, **metrics):
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = models.build_model(**ARCHITECTURE)
    sha = weights.save(folder, model, ARCHITECTURE, DATA, "k" * 16)
    (folder / "metrics.json").write_text(json.dumps({"weights_sha256": sha, "diverged": False, **metrics}))
    return model


def test_a_cell_loads_as_it_was_saved_in_eval_mode(tmp_path):
    model = cell(tmp_path / "a")
    loaded = weights.load(tmp_path / "a")
    assert loaded.model.training is False
    assert (loaded.classes, loaded.mean, loaded.std, loaded.run_key) == (DATA["classes"], [0.3], [0.2], "k" * 16)
    x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    expected = model.eval()((x.float() / 255 - 0.3) / 0.2).argmax(1)
    assert torch.equal(loaded.predict(x), expected)


def test_the_same_weights_give_the_same_bytes(tmp_path):
    cell(tmp_path / "a")
    cell(tmp_path / "b")
    assert (tmp_path / "a/weights.safetensors").read_bytes() == (tmp_path / "b/weights.safetensors").read_bytes()


def test_stale_missing_or_diverged_weights_are_refused(tmp_path):
    cell(tmp_path / "a")
    cell(tmp_path / "b", seed=1)
    (tmp_path / "a/weights.safetensors").write_bytes((tmp_path / "b/weights.safetensors").read_bytes())
    with pytest.raises(ValueError, match="stale weights.*dvc checkout"):
        weights.load(tmp_path / "a")
    (tmp_path / "a/weights.safetensors").unlink()
    with pytest.raises(ValueError, match="dvc pull"):
        weights.load(tmp_path / "a")
    cell(tmp_path / "c", diverged=True, diverged_step=3)
    with pytest.raises(ValueError, match="diverged at step 3"):
        weights.load(tmp_path / "c")
    with pytest.raises(ValueError, match="no readable metrics.json"):
        weights.load(tmp_path / "nothing")
