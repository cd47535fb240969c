"""`bench slurm`: its scripts follow the params and dvc.yaml; in a job's environment Lightning requeues the job."""

import shutil
import subprocess

import pytest
from helpers import PARAMS, ROOT

from bench import config
from bench.scale.slurm import render, write


def scripts(*overrides, **kw):
    return render(config.load(PARAMS, list(overrides)), "/scratch/bench", dvc_yaml=ROOT / "dvc.yaml", **kw)


def test_a_cell_gets_the_tasks_and_gpus_trainer_asks_for():
    s = scripts("trainer.devices=2", "trainer.num_nodes=1", "trainer.accelerator=gpu")
    for name in ("grid.sbatch", "ddp_cell.sbatch"):
        assert "#SBATCH --ntasks-per-node=2\n" in s[name], name
        assert "#SBATCH --gres=gpu:2\n" in s[name], name
    cpu = scripts("trainer.devices=2", "trainer.accelerator=cpu")
    assert "--gres" not in "".join(cpu.values())
    assert "#SBATCH --ntasks-per-node=2\n" in cpu["grid.sbatch"]


def test_the_commit_job_has_a_device_for_the_stages_that_train():
    commit = scripts("trainer.accelerator=gpu")["commit.sbatch"]
    assert "#SBATCH --gres=gpu:1\n" in commit
    assert "dvc repro" in commit


@pytest.mark.parametrize("devices", ["auto", "-1"])
def test_devices_slurm_cannot_allocate_are_refused(devices):
    with pytest.raises(ValueError, match="bench slurm needs trainer.devices as a number"):
        scripts(f"trainer.devices={devices}")


def test_submit_and_logs_follow_the_output_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    paths = {p.name: p for p in write(config.load(PARAMS), "cluster/jobs", str(tmp_path))}
    submit = paths["submit.sh"].read_text()
    assert '"$here/grid.sbatch"' in submit
    assert '"$here/commit.sbatch"' in submit
    assert "slurm/" not in submit
    assert (tmp_path / "cluster/jobs/logs").is_dir()  # SLURM opens a job's log before the job runs
    assert f"#SBATCH --output={tmp_path}/cluster/jobs/logs/%x-%A.out" in paths["ddp_cell.sbatch"].read_text()
    for p in paths.values():
        subprocess.run(["bash", "-n", str(p)], check=True)


def test_slurm_scripts_render_for_the_grid(tmp_path):
    p = config.load(
        PARAMS,
        [
            "grid.variants=[plain, residual_bn]",
            "grid.depths=[20, 56]",
            "grid.seeds=[0, 1, 2]",
            "trainer.devices=4",
            "trainer.num_nodes=2",
        ],
    )
    dvc_yaml = tmp_path / "dvc.yaml"  # the cells run what dvc.yaml's train stage declares
    dvc_yaml.write_text((ROOT / "dvc.yaml").read_text().replace("--data data/prepared", "--data elsewhere"))
    scripts = tmp_path / "slurm"
    paths = {
        x.name: x for x in write(p, scripts, "/scratch/bench", partition="gpu", time="12:00:00", dvc_yaml=dvc_yaml)
    }
    array = paths["grid.sbatch"].read_text()
    assert (
        'srun bench train --variant "${VARIANTS[$i]}" --depth "${DEPTHS[$i]}" --seed "${SEEDS[$i]}" '
        '--data elsewhere --out runs/"${VARIANTS[$i]}"-"${DEPTHS[$i]}"-"${SEEDS[$i]}" --no-progress'
    ) in array
    assert "#SBATCH --array=0-11%32" in array
    assert "#SBATCH --signal=SIGUSR1@90" in array
    assert "#SBATCH --requeue" in array
    assert "#SBATCH --partition=gpu" in array
    assert "cd /scratch/bench" in array
    assert "CELLS=(plain-20-0 plain-20-1 plain-20-2 plain-56-0" in array
    assert "srun bench train" in array
    ddp = paths["ddp_cell.sbatch"].read_text()
    assert 'srun bench train --variant "$V" --depth "$D" --seed "$S" --data elsewhere --out runs/"$V"-"$D"-"$S"' in ddp
    assert "#SBATCH --nodes=2" in ddp
    assert "#SBATCH --ntasks-per-node=4" in ddp
    assert "#SBATCH --gres=gpu:4" in ddp
    assert "train@residual_bn-56-2" in paths["commit.sbatch"].read_text()
    assert "--dependency=afterok:${jid}" in paths["submit.sh"].read_text()
    for x in paths.values():
        subprocess.run(["bash", "-n", str(x)], check=True)


def test_lightning_detects_a_slurm_job_and_requeues_it(fake_slurm):
    """In a job's environment, Lightning's SLURMEnvironment is the cluster: on the SIGUSR1 the scripts ask for,
    it saves hpc_ckpt_N.ckpt and requeues the job (the job's own id, not its array's)."""
    import lightning as L
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    fake_slurm()
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    env = trainer._accelerator_connector.cluster_environment
    assert isinstance(env, SLURMEnvironment)
    assert env.auto_requeue
    assert SLURMEnvironment.job_id() == 4242
