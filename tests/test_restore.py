"""bench/scale/restore.py: the stages whose git-held results are missing, which `dvc repro --allow-missing` skips."""

import shutil

from helpers import ROOT

from bench.scale.restore import missing_results


def test_a_clone_with_its_results_misses_nothing():
    assert missing_results(ROOT / "dvc.yaml", ROOT) == {}


def test_deleted_results_name_their_stages_in_pipeline_order_and_cached_outputs_do_not_count(tmp_path):
    shutil.copytree(ROOT / "report", tmp_path / "report")
    (tmp_path / "runs_lr").mkdir()
    shutil.copy(ROOT / "runs_lr/summary.json", tmp_path / "runs_lr/summary.json")
    # landscape/ (the directions) is a cached output, absent from a clone: it is not a result git holds
    assert missing_results(ROOT / "dvc.yaml", tmp_path) == {}
    (tmp_path / "runs_lr/summary.json").unlink()
    shutil.rmtree(tmp_path / "report/toy")
    (tmp_path / "report/claims.json").unlink()  # a metric of the report stage
    assert missing_results(ROOT / "dvc.yaml", tmp_path) == {
        "lr_sweep": ["runs_lr/summary.json"],
        "toy": ["report/toy"],
        "report": ["report/claims.json"],
    }
