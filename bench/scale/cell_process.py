"""A cell's own process under `bench grid`: forked from the forkserver (or spawned), it runs bench's main as a
`bench train` process of its own would, its output in its log, and it ends with the launcher."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

Main = Callable[[list[str]], int]  # bench's command line: its arguments in, its exit code out


def die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent ends (prctl PR_SET_PDEATHSIG), so that a launcher
    killed with -9 leaves no cell running on as an orphan: a cell forked from the forkserver goes with the
    server, which exits when the launcher does; a spawned cell goes with the launcher. Elsewhere, nothing."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() == 1:  # the parent ended before the request: end now, as the signal would have
            os.kill(os.getpid(), signal.SIGTERM)
    except (OSError, AttributeError):
        pass


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def cell_main(main: Main, cmd: list[str], argv: list[str], env: dict[str, str], log: str) -> None:
    """A cell's process, fresh from the forkserver: the environment, command line and output streams a
    `bench train` process of its own would have, then bench's main, whose return value is the exit code."""
    die_with_parent()
    redirect_output(log)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = cmd  # W&B records the command line; Lightning's DDP re-runs it for the other ranks
    import torch  # preloaded by the forkserver: free here, and the launcher's own process never loads it

    # OpenMP read OMP_NUM_THREADS when the server loaded torch, and a server started by an earlier launch in
    # this process may have had another value: torch's threads as this cell's environment says
    torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    code = 1  # what an exception leaves: W&B then ends an unfinished run as failed, as its exit hook would
    try:
        code = main(argv)
    finally:
        finish_wandb(code)
    sys.exit(code)


def redirect_output(log: str) -> None:
    """stdout and stderr into `log` at the file-descriptor level, so that C libraries and subprocesses write there
    too; line-buffered, so the log is current while the cell runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout.reconfigure(line_buffering=True)


def finish_wandb(exit_code: int) -> None:
    """What W&B does at interpreter exit, which a multiprocessing child skips: end an unfinished run with the cell's
    exit code (a failed cell's as failed), then let go of the service (it stops only where the cell started it, not
    where it shares the launcher's). Nothing where W&B was never imported: a machine without it runs cells with
    wandb.mode=disabled."""
    wandb = sys.modules.get("wandb")
    if wandb is not None:
        if wandb.run is not None:
            wandb.run.finish(exit_code=exit_code)
        wandb.teardown(exit_code)
