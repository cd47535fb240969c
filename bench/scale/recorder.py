"""Recording finished cells in dvc.lock while the others train: `bench grid`'s `dvc commit`s, off the workers' path.

A `dvc commit` takes seconds (DVC's start-up and its walk over every stage of dvc.yaml), as long as a small cell's
training. Made in the loop that hands out the cells, it left a freed worker idle for that long after every cell.
Here a thread of its own makes them, one at a time (DVC's repo lock allows no more), each taking every cell that
finished since the last: a launcher killed later still loses no cell recorded before.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

_CLOSE = None  # the queue's last item: nothing more will finish


class Recorder:
    """`record(names)` of the finished cells' names, in a thread, in batches of whatever finished meanwhile. The
    first error stops the recording; `check` (after each cell) and `close` (at the end) raise it."""

    def __init__(self, record: Callable[[list[str]], object]):
        self.record, self.error = record, None
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
        closing = False
        while not closing:
            batch = [self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get())
            closing = _CLOSE in batch
            names = [n for n in batch if n is not _CLOSE]
            if names and self.error is None:
                try:
                    self.record(names)
                    self.recorded.append(names)
                except Exception as e:  # raised in the launcher's thread by check or close
                    self.error = e
