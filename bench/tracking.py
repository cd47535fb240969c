"""Weights & Biases: one run per cell, organised so the UI and a W&B Report compare variants and depths.

Offline by default (no API key needed; `wandb sync` uploads later), rank 0 only. Run folders live
outside DVC's temporary experiment workspaces, so `dvc exp run --queue` never deletes them. The
API key is read by wandb from the environment and never written by this project.
"""

from __future__ import annotations

import netrc
import os
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from bench import quiet
from bench.config import Params
from bench.record import Cell

MODES = ("online", "offline", "disabled")


def mode(params: Params) -> str:
    """wandb.mode; where it is null, $WANDB_MODE; where that is unset, online with WANDB_API_KEY set, else offline."""
    m = (
        params.wandb.mode
        or os.environ.get("WANDB_MODE")
        or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    )
    if m not in MODES:
        raise ValueError(f"unknown wandb.mode {m!r}; valid modes: {', '.join(MODES)} (or null)")
    return m


def root_dir(params: Params) -> Path:
    """Where run folders go: wandb.dir, $WANDB_DIR, else the DVC repo root. DVC sets DVC_ROOT to the parent
    repo's root inside `dvc exp run --queue` temp workspaces, so the runs outlive those workspaces."""
    return Path(params.wandb.dir or os.environ.get("WANDB_DIR") or os.environ.get("DVC_ROOT") or ".").resolve()


def project(params: Params) -> str:
    return params.wandb.project or os.environ.get("WANDB_PROJECT") or "bench"


def entity(params: Params) -> str | None:
    return params.wandb.entity or os.environ.get("WANDB_ENTITY")


def group(params: Params) -> str:
    """The experiment: dataset, protocol (iterations, batch, lr, shortcut) and DVC experiment name."""
    if params.wandb.group:
        return params.wandb.group
    t = params.train
    exp = os.environ.get("DVC_EXP_NAME") or "workspace"
    return f"{params.data.name}-{t.max_steps}it-b{t.batch_size}-lr{t.lr:g}-{params.model.shortcut}-{exp}"


def writable_root(params: Params) -> Path:
    """root_dir, where it can hold runs; else a folder in the system's temporary directory, with a line that says
    so (W&B never costs a result, and never moves a run without a word)."""
    out = root_dir(params)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK | os.X_OK):
            raise PermissionError(f"{out} is not writable")
        return out
    except OSError as e:
        fallback = Path(tempfile.gettempdir()) / "bench-wandb"
        fallback.mkdir(parents=True, exist_ok=True)
        print(
            f"W&B: {out} cannot hold runs ({e.strerror or e}); this run goes to {fallback}/wandb instead",
            file=sys.stderr,
            flush=True,
        )
        return fallback


def run_kwargs(params: Params, name: str, job_type: str, tags: list[str], config: dict) -> dict:
    """The keyword arguments of wandb.init (and Lightning's WandbLogger) for one run."""
    out = writable_root(params)
    return dict(
        project=project(params),
        entity=entity(params),
        group=group(params),
        job_type=job_type,
        name=name,
        tags=tags,
        config=config,
        mode=mode(params),
        dir=str(out),
        settings={"quiet": not quiet.interactive()},  # no run history and summary in logs: metrics.json has them
    )


def logger(params: Params, cell: Cell, dataset: str, config: dict, run_id: str | None = None):
    """Lightning's WandbLogger for one cell (it creates the run on rank 0 only), or None when disabled.
    `run_id`: the same id continues the same W&B run when a killed cell resumes."""
    if mode(params) == "disabled":
        return None
    from lightning.pytorch.loggers import WandbLogger  # lazy: every command validates through this module

    kw = run_kwargs(params, cell.name, cell.variant, [cell.variant, f"depth-{cell.depth}", dataset], config)
    wandb = WandbLogger(save_dir=kw.pop("dir"), log_model=False, id=run_id, resume="allow" if run_id else None, **kw)
    wandb._wandb_init.pop("anonymous", None)  # Lightning passes anonymous=None, which wandb 0.31 warns has no effect
    return wandb


def start(params: Params, cell: Cell, dataset: str, config: dict, run_id: str | None = None):
    """`logger(...)` with its run started now, before training: a run that cannot start (no network, a
    bad key) is reported and the cell trains without W&B, its results in metrics.json all the same."""
    wandb = logger(params, cell, dataset, config, run_id)
    if wandb is None:
        return None
    try:
        _ = wandb.experiment  # reading it creates the run on rank 0
        return wandb
    except Exception as e:  # wandb raises many types: none of them may cost the training result
        print(
            f"{cell.name}: W&B run could not start ({type(e).__name__}: {e}); training without W&B. "
            f"Set wandb.mode=offline (or WANDB_MODE=offline) to record it offline.",
            file=sys.stderr,
        )
        return None


def finish(wandb, metrics: dict, diagnostics: dict) -> None:
    """The cell's summary and diagnostics into its W&B run, then close it; a failure is reported, not raised
    (metrics.json is written before this)."""
    try:
        log_diagnostics(wandb.experiment, diagnostics)
        wandb.experiment.summary.update(metrics)
        wandb.experiment.finish()
    except Exception as e:
        print(f"W&B could not record the results ({type(e).__name__}: {e}); they are in metrics.json", file=sys.stderr)


BLOCK_COLUMNS = (
    "activation_grad_rms",
    "relative_weight_grad",
    "forward_variance",
    "lesion_error",
    "spp_squared_mean",  # the signal propagation plot (bench/diagnostics/propagation.py)
    "spp_variance",
    "spp_branch_variance",
    "branch_ratio_per_block",
)


def log_diagnostics(run, results: dict) -> None:
    """The per-block diagnostics as one W&B Table per moment (init, end, ...), to plot against the block
    index, and the response std of every 3x3 layer as another (a layer index: two per block, the stem first)."""
    import wandb  # lazy: every command validates through this module, and wandb takes seconds to import

    for when, r in results.items():
        if when == "probe":  # which images, not a measurement
            continue
        n = len(r["activation_grad_rms"])
        rows = [[i, *((r[c] or [None] * n)[i] for c in BLOCK_COLUMNS)] for i in range(n)]  # no lesions at init
        run.log(
            {
                f"diagnostics/{when}": wandb.Table(columns=["block", *BLOCK_COLUMNS], data=rows),
                f"diagnostics/{when}_response_std": wandb.Table(
                    columns=["layer", "response_std"], data=list(enumerate(r["response_std"]))
                ),
            }
        )


def offline_runs(params: Params) -> list[Path]:
    """Offline run folders not yet synced, oldest first."""
    base = root_dir(params) / "wandb"
    return sorted(p for p in base.glob("offline-run-*") if p.is_dir() and not any(p.glob("*.wandb.synced")))


def cells_by_run_id(folders=("runs", "runs_lr")) -> dict[str, str]:
    """{W&B run id: the cell folder's name} from each cell's wandb_run_id file."""
    return {p.read_text().strip(): p.parent.name for d in folders for p in sorted(Path(d).glob("*/wandb_run_id"))}


def sync_lines(params: Params) -> str:
    runs = offline_runs(params)
    if not runs:
        return f"no unsynced offline runs under {root_dir(params) / 'wandb'}"
    names = cells_by_run_id()  # an offline run's folder ends in its id: offline-run-DATE_TIME-ID
    width = max(len(n) for n in [*names.values(), "(no cell)"])
    listing = "\n".join(f"  {names.get(p.name.rsplit('-', 1)[-1], '(no cell)'):<{width}}  {p}" for p in runs)
    return (
        f"{len(runs)} offline W&B runs under {root_dir(params) / 'wandb'}, by cell:\n{listing}\n"
        f"Upload them (needs WANDB_API_KEY or `wandb login`):\n"
        f"  {sync_command(params)}\n"
        f"Or look at one without an account, in the terminal:\n"
        f"  wandb leet {runs[-1]}                   (its curves)\n"
        f"  wandb leet inspect --summary {runs[-1]}   (its final metrics)"
    )


def check_online(params: Params) -> None:
    """Raise ValueError (exit 2) where W&B is to be reached online without an API key: $WANDB_API_KEY, or the
    netrc entry that `wandb login` writes for the W&B host."""
    if mode(params) != "online" or os.environ.get("WANDB_API_KEY"):
        return
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        known = netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        known = False
    if not known:
        raise ValueError(
            f"wandb.mode is online but there is no W&B API key for {host}: set WANDB_API_KEY or run `wandb login`"
        )


def sync_command(params: Params) -> str:
    """The upload command for the offline runs, as the pinned wandb reads it (offline runs are included by default)."""
    return f"wandb sync --yes {root_dir(params) / 'wandb'}/offline-run-*"
