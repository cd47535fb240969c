"""`bench slurm`: its scripts follow the params, dvc.yaml and the cluster's options (setup lines, memory, QOS,
constraints, any #SBATCH line), hold the out-of-date cells, ask for GPUs only where the cells use them, and refuse
bad options before writing anything; in a job's environment Lightning requeues the job."""

import os
import shlex
import shutil
import subprocess
import sys

import pytest
from helpers import PARAMS, ROOT, snapshot

from bench import config
from bench.record import Cell, cells
from bench.scale import launcher
from bench.scale.slurm import default_setup, limit_seconds, render, write


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


def test_the_commit_job_has_a_gpu_only_where_the_lr_sweep_it_runs_needs_one():
    commit = scripts("trainer.accelerator=gpu")["commit.sbatch"]  # the lr sweep cannot run without one
    assert "#SBATCH --gres=gpu:1\n" in commit
    assert "dvc repro" in commit
    for accelerator in ("auto", "cpu"):  # dvc commit needs none; auto trains the lr sweep on the job's CPUs
        commit = scripts("trainer.devices=2", f"trainer.accelerator={accelerator}")["commit.sbatch"]
        assert "--gres" not in commit
        assert "#SBATCH --ntasks-per-node=1\n" in commit
        assert "export CUDA_VISIBLE_DEVICES=  #" in commit  # auto then picks the CPU, whatever the node has


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


# --- the cluster's own settings: setup lines, memory, QOS, constraints, any other #SBATCH line ---

JOBS = ("grid.sbatch", "commit.sbatch", "ddp_cell.sbatch")


def test_setup_lines_run_in_every_job_after_cd_and_before_its_command():
    setup = ["module load cuda/12.4", "conda activate bench"]
    s = scripts(setup=setup)
    for name, command in [*zip(JOBS, ("srun bench train", "dvc commit", "srun bench train")), ("submit.sh", "dvc")]:
        text = s[name]
        at = [text.index(x) for x in ("cd /scratch/bench\n", "set +u", *setup, "set -u\n", command)]
        assert at == sorted(at), name
        assert "activate" not in text.replace("conda activate bench", ""), name  # the default replaced, not added to


def test_by_default_a_job_activates_the_environment_that_ran_bench_slurm(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a checkout this Python's venv is not inside
    for text in scripts().values():
        assert f"source {shlex.quote(sys.prefix + '/bin/activate')}\n" in text
        assert ".venv/bin/activate" not in text.replace(sys.prefix, "")  # no hard-coded .venv
        assert f"# bench slurm's virtual environment ({sys.prefix})\n" in text  # says where it came from


def test_the_default_setup_is_the_conda_env_or_the_venv_or_nothing(tmp_path):
    here, conda = tmp_path / "checkout", tmp_path / "miniforge/envs/bench"
    (conda / "conda-meta").mkdir(parents=True)
    env = {"CONDA_DEFAULT_ENV": "bench", "CONDA_PREFIX": str(conda), "CONDA_EXE": "/opt/miniforge/bin/conda"}
    lines = default_setup("/scratch/bench", here, str(conda), "/usr", env)
    assert lines[1:] == ['eval "$(/opt/miniforge/bin/conda shell.bash hook)"', "conda activate bench"]
    assert lines[0].startswith("# bench slurm's conda environment")
    assert default_setup("/scratch/bench", here, str(conda), "/usr", {**env, "CONDA_PREFIX": "/other"})[-1] == (
        f"conda activate {conda}"  # run from the env, not activated: by its path
    )
    venv = str(here / ".venv")  # the checkout's own venv: the one in the checkout at --root
    assert default_setup("/scratch/bench", here, venv, "/usr", {})[-1] == "source /scratch/bench/.venv/bin/activate"
    assert default_setup("/scratch/bench", here, "/opt/venvs/b", "/usr", env)[-1] == "source /opt/venvs/b/bin/activate"
    (none,) = default_setup("/scratch/bench", here, "/usr", "/usr", {})
    assert none.startswith("# ")
    assert "nothing to activate" in none


def test_a_job_runs_its_setup_before_its_command_with_unset_variables_allowed(tmp_path):
    """grid.sbatch run by bash, srun faked: the setup line's export reaches the cell's command, a module file's
    unset variable does not stop the job, and `set -u` is back for the command."""
    (tmp_path / "bin").mkdir()
    srun = tmp_path / "bin/srun"
    srun.write_text('#!/bin/bash\necho "$BENCH_SETUP_RAN $*" > "$SRUN_LOG"\n')
    srun.chmod(0o755)
    setup = ["export BENCH_SETUP_RAN=yes", 'echo "${NOT_SET_BY_ANYONE}"']
    script = tmp_path / "grid.sbatch"
    script.write_text(
        render(config.load(PARAMS), str(tmp_path), dvc_yaml=ROOT / "dvc.yaml", setup=setup)["grid.sbatch"]
    )
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "SRUN_LOG": str(tmp_path / "srun.log")}
    r = subprocess.run(["bash", script], env={**env, "SLURM_ARRAY_TASK_ID": "1"}, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "srun.log").read_text().startswith("yes bench train --variant plain --depth 8 --seed 1 ")


def test_mem_qos_constraint_and_sbatch_lines_are_in_every_job():
    s = scripts(mem="16G", qos="high", constraint="a100|h100", sbatch=["mail-type=END", "exclusive=user"])
    for name in JOBS:
        for line in ("--mem=16G", "--qos=high", "--constraint=a100|h100", "--mail-type=END", "--exclusive=user"):
            assert f"#SBATCH {line}\n" in s[name], (name, line)
    assert "#SBATCH --mem" not in "".join(scripts().values())  # none unless asked for: the cluster's defaults


# --- GPUs only where the cells use them ---


def test_accelerator_auto_keeps_a_gpu_unless_gpus_per_task_is_0():
    auto = scripts("trainer.devices=2", "trainer.accelerator=auto")
    assert "#SBATCH --gres=gpu:2\n" in auto["grid.sbatch"]
    cpu = scripts("trainer.devices=2", "trainer.accelerator=auto", gpus_per_task=0)
    assert "--gres" not in "".join(cpu.values())
    for name in JOBS:  # and the GPUs a node may still show are hidden, so that auto picks the CPU
        assert "export CUDA_VISIBLE_DEVICES=  #" in cpu[name]
        assert "#SBATCH --ntasks-per-node=" in cpu[name]


@pytest.mark.parametrize(
    "accelerator, gpus, message",
    [
        ("gpu", 0, "--gpus-per-task 0 with trainer.accelerator=gpu: the cells need a GPU"),
        ("cpu", 1, "--gpus-per-task 1 with trainer.accelerator=cpu"),
        ("auto", 2, "--gpus-per-task 2 must be 0 or 1"),
    ],
)
def test_gpus_the_cells_cannot_use_or_need_are_refused(accelerator, gpus, message):
    with pytest.raises(ValueError, match=message):
        scripts(f"trainer.accelerator={accelerator}", gpus_per_task=gpus)


# --- bench slurm: the out-of-date cells, the overrides, bad options ---


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A folder with the project's params.yaml and dvc.yaml as the cwd; DVC's out-of-date cells faked (stale)."""
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    stale = [Cell("plain", 8, 1), Cell("residual_bn", 56, 0)]
    monkeypatch.setattr(launcher, "stale_cells", lambda p: list(stale))
    return tmp_path, stale


def array_cells(folder) -> str:
    return next(line for line in (folder / "slurm/grid.sbatch").read_text().splitlines() if line.startswith("CELLS="))


def test_the_array_holds_the_out_of_date_cells_and_all_every_cell(cli, checkout):
    folder, stale = checkout
    every = cells(config.load(PARAMS))
    code, out, err = cli("slurm")
    assert code == 0, err
    assert out.startswith(f"2 of {len(every)} cells in the job array (out of date)\n")
    grid = (folder / "slurm/grid.sbatch").read_text()
    assert array_cells(folder) == "CELLS=(plain-8-1 residual_bn-56-0)"
    assert "#SBATCH --array=0-1%32\n" in grid
    assert "dvc commit --force train@plain-8-1 train@residual_bn-56-0\n" in (folder / "slurm/commit.sbatch").read_text()
    assert "bench grid --dry-run" in (folder / "slurm/submit.sh").read_text()  # still so after prepare?
    code, out, err = cli("slurm", "--all")
    assert code == 0, err
    assert array_cells(folder) == "CELLS=(" + " ".join(c.name for c in every) + ")"
    assert "bench grid --dry-run" not in (folder / "slurm/submit.sh").read_text()


def test_no_out_of_date_cell_writes_nothing_and_says_so(cli, checkout):
    folder, stale = checkout
    stale.clear()
    before = snapshot(folder)
    code, out, err = cli("slurm")
    assert code == 0, err
    assert out.startswith("0 of ")
    assert "cells out of date: no job array written (--all writes every cell)" in out
    assert snapshot(folder) == before
    assert not (folder / "slurm").exists()


@pytest.mark.parametrize("stale, submitted", [("plain-8-1", True), ("plain-8-1 plain-8-2", False), ("none", True)])
def test_submit_refuses_an_array_that_lacks_a_cell_out_of_date_after_prepare(cli, checkout, stale, submitted):
    """submit.sh run by bash, with bench, dvc and sbatch faked: `bench grid --dry-run` (after `dvc repro prepare`)
    names a cell the array lacks (prepare changed the data, or params changed since), and nothing is submitted."""
    folder, _ = checkout
    assert cli("slurm", "--setup", "")[0] == 0
    fake = folder / "bin"
    fake.mkdir()
    for name, body in (("bench", f'echo "1 of 45 cells out of date: {stale}"'), ("dvc", ":"), ("sbatch", "echo 7")):
        (fake / name).write_text(f'#!/bin/bash\necho "{name} $*" >> {folder}/calls\n{body}\n')
        (fake / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", folder / "slurm/submit.sh"], env=env, capture_output=True, text=True)
    calls = (folder / "calls").read_text()
    assert calls.startswith("dvc repro prepare\nbench grid --dry-run\n")
    assert ("sbatch --parsable" in calls) == submitted
    assert r.returncode == (0 if submitted else 1), r.stderr
    if not submitted:
        assert "plain-8-2: out of date, not in the job array" in r.stderr


def test_accelerator_cpu_as_an_override_writes_no_gpu(cli, checkout):
    folder, _ = checkout
    code, _, err = cli("slurm", "trainer.accelerator=cpu", "--all")
    assert code == 0, err
    texts = [p.read_text() for p in (folder / "slurm").glob("*.sbatch")]
    assert len(texts) == 3
    for text in texts:
        assert "--gres" not in text
        assert "export CUDA_VISIBLE_DEVICES=  #" in text  # params.yaml's auto, which the cells run, picks the CPU
    code, _, err = cli("slurm", "trainer.accelerator=gpu", "--gpus-per-task", "0")
    assert code == 2
    assert "--gpus-per-task 0 with trainer.accelerator=gpu" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--time", "90min"], "--time '90min' is none of sbatch's MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS"),
        (["--time", "1:2:3:4"], "--time '1:2:3:4' is none of sbatch's"),
        (["--time", "12:75:00"], "--time '12:75:00' is none of sbatch's"),
        (["--time", "1"], "--time 1 is 60 s, not over the 90 s SIGUSR1 comes before it"),
        (["--time", "0"], "--time 0 is 0 s"),
        (["--max-parallel", "0"], "--max-parallel 0 must be at least 1"),
        (["--cpus-per-gpu", "-2"], "--cpus-per-gpu -2 must be at least 1"),
        (["--gpus-per-task", "2"], "--gpus-per-task 2 must be 0 or 1"),
        (["--mem", "16GiB"], "--mem '16GiB' is not a size for sbatch"),
        (["--mem", "0"], "--mem '0' is not a size for sbatch"),
        (["--partition", "gpu long"], "--partition 'gpu long' must be one word"),
        (["--qos", "it's"], '--qos "it\'s" must be one word'),
        (["--sbatch", "mail-type"], "--sbatch 'mail-type' is not KEY=VALUE"),
        (["--sbatch=--mail-type=END"], "--sbatch '--mail-type=END' is not KEY=VALUE"),
        (["--sbatch", "Mail_Type=END"], "--sbatch 'Mail_Type=END' is not KEY=VALUE"),
        (["--sbatch", "mail-type="], "--sbatch 'mail-type=' is not KEY=VALUE"),
        (["--sbatch", "time=1:00:00"], "--sbatch time=1:00:00: use --time"),
        (["--sbatch", "gres=gpu:a100:1"], "--sbatch gres=gpu:a100:1: use --gpus-per-task"),
        (["--sbatch", "array=0-3"], "--sbatch array=0-3: bench slurm writes --array itself"),
        (["--setup", "module load cuda\nrm -rf /"], "--setup 'module load cuda\\nrm -rf /' holds a line break"),
        (["train.lr=0.1"], "train.lr=0.1: bench slurm takes trainer.accelerator only"),
        (["trainer.devices=4"], "trainer.devices=4: bench slurm takes trainer.accelerator only"),
        (["trainer.accelerator=mps"], "trainer.accelerator=mps: params.yaml says auto, which the cells run"),
    ],
    ids=lambda a: " ".join(a) if isinstance(a, list) else "",
)
def test_bad_options_exit_2_naming_them_and_write_nothing(cli, checkout, monkeypatch, args, message):
    folder, _ = checkout
    monkeypatch.setattr(launcher, "stale_cells", lambda p: pytest.fail("DVC asked before the options were checked"))
    before = snapshot(folder)
    code, out, err = cli("slurm", *args)
    assert code == 2, (out, err)
    assert f"bench slurm: error: {message}" in err, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err  # one line
    assert snapshot(folder) == before
    assert not (folder / "slurm").exists()


@pytest.mark.parametrize(
    "text, seconds",
    [("30", 1800), ("30:15", 1815), ("12:00:00", 43200), ("2-12", 216000), ("2-12:30", 217800), ("1-00:00:05", 86405)],
)
def test_times_in_each_of_sbatch_s_formats_are_accepted(text, seconds):
    assert limit_seconds(text) == seconds
    assert f"#SBATCH --time={text}\n" in scripts(time=text)["commit.sbatch"]


def test_the_commit_job_s_resources_follow_the_options():
    options = dict(time="2-00:00:00", partition="gpu", account="lab", qos="high", mem="8G", constraint="a100")
    commit = scripts(**options, sbatch=["mail-type=END"])["commit.sbatch"]
    for line in [f"--{k}={v}" for k, v in options.items()] + ["--mail-type=END"]:
        assert f"#SBATCH {line}\n" in commit, line
    assert "04:00:00" not in commit
    assert "--gres" not in commit  # accelerator auto: dvc commit and the lr sweep on the CPU
