"""Each clip's random parameters, drawn with SURREAL's distributions from a seed stored with the clip.

Sampling is split from building: small `*_rand(rng)` functions draw a group of parameters from the generator
they are given, and `sample_clip_spec` gives each group its own child stream, named after it (body,
appearance, light, camera), so adding or changing one group never shifts the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from farm.core.seeding import child_stream, text_seed
from farm.core.spec import (
    CameraMotion,
    CameraSpec,
    ClipSpec,
    Convention,
    Gender,
    MotionRef,
    Person,
    Split,
    clip_name,
)
from scheduler.plan import PlannedClip, frames_at_30fps

GENDERS: tuple[Gender, Gender] = ("female", "male")
TRAIN_FRACTION = 0.8  # SURREAL's shape banks: train uses the first 80% of rows, test the last 20%

# The built-in pools stand in for any kind of asset that has none registered in the database.


def clip_seed(project_seed: int, catalog: str, sequence: str, run: int, clip_index: int) -> int:
    """A 63-bit seed that depends only on the project seed and the clip's identity."""
    return text_seed(f"{project_seed}|{catalog}|{sequence}|{run}|{clip_index}", bits=63)


# Each group draws its uniforms in one call: numpy's per-call overhead, not the arithmetic, is the cost
# when 67,529 clips are sampled at once.


def body_rand(rng: np.random.Generator, banks: dict[Gender, ShapeBank], split: Split) -> tuple[Gender, int]:
    """Gender 50/50, then a row of that gender's bank, uniform within the split's part."""
    u_gender, u_row = rng.random(2)
    gender = GENDERS[int(u_gender * 2)]
    start, stop = banks[gender].part(split)
    return gender, start + int(u_row * (stop - start))


def appearance_rand(rng: np.random.Generator, textures: list[str], backgrounds: list[str]) -> tuple[str, str]:
    u_texture, u_background = rng.random(2)
    return textures[int(u_texture * len(textures))], backgrounds[int(u_background * len(backgrounds))]


def light_rand(rng: np.random.Generator) -> tuple[float, ...]:
    """9 SH coefficients in [-0.7, 0.7]; ambient 0.5 + 0.9 U(0,1); vertical -0.7 U(0,1) (light from above)."""
    u = rng.random(11)
    sh = -0.7 + 1.4 * u[:9]
    sh[0] = 0.5 + 0.9 * u[9]
    sh[1] = -0.7 * u[10]
    return tuple(sh.tolist())


def camera_rand(rng: np.random.Generator) -> tuple[float, float]:
    """Camera distance ~ N(8 m, 1 m) and the body's yaw ~ U[0, 2 pi) relative to it."""
    return float(rng.normal(8.0, 1.0)), float(rng.random() * 2.0 * math.pi)


def camera_motion_rand(rng: np.random.Generator, mode: str) -> CameraMotion | None:
    """The moving camera's parameters for `mode` (farm/render/camera_motion.py): the operator's lag ~ U(0.2, 0.8)
    s; handheld shake ~ U(0.15, 0.6) degrees RMS at ~ U(0.6, 1.6) Hz (hand-held sway, as measured on held
    cameras: a few tenths of a degree around 1 Hz); zoom: the focal length at the clip's end over its start,
    log-uniform in [0.8, 1.6] (mostly zooming in: a zoom out needs background beyond the photo's view)."""
    if mode == "static":
        return None
    u = rng.random(5)
    return CameraMotion(
        mode=mode,
        lag_s=float(0.2 + 0.6 * u[0]),
        shake_deg=float(0.15 + 0.45 * u[1]) if "handheld" in mode else 0.0,
        shake_hz=float(0.6 + 1.0 * u[2]) if "handheld" in mode else 0.0,
        shake_seed=int(u[3] * 2**31) if "handheld" in mode else 0,
        zoom=float(np.exp(np.log(0.8) + u[4] * np.log(2.0))) if "zoom" in mode else 1.0,
    )


def choose_mode(rng: np.random.Generator, mix: dict[str, float]) -> str:
    """One of mix's modes with probability proportional to its weight."""
    modes = sorted(mix)
    weights = np.array([mix[m] for m in modes], np.float64)
    return modes[int(np.searchsorted(np.cumsum(weights) / weights.sum(), rng.random(), side="right"))]


def people_rand(rng: np.random.Generator, people: tuple[int, int]) -> int:
    """How many people the clip holds, uniform in people = (fewest, most)."""
    lo, hi = people
    return lo + int(rng.random() * (hi - lo + 1))


def placement_rand(rng: np.random.Generator) -> tuple[float, float, float]:
    """Where another person stands (farm/render/placement.py): ground_x ~ U(-0.6, 0.6) of the view's half width,
    the search for free ground from ground_depth ~ U(-1.5, 3) m beyond the first person, gap ~ U(0.1, 0.5) m."""
    u = rng.random(3)
    return float(-0.6 + 1.2 * u[0]), float(-1.5 + 4.5 * u[1]), float(0.1 + 0.4 * u[2])


@dataclass(frozen=True)
class ShapeBank:
    name: str
    rows: np.ndarray  # (N, 10) betas

    def part(self, split: Split) -> tuple[int, int]:
        """Row range [start, stop) of the split's part of the bank."""
        cut = int(len(self.rows) * TRAIN_FRACTION)
        return (0, cut) if split == "train" else (cut, len(self.rows))


@dataclass(frozen=True)
class AppearancePools:
    """What the sampler draws from: shape banks per gender, textures per (gender, split), backgrounds per split."""

    shapes: dict[Gender, ShapeBank]
    textures: dict[tuple[Gender, Split], list[str]]
    backgrounds: dict[Split, list[str]]
    notes: list[str] = field(default_factory=list)  # which built-in pools stood in for missing assets


@lru_cache
def builtin_shape_bank(gender: Gender) -> ShapeBank:
    """The free body's bank: betas of sampled adult anny bodies, as shipped (no body is built to plan clips)."""
    from farm.assets.free_body import shipped_shape_bank

    return ShapeBank(f"builtin:shapes/{gender}", np.asarray(shipped_shape_bank(gender), dtype=np.float64))


def builtin_textures(gender: Gender, split: Split) -> list[str]:
    from farm.assets.textures import builtin_texture_uris

    return builtin_texture_uris(gender, split)


def builtin_backgrounds(split: Split) -> list[str]:
    from farm.assets.backgrounds import builtin_background_uris

    return builtin_background_uris(split)


@dataclass(frozen=True)
class SequenceRef:
    catalog: str
    name: str
    split: Split
    motion: MotionRef

    @property
    def frames(self) -> int:
        """Its length in 30 fps frames."""
        return frames_at_30fps(self.motion.frames, self.motion.rate)


WINDOW_TRIES = 8


def person_rand(
    rng: np.random.Generator,
    partners: list[SequenceRef],
    frames: int,
    pools: AppearancePools,
    split: Split,
    taken: set[tuple[str, int]],
) -> Person:
    """Another person: a window of `frames` frames of one of `partners` (each at least that long; uniform over
    them, then over the window's start, drawn again while it is a window in `taken`, the clip's people's, up to
    WINDOW_TRIES times), a body, a texture, a yaw and a place, all from `rng`."""
    for _ in range(WINDOW_TRIES):
        u_sequence, u_start = rng.random(2)
        partner = partners[int(u_sequence * len(partners))]
        start = int(u_start * (partner.frames - frames + 1))
        if (partner.name, start) not in taken:
            break
    taken.add((partner.name, start))
    u_yaw = rng.random()
    gender, row = body_rand(rng, pools.shapes, split)
    bank = pools.shapes[gender]
    textures = pools.textures[(gender, split)]
    ground_x, ground_depth, gap = placement_rand(rng)
    return Person(
        sequence=partner.name,
        frame_start=start,
        motion=partner.motion,
        gender=gender,
        shape=tuple(bank.rows[row].tolist()),
        shape_source=f"{bank.name}#{row}",
        texture=textures[int(rng.random() * len(textures))],
        zrot=float(u_yaw * 2.0 * math.pi),
        ground_x=ground_x,
        ground_depth=ground_depth,
        gap=gap,
    )


def sample_clip_spec(
    sequence: SequenceRef,
    planned: PlannedClip,
    pools: AppearancePools,
    project_seed: int,
    body_model: str,
    convention: Convention = "surreal",
    people: tuple[int, int] = (1, 1),
    partners: list[SequenceRef] | None = None,
    camera_motions: dict[str, float] | None = None,
    shutter: float = 0.0,
    correspondence: bool = False,
) -> ClipSpec:
    """The clip's spec. With `people` = (fewest, most) above 1, the others' windows come from `partners` (the
    sequences of the clip's catalog and split that hold its frame count; default: this one); each person draws
    from their own stream, and a one-person clip draws exactly what it drew before people existed. `camera_motions`
    weighs the camera motion modes (farm.core.spec.CAMERA_MOTIONS; None or only "static": a static camera),
    drawn with the mode's parameters from the clip's "camera_motion" stream; `shutter` and `correspondence` are
    stored as given."""
    seed = clip_seed(project_seed, sequence.catalog, sequence.name, planned.run, planned.clip_index)
    split = sequence.split
    gender, row = body_rand(child_stream(seed, "body"), pools.shapes, split)
    bank = pools.shapes[gender]
    texture, background = appearance_rand(
        child_stream(seed, "appearance"), pools.textures[(gender, split)], pools.backgrounds[split]
    )
    distance, zrot = camera_rand(child_stream(seed, "camera"))
    count = people_rand(child_stream(seed, "people"), people) if people != (1, 1) else 1
    motion = None  # a static camera draws nothing, so a default clip draws exactly what it drew before
    if camera_motions and set(camera_motions) != {"static"}:
        stream = child_stream(seed, "camera_motion")
        motion = camera_motion_rand(stream, choose_mode(stream, camera_motions))
    taken = {(sequence.name, planned.frame_start)}
    others = tuple(
        person_rand(
            child_stream(seed, f"person{k + 1}"),
            partners or [sequence],
            planned.frame_count,
            pools,
            split,
            taken,
        )
        for k in range(1, count)
    )
    return ClipSpec(
        name=clip_name(sequence.name, planned.clip_index),
        catalog=sequence.catalog,
        sequence=sequence.name,
        split=split,
        run=planned.run,
        clip_index=planned.clip_index,
        stride=planned.stride,
        frame_start=planned.frame_start,
        frame_count=planned.frame_count,
        motion=sequence.motion,
        seed=seed,
        body_model=body_model,  # type: ignore[arg-type]
        gender=gender,
        shape=tuple(bank.rows[row].tolist()),
        shape_source=f"{bank.name}#{row}",
        texture=texture,
        background=background,
        light=light_rand(child_stream(seed, "light")),
        camera=CameraSpec(distance=distance),
        zrot=zrot,
        convention=convention,
        others=others,
        camera_motion=motion,
        shutter=shutter,
        correspondence=correspondence,
    )
