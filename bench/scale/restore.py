"""The stages whose results git holds but the workspace lacks, which `bench/scale/pipeline.py` reruns.

`dvc repro --allow-missing` keeps the results of a stage whose only change is a missing cached output (a clone
without DVC's cache). But it also skips a stage whose only change is a missing output that git tracks (`cache:
false`): delete report/ or runs_lr/summary.json to regenerate them, and it would skip their stages, or fail on the
first stage that reads them. So the stages after the grid (bench/scale/pipeline.py) count such a stage as out of date.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from bench.scale.stages import declared


def tracked_outputs(stage: dict) -> list[str]:
    """A stage's outputs that git holds: its outs, metrics and plots declared with `cache: false`."""
    return [path for path, options in declared(stage) if options.get("cache") is False]


def missing_results(dvc_yaml: str | Path = "dvc.yaml", root: str | Path = ".") -> dict[str, list[str]]:
    """{stage: its missing git-held outputs}, in dvc.yaml's order; the train cells (a matrix) are `bench grid`'s."""
    stages = yaml.safe_load(Path(dvc_yaml).read_text())["stages"]
    missing = {}
    for name, stage in stages.items():
        if "matrix" in stage or "foreach" in stage:
            continue
        if lost := [p for p in tracked_outputs(stage) if not (Path(root) / p).exists()]:
            missing[name] = lost
    return missing
