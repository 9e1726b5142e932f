"""Progress of long sync work: a rich progress bar on a terminal, plain log lines otherwise
(counts only; never an address)."""

import logging
import sys
from typing import Any

log = logging.getLogger("consent_api.sync")


class Progress:
    def __init__(self, *, interactive: bool | None = None) -> None:
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self._bar: Any = None
        self._task: Any = None
        self.label = ""
        self.count = 0

    def start(self, label: str) -> None:
        self.label, self.count = label, 0
        if self.interactive:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(label, total=None)
        else:
            log.info(f"{label}: started")

    def advance(self, n: int, **counts: int) -> None:
        self.count += n
        if self._bar is not None:
            self._bar.update(self._task, advance=n)
        else:
            log.info(f"{self.label}: progress", extra={"done": self.count, **counts})

    def finish(self, **counts: int) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        log.info(f"{self.label}: finished", extra={"done": self.count, **counts})
