"""A real one-node SLURM cluster on this machine, for the `cluster` tests: Debian's slurm-wlm and munge,
installed when missing (root and Debian's package archive needed), started in a temporary folder on
ports of their own, stopped by their pids afterwards."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install() -> str | None:
    """None once the daemons are here; else why they cannot be."""
    if all(Path(d).exists() for d in DAEMONS):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "SLURM is not installed, and installing it needs root and apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if r.returncode:
            return f"{' '.join(cmd)} failed: {r.stderr[-500:]}"
    return None


CONF = """ClusterName=bench
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge.sock
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
JobRequeue=1
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
NodeName={host} CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


class Cluster:
    def __init__(self, folder: Path):
        self.folder, self.procs = folder, []
        self.env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}

    def start(self) -> None:
        d = self.folder
        for sub in ("state", "spool"):
            (d / sub).mkdir(parents=True)
        key = d / "munge.key"
        shutil.copy("/etc/munge/munge.key", key) if Path("/etc/munge/munge.key").exists() else key.write_bytes(
            os.urandom(128)
        )
        key.chmod(0o600)
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 * 9 // 10
        (d / "slurm.conf").write_text(
            CONF.format(
                host=socket.gethostname().split(".")[0],
                d=d,
                cpus=os.cpu_count(),
                memory=memory,
                ctld_port=free_port(),
                slurmd_port=free_port(),
            )
        )
        self._run(
            "/usr/sbin/munged",
            "-F",
            "--force",
            f"--key-file={key}",
            f"--socket={d}/munge.sock",
            f"--pid-file={d}/munged.pid",
            f"--log-file={d}/munged.log",
            f"--seed-file={d}/munged.seed",
        )
        time.sleep(0.5)
        self._run("/usr/sbin/slurmctld", "-D")
        self._run("/usr/sbin/slurmd", "-D")
        deadline = time.time() + 60
        while time.time() < deadline:
            r = self.run("sinfo", "-h", "-o", "%t", check=False)
            if r.returncode == 0 and r.stdout.strip() == "idle":
                return
            time.sleep(0.5)
        raise RuntimeError(f"the node never became idle:\n{self.logs()}")

    def _run(self, *cmd: str) -> None:
        with open(self.folder / f"{Path(cmd[0]).name}.out", "w") as log:  # the daemon keeps its own descriptor
            self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def stop(self) -> None:
        self.run("scancel", "--full", "-u", "root", check=False)  # jobs first, then the daemons, newest first
        for p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def run(self, *cmd, check=True, cwd=None, timeout=120) -> subprocess.CompletedProcess:
        r = subprocess.run(
            [str(c) for c in cmd], env=self.env, capture_output=True, text=True, cwd=cwd, timeout=timeout
        )
        if check and r.returncode:
            raise AssertionError(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def state(self, job: str) -> str:
        """A job's state (PENDING, RUNNING, COMPLETED, FAILED, ...) from scontrol."""
        out = self.run("scontrol", "-o", "show", "job", job, check=False).stdout
        fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
        return fields.get("JobState", "GONE")

    def wait(
        self,
        *jobs: str,
        timeout: float = 300,
        until=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "GONE"),
    ) -> dict:
        deadline, states = time.time() + timeout, {}
        while time.time() < deadline:
            states = {j: self.state(j) for j in jobs}
            if all(s in until for s in states.values()):
                return states
            time.sleep(0.5)
        raise AssertionError(f"jobs {states} not done in {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.folder.glob("*.log")))
