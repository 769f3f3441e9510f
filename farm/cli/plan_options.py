"""The plan's options that `farm enqueue` and `farm render-clip` share: how many people a clip holds (issue 16),
how its camera moves, its motion blur and its correspondence file (issue 26).

Each is parsed into what scheduler.sampler.sample_clip_spec takes. A value outside what its option allows is
bad usage (exit 2) in one sentence, found before anything is read or written.
"""

from __future__ import annotations

import math
from typing import Annotated

import typer

PeopleOption = Annotated[
    str | None,
    typer.Option(help="People per clip: N, or A-B drawn per clip (1..4; SURREAL's plan is 1)."),
]
CameraMotionOption = Annotated[
    str | None,
    typer.Option(
        help="How the camera moves: static (SURREAL's, the default), some of follow, handheld, zoom joined by "
        "'+' (follow+handheld), or a mix drawn per clip, MODE=WEIGHT,... "
        "(static=0.5,follow=0.3,follow+handheld+zoom=0.2).",
    ),
]
ShutterOption = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        max=1.0,
        help="Motion blur: the shutter's open fraction of a frame, RGB only (0: none, the default).",
    ),
]
CorrespondenceOption = Annotated[
    bool | None,
    typer.Option(
        "--correspondence/--no-correspondence",
        help="Also write <name>_corr.mat: each pixel's body-surface UV and canonical-body point (default: no).",
    ),
]


def parse_people(text: str | None) -> tuple[int, int]:
    """(fewest, most) people per clip from "N" or "A-B"; None: SURREAL's one."""
    from farm.core.spec import MAX_PEOPLE

    if text is None:
        return 1, 1
    lo, _, hi = text.strip().partition("-")
    try:
        fewest, most = int(lo), int(hi or lo)
    except ValueError:
        fewest = most = 0
    if not 1 <= fewest <= most <= MAX_PEOPLE:
        raise typer.BadParameter(
            f"{text!r} is not a number of people; use N or A-B with 1 <= A <= B <= {MAX_PEOPLE}, for example 1-4",
            param_hint="'--people'",
        )
    return fewest, most


def parse_camera_motion(text: str | None) -> dict[str, float] | None:
    """The camera motion mix sample_clip_spec draws from: {mode: weight} of the modes with a weight above 0, from
    one mode ("follow+handheld": it alone) or a mix "MODE=WEIGHT,..." (weights relative, not summing to 1 per se).
    None for None and for a static camera only, which plans exactly what a plan without the option plans."""
    from farm.core.spec import CAMERA_MOTIONS, check_camera_motion_mode

    if text is None:
        return None
    entries = [part.strip() for part in text.split(",")]
    mix: dict[str, float] = {}
    problem = None
    for entry in entries:
        mode, equals, weight_text = (part.strip() for part in entry.partition("="))
        try:
            check_camera_motion_mode(mode)
        except ValueError:
            problem = "" if mode == text.strip() else f"{mode!r} is not a mode"
            break
        if not equals and len(entries) > 1:
            problem = f"{mode!r} has no weight"
            break
        try:
            weight = float(weight_text) if equals else 1.0
        except ValueError:
            weight = math.nan
        if not math.isfinite(weight) or weight < 0:
            problem = f"{entry!r} has no weight of at least 0"
            break
        if mode in mix:
            problem = f"{mode!r} is named twice"
            break
        mix[mode] = weight
    if problem is None and not sum(mix.values()) > 0:
        problem = "its weights add up to 0"
    if problem is not None:
        raise typer.BadParameter(
            f"{text!r} is not a camera motion{': ' + problem if problem else ''}; use static, some of "
            f"{', '.join(CAMERA_MOTIONS)} joined by '+' in that order (follow+handheld), or a mix of them "
            "MODE=WEIGHT,... (static=0.5,follow=0.3,follow+handheld+zoom=0.2)",
            param_hint="'--camera-motion'",
        )
    mix = {mode: weight for mode, weight in mix.items() if weight > 0}
    return None if set(mix) == {"static"} else mix
