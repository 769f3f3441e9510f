"""`farm render-clip`: render one clip locally, for debugging and demos."""

from __future__ import annotations

import typer


def render_clip(
    sequence: str = typer.Option(..., help="Sequence name."),
    run: int = typer.Option(0, help="Run 0, 1 or 2."),
    clip: int = typer.Option(0, help="Clip index (0-based)."),
) -> None:
    """Render one clip (not available yet: the renderer issue builds it)."""
    typer.echo("render-clip is not available yet")
    raise typer.Exit(1)
