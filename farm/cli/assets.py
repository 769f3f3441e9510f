"""`farm assets ...`: build the free body, preview it, register appearance assets."""

from __future__ import annotations

from typing import Annotated

import typer

from farm.core.choices import Split

app = typer.Typer(help="Bodies and appearance assets.", no_args_is_help=True)


# --- `farm assets import ...`: register users' own backgrounds and textures -------------------------------

import_app = typer.Typer(help="Register your own backgrounds and SURREAL textures.", no_args_is_help=True)
app.add_typer(import_app, name="import")


def _print_asset_import(result) -> None:  # type: ignore[no-untyped-def]
    found = ", ".join(f"{group} {count}" for group, count in result.found.items())
    typer.echo(f"{result.kind}s found: {found}; added {result.added}, already registered {result.already}")


@import_app.command("backgrounds")
def import_backgrounds(
    path: Annotated[str, typer.Argument(help="A folder of images (searched recursively) or a list file.")],
    split: Annotated[Split, typer.Option(help="Which split's pool the images join.")],
) -> None:
    """Register background images (any size; scaled and centre-cropped to the frame when rendering)."""
    from pathlib import Path

    from farm.core.settings import get_settings
    from scheduler.assets import import_backgrounds as run_import

    _print_asset_import(run_import(get_settings().database_url, Path(path), split))


@import_app.command("textures")
def import_textures(
    surreal_dir: Annotated[
        str, typer.Argument(help="SURREAL's smpl_data folder (with textures/*_train.txt).")
    ],
) -> None:
    """Register SURREAL's clothing textures from its female/male train/test list files."""
    from pathlib import Path

    from farm.core.settings import get_settings
    from scheduler.assets import import_surreal_textures

    _print_asset_import(import_surreal_textures(get_settings().database_url, Path(surreal_dir)))


# --- `farm assets build-body` / `farm assets preview`: the free anny-based body ---------------------------


@app.command("build-body")
def build_body(
    out: Annotated[
        str | None,
        typer.Option("--out", help="Folder for SMPL_FEMALE/MALE/NEUTRAL.npz (default: the cache)."),
    ] = None,
) -> None:
    """Build the free SMPL-compatible bodies from anny (deterministic; cached after the first build)."""
    import json
    from pathlib import Path

    from farm.assets.free_body import build_free_bodies, ensure_free_body, free_body_dir
    from farm.core.files import sha256_file
    from farm.core.settings import get_settings

    if out is None:
        paths = {g: ensure_free_body(g, get_settings().cache_dir) for g in ("female", "male", "neutral")}
        typer.echo(f"free bodies in {free_body_dir(get_settings().cache_dir)}")
    else:
        paths = build_free_bodies(Path(out))
    for gender, path in paths.items():
        stats = path.with_name(f"{path.stem}.stats.json")
        info = json.loads(stats.read_text()) if stats.exists() else {}
        typer.echo(
            f"{gender:8s} {path}  sha256 {sha256_file(path)[:16]}  "
            f"explained variance (10 betas) {info.get('explained_variance_10', '?')}"
        )


@app.command("preview")
def preview(
    out: Annotated[str, typer.Option("--out", help="The PNG contact sheet to write.")] = "free-bodies.png",
) -> None:
    """Write a PNG contact sheet of the free bodies in several shapes and poses (no Blender needed)."""
    from pathlib import Path

    from farm.assets.preview import body_sheet

    typer.echo(f"wrote {body_sheet(Path(out))}")
