"""The CLI's consoles (results on stdout, errors, warnings and progress on stderr) and progress bar."""

from __future__ import annotations

from typing import Any

from rich.console import Console, ConsoleDimensions

# The width of output that is not a terminal: wider than any line the farm prints, so that a pipe or a log
# gets whole lines, words and table cells instead of rich's 80 columns ("problem s").
UNWRAPPED = 10_000


class FarmConsole(Console):
    """A rich console that wraps at the terminal's width, and not at all where its file is no terminal."""

    @property  # type: ignore[misc]  # read-only: the farm never sets a console's size
    def size(self) -> ConsoleDimensions:
        size = super().size
        return size if self.is_terminal else ConsoleDimensions(UNWRAPPED, size.height)


out = FarmConsole()
err = FarmConsole(stderr=True)


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """'1 clip', '2 clips', '1,000 frames'."""
    return f"{count:,} {noun if count == 1 else nouns or noun + 's'}"


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
