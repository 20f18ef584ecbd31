"""Progress bars on an interactive terminal (rich.progress), imported only when a terminal shows them."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, final

from rich.console import Console
from rich.progress import BarColumn, ProgressColumn, Task, TaskID, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichBars
from rich.text import Text

from bundler.cli.output import err, format_bytes
from bundler.words import counted

if TYPE_CHECKING:
    from bundler.registry.options import RetryNotice

__all__ = ["RichProgress"]


class _BytesColumn(ProgressColumn):
    """``1.2 MiB of 4.0 MiB`` in ``format_bytes``' binary units; blank for a phase that moves no bytes
    (resolve counts references, in the label)."""

    def render(self, task: Task) -> Text:
        if not task.fields.get("bytes"):
            return Text("")
        return Text(f"{format_bytes(task.completed)} of {format_bytes(task.total or 0)}")


class _RateColumn(ProgressColumn):
    """``12.3 MiB/s``, the same units as the sizes beside it."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{format_bytes(speed)}/s" if task.fields.get("bytes") and speed is not None else "")


@final
class RichProgress:
    """Bars on a terminal: per phase the items done in the label, and bytes, rate (binary units) and ETA
    when the phase moves bytes; a phase that moves none (resolve) fills its bar by items."""

    def __init__(self, console: Console = err) -> None:
        self._bars = RichBars(
            TextColumn("{task.description}"),
            BarColumn(),
            _BytesColumn(),
            _RateColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None
        self._name = ""
        self._items = (0, 0)
        self._by_items = False
        self._retries = 0
        self._lock = threading.Lock()

    def __enter__(self) -> RichProgress:
        self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bars.stop()

    def phase(self, name: str, total_bytes: int = 0, total_items: int = 0) -> None:
        with self._lock:
            self._name, self._items, self._by_items = name, (0, total_items), not total_bytes
            self._task = self._bars.add_task(self._label(), total=total_bytes or total_items or None,
                                             bytes=bool(total_bytes))

    def advance(self, nbytes: int) -> None:
        if self._task is not None and not self._by_items:
            self._bars.update(self._task, advance=nbytes)

    def item_done(self, name: str, ok: bool = True) -> None:
        with self._lock:
            self._items = (self._items[0] + 1, self._items[1])
            if self._task is not None:
                self._bars.update(self._task, description=self._label(), advance=1 if self._by_items else 0)

    def warn(self, message: str) -> None:
        self._bars.console.print(f"[yellow]warning:[/] {message}", markup=True, highlight=False)

    def retried(self, notice: RetryNotice, *, shown: bool) -> None:
        """Their count in the label; a line above the bars when ``shown`` or the registry cannot be reached."""
        with self._lock:
            self._retries += 1
            if self._task is not None:
                self._bars.update(self._task, description=self._label())
        if shown or notice.unreachable:
            self._bars.console.print(str(notice), markup=False, highlight=False)

    def _label(self) -> str:
        done, total = self._items
        label = f"{self._name:<9} {done}/{total}" if total else f"{self._name:<9}"
        return label + (f" ({counted(self._retries, 'retry', 'retries')})" if self._retries else "")
