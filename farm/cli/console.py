"""The CLI's error console and progress bar, shared by its commands."""

from __future__ import annotations

from typing import Any

from rich.console import Console

err = Console(stderr=True)


def progress_bar() -> Any:
    """A rich progress bar on stderr, hidden in logs and pipes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,  # no bar in logs and pipes
    )
