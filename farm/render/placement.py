"""Where a clip's other people stand: on the first person's ground, in view, their frame-0 footprints apart.

The ground is the plane of the camera's right and forward axes (the camera is level), so every person keeps
their own motion's height above it and only moves along it. A person's footprint is the disc about their
frame-0 pelvis that holds all their frame-0 vertices, seen from above. Person k (a `Person` of the spec) stands
`ground_x` of the view's half width to the side at their depth, and at the first depth, searching forward
from `ground_depth` metres beyond the first person's frame-0 pelvis in steps of `STEP_M`, where their
footprint clears everyone placed before them by `gap` metres. The search is deterministic, so the spec alone
fixes where everyone stands.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from farm.core.errors import FarmError
from farm.core.spec import Person
from farm.render.camera import Camera

STEP_M = 0.05
NEAREST_M = 1.0  # no footprint comes nearer the camera than this, along the view
FARTHEST_M = 60.0


@dataclass(frozen=True)
class Footprint:
    centre: np.ndarray  # (2,) ground coordinates: (right, forward) of the camera, metres
    radius: float


def ground(camera: Camera, points: np.ndarray) -> np.ndarray:
    """World points (..., 3) -> (..., 2) ground coordinates relative to the camera: right, forward."""
    rel = np.asarray(points, np.float64) - camera.location
    return np.stack([rel @ camera.R[0], rel @ camera.R[2]], axis=-1)


def footprint(camera: Camera, vertices0: np.ndarray, pelvis0: np.ndarray) -> Footprint:
    """The disc about the frame-0 pelvis holding every frame-0 vertex (world points), seen from above."""
    centre = ground(camera, pelvis0)
    radius = float(np.linalg.norm(ground(camera, vertices0) - centre, axis=-1).max())
    return Footprint(centre, radius)


def place(
    camera: Camera, first: Footprint, others: list[tuple[Person, np.ndarray, np.ndarray]]
) -> list[np.ndarray]:
    """The world translation (3,) that puts each other person where their spec says (see the module docstring).

    `others`: (person, frame-0 vertices, frame-0 pelvis), in world coordinates before the translation.
    """
    placed = [first]
    half_width = camera.width / 2 / camera.K[0, 0]  # the view's half width per metre of depth
    right, forward = camera.R[0], camera.R[2]
    shifts = []
    for k, (person, vertices0, pelvis0) in enumerate(others, start=2):
        own = footprint(camera, vertices0, pelvis0)
        depth = max(first.centre[1] + person.ground_depth, NEAREST_M + own.radius)
        while True:
            spot = np.array([person.ground_x * half_width * depth, depth])
            if all(np.linalg.norm(spot - p.centre) >= p.radius + own.radius + person.gap for p in placed):
                break
            depth += STEP_M
            if depth > FARTHEST_M:
                raise FarmError(f"person {k} finds no free ground within {FARTHEST_M:g} m of the camera")
        move = spot - own.centre
        shifts.append(move[0] * right + move[1] * forward)
        placed.append(Footprint(spot, own.radius))
    return shifts
