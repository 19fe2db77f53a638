"""Progress display shared by long-running metasys operations (rich progress bars)."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def progress_bar(description: str, total: int | None, enabled: bool = True):
    """Context manager yielding ``advance(n)``; a no-op when ``enabled`` is false."""
    if not enabled:
        yield lambda n=1: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
