"""Recording finished cells in dvc.lock while the others train: `bench grid`'s `dvc commit`s, off the workers' path.

`dvc commit` rewrites dvc.lock once per stage it is given, and each rewrite parses all of dvc.lock: 3 to 5 s a
stage on a 2-core CPU with a grid of 75 cells, as long as a small cell's training, and growing with the grid.
Made in the loop that hands out the cells, one stage a call, it left a freed worker idle that long after every
cell. Here a thread of its own records them, one batch at a time (DVC's repo lock allows no more), each batch
every cell that finished since the last, in one rewrite (`commit_cells`). A launcher killed later loses no cell
recorded before.

A commit is CPU work beside the cells': on 2 cores, committing whenever a cell had finished kept a third process
busy most of the grid and slowed every cell by a quarter (a depth-56 cell 14.5 s alone, 19.6 s in the grid). So a
batch starts at most once every `interval` seconds; the first cell and the last batch are recorded at once. A
cell a killed launcher had not recorded yet keeps its results and checkpoint: `bench grid` finds its checkpoint
finished and only tests and records it again.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

_CLOSE = None  # the queue's last item: nothing more will finish


@contextmanager
def _quiet(log: logging.Logger):
    """`log` at warnings only for the block: DVC's "Updating lock file" after every batch says nothing the grid's
    own progress lines do not."""
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def commit_cells(names: list[str]) -> None:
    """`dvc commit --force train@NAME ...` in one rewrite of dvc.lock (commit_stages)."""
    commit_stages([f"train@{n}" for n in names])


def commit_stages(addresses: list[str]) -> None:
    """`dvc commit --force STAGE ...` in one rewrite of dvc.lock: the code path of DVC's own commit
    (dvc/repo/commit.py, force=True), under its repo lock, with the stages written together rather than one
    rewrite each. A ValueError names the stages DVC does not know."""
    from dvc.repo import Repo  # lazy: DVC's import is a second of the launcher's start-up

    wanted = set(addresses)
    with Repo() as repo, repo.lock, _quiet(logging.getLogger("dvc")):
        stages = [s for s in repo.index.stages if s.addressing in wanted]
        if missing := wanted - {s.addressing for s in stages}:
            raise ValueError(f"dvc.yaml has no stage {sorted(missing)[0]}: nothing was recorded")
        for stage in stages:
            stage.save()
            stage.commit()
        stages[0].dvcfile.dump_stages(stages, update_pipeline=False)


def forget_cells(keep: list[str], lock: str | Path = "dvc.lock") -> list[str]:
    """Remove from dvc.lock the train cells that are not in `keep` (the grid's cell names), and return them: a grid
    made smaller (fewer seeds, say) leaves its former cells' entries behind, as DVC prunes no stage that dvc.yaml
    stops generating, and each would be parsed at every rewrite of the file and name results that are no longer
    the grid's. Their folders and DVC's cache are left as they are."""
    lock, wanted = Path(lock), {f"train@{n}" for n in keep}
    listed = re.findall(r"^  (train@\S+):$", lock.read_text(), re.MULTILINE) if lock.exists() else []
    if not (gone := [s for s in listed if s not in wanted]):
        return []
    from dvc.repo import Repo  # lazy, as in commit_cells
    from dvc.utils.serialize import modify_yaml

    with Repo() as repo, repo.lock, modify_yaml(lock, fs=repo.fs) as data:
        for stage in gone:
            del data["stages"][stage]
    return [s.removeprefix("train@") for s in gone]


class Recorder:
    """`record(names)` of the finished cells' names, in a thread, in batches of whatever finished meanwhile, a
    batch at most every `interval` seconds (the first at once, and the rest at `close`). The first error stops the
    recording; `check` (after each cell) and `close` (at the end) raise it."""

    def __init__(self, record: Callable[[list[str]], object], interval: float = 0.0):
        self.record, self.interval, self.error = record, interval, None
        self.recorded: list[list[str]] = []  # the batches, in order
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="dvc-commit", daemon=True)
        self._thread.start()

    def add(self, name: str) -> None:
        self._queue.put(name)

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Record what is left, then raise the first error if there was one."""
        self._queue.put(_CLOSE)
        self._thread.join()
        self.check()

    def _run(self) -> None:
        closing, last = False, -float("inf")
        while not closing:
            batch = [self._queue.get()]
            while _CLOSE not in batch and (left := last + self.interval - time.monotonic()) > 0:
                try:
                    batch.append(self._queue.get(timeout=left))
                except queue.Empty:
                    break
            while not self._queue.empty():
                batch.append(self._queue.get())
            closing = _CLOSE in batch
            names = [n for n in batch if n is not _CLOSE]
            if names and self.error is None:
                last = time.monotonic()
                try:
                    self.record(names)
                    self.recorded.append(names)
                except Exception as e:  # raised in the launcher's thread by check or close
                    self.error = e
