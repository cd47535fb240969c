"""A cell's final weights, travelling with its results: runs/CELL/weights.safetensors, a DVC-cached output of
the train stage, whose SHA-256 and run key the cell's metrics.json records.

`dvc exp apply`, `git checkout` + `dvc checkout`, `dvc push` and `dvc pull` move the weights together with the
metrics they produced. `load` is the one way to read them: it checks the file's hash against metrics.json and
refuses a mismatch, so a stale file (an experiment's, a hand-copied one) is never scored as the cell's. The file
describes itself in its safetensors metadata (the architecture, the classes, the normalisation, the run key);
safetensors holds no code, and the same weights give the same bytes. `last.ckpt` stays beside it for resuming.

    from bench import weights
    cell = weights.load("runs/residual_bn-56-0")     # refuses weights that are not this metrics.json's
    pred = cell.predict(images)                        # images: uint8 (B, C, H, W); class indices into cell.classes
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from bench import models
from bench.files import temporary

FILE = "weights.safetensors"


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save(out: Path, model: torch.nn.Module, architecture: dict, data: dict, run_key: str) -> str:
    """out/weights.safetensors, replaced atomically; its SHA-256. `data`: the classes and the normalisation's mean
    and std; `run_key`: bench.run_key of the run that trained them."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"architecture": architecture, "data": data, "run_key": run_key}
    tmp = temporary(out / FILE)
    try:
        # one metadata key: safetensors writes its metadata map in no fixed order, and the bytes must repeat
        save_file(state, str(tmp), metadata={"bench": json.dumps(metadata, sort_keys=True)})
        tmp.replace(out / FILE)
    finally:
        tmp.unlink(missing_ok=True)
    return sha256(out / FILE)


@dataclass
class Cell:
    """A trained cell, loaded: the network in eval mode, its classes and its input normalisation."""

    model: torch.nn.Module
    classes: list[str]
    mean: list[float]
    std: list[float]
    run_key: str
    metrics: dict

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class indices of uint8 images (B, C, H, W), normalised as in training."""
        m = torch.tensor(self.mean).view(1, -1, 1, 1)
        s = torch.tensor(self.std).view(1, -1, 1, 1)
        return self.model((images.float() / 255 - m) / s).argmax(1)


def load(folder: str | Path) -> Cell:
    """The cell in `folder` (runs/CELL): its weights, checked against its metrics.json. A ValueError names what is
    wrong: no weights (`dvc checkout`, `dvc pull` or retrain), weights whose hash is not the one metrics.json
    records (stale: `dvc checkout`), a diverged cell (its weights are not finite)."""
    folder = Path(folder)
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{folder} holds no readable metrics.json ({e}): not a finished cell") from None
    path = folder / FILE
    if not path.exists():
        raise ValueError(
            f"{path} is missing: `dvc checkout {path}` restores it where DVC's cache has it (this clone trained the "
            f"cell), `dvc pull {path}` from a remote you share, or retrain it: `dvc repro -f -s train@{folder.name}`"
        )
    if (found := sha256(path)) != metrics.get("weights_sha256"):
        raise ValueError(
            f"{path} is not the weights {folder / 'metrics.json'} was measured with (sha256 {found[:12]}..., "
            f"metrics.json records {str(metrics.get('weights_sha256'))[:12]}...): stale weights. "
            f"`dvc checkout {path}` restores the matching ones."
        )
    if metrics.get("diverged"):
        raise ValueError(f"{folder.name} diverged at step {metrics.get('diverged_step')}: its weights are not finite")
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["bench"])
    model = models.build_model(**meta["architecture"])
    model.load_state_dict(load_file(str(path)))
    data = meta["data"]
    return Cell(model.eval(), data["classes"], data["mean"], data["std"], meta["run_key"], metrics)
