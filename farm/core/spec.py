"""The clip spec: one frozen, validated record per clip holding everything a renderer needs.

Everything random is drawn once, in the scheduler, and stored here; re-rendering a clip from its spec gives
the same pixels.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from farm.core.choices import Convention, Split
from farm.core.errors import FarmError

SPEC_VERSION = 2  # 2 added `convention`; version 1 clips were rendered in what is now "clean"
FPS = 30
CLIP_LENGTH = 100
RUN_STRIDES = (50, 30, 70)  # clip step per run, in 30 fps frames (SURREAL's run0, run1, run2)

Gender = Literal["female", "male"]

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_safe_name(name: str, what: str = "name") -> str:
    """A name becomes a folder in the output tree, so it must not escape it (no '/', no '..')."""
    if not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"the {what} {name!r} is not allowed: use letters, digits, '_', '-' and '.', "
            "starting with a letter or digit and without '..'"
        )
    return name


SafeName = Annotated[str, AfterValidator(check_safe_name)]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MotionRef(Frozen):
    """Where a sequence's SMPL motion lives and how fast it was recorded."""

    uri: str  # a file path, or "builtin:<name>" for the generated library
    pose_key: str  # array of (T, >=72) axis-angle poses
    trans_key: str  # array of (T, 3) root translations in metres
    rate: float = Field(gt=0)  # MoCap frames per second
    frames: int = Field(gt=0)  # MoCap frames


class CameraSpec(Frozen):
    width: int = 320
    height: int = 240
    focal_mm: float = 60.0
    sensor_mm: float = 32.0
    distance: float  # metres from the pelvis at frame 0, drawn from N(8, 1)

    @property
    def focal_px(self) -> float:
        return self.focal_mm / self.sensor_mm * self.width


# A camera that moves (issue 26): "static" (SURREAL's, the default) or any of these joined by "+", in this
# order, e.g. "follow+handheld+zoom". Over SURREAL's flat background photo the camera only turns and zooms:
# its centre stays at camLoc (farm/render/camera_motion.py).
CAMERA_MOTIONS = ("follow", "handheld", "zoom")


def check_camera_motion_mode(mode: str) -> str:
    """`mode` in its one spelling: "static", or CAMERA_MOTIONS' names joined by "+" in their order."""
    parts = mode.split("+")
    if mode != "static" and (
        not set(parts) <= set(CAMERA_MOTIONS) or parts != sorted(set(parts), key=CAMERA_MOTIONS.index)
    ):
        raise ValueError(
            f"the camera motion {mode!r} is not static or some of {', '.join(CAMERA_MOTIONS)} joined by '+' "
            "in that order (e.g. follow+handheld)"
        )
    return mode


CameraMotionMode = Annotated[str, AfterValidator(check_camera_motion_mode)]


class CameraMotion(Frozen):
    """How a clip's camera moves, drawn per clip from its seed (scheduler/sampler.py camera_motion_rand)."""

    mode: CameraMotionMode
    lag_s: float = Field(default=0.0, ge=0.0)  # follow: the operator's lag (the pan's time constant)
    shake_deg: float = Field(default=0.0, ge=0.0, le=5.0)  # handheld: RMS shake per axis, degrees
    shake_hz: float = Field(default=0.0, ge=0.0, le=10.0)  # handheld: the shake's main frequency
    shake_seed: int = Field(default=0, ge=0)  # handheld: its phases and partials
    zoom: float = Field(default=1.0, gt=0.25, lt=4.0)  # zoom: focal length at the clip's end over its start

    def has(self, part: str) -> bool:
        return part in self.mode.split("+")


MAX_PEOPLE = 4


class Person(Frozen):
    """One person of a clip: their MoCap window, body, look, yaw and where they stand.

    A clip's first person is its top-level fields (SURREAL's one body); `ClipSpec.others` holds the rest.
    Placement (farm/render/placement.py): each other person stands `ground_x` of the view's half width to the
    side, and at the first free spot at or beyond `ground_depth` metres behind the first person's frame-0
    pelvis along the view, with `gap` metres of ground between their frame-0 footprints and everyone else's.
    """

    sequence: SafeName
    frame_start: int = Field(ge=0)  # first frame, in 30 fps frames of the sequence
    motion: MotionRef
    gender: Gender
    shape: tuple[float, ...] = Field(min_length=10, max_length=10)
    shape_source: str
    texture: str
    zrot: float
    ground_x: float = Field(default=0.0, gt=-1.0, lt=1.0)
    ground_depth: float = 0.0
    gap: float = Field(default=0.0, ge=0.0)


class ClipSpec(Frozen):
    spec_version: int = SPEC_VERSION
    name: SafeName  # "<sequence>_c<NNNN>": it names files and the worker's scratch folder (_name_form)
    catalog: SafeName
    sequence: SafeName
    split: Split
    run: int = Field(ge=0, le=2)
    clip_index: int = Field(ge=0)
    stride: int
    frame_start: int = Field(ge=0)  # first frame, in 30 fps frames of the sequence
    frame_count: int = Field(gt=0, le=CLIP_LENGTH)
    fps: int = FPS
    motion: MotionRef
    seed: int
    body_model: Literal["free", "smpl"]
    gender: Gender
    shape: tuple[float, ...] = Field(min_length=10, max_length=10)
    shape_source: str  # which bank row the betas came from, for provenance
    texture: str  # asset uri
    background: str  # asset uri
    light: tuple[float, ...] = Field(min_length=9, max_length=9)  # SH coefficients
    camera: CameraSpec
    zrot: float  # body yaw about the vertical axis, radians
    convention: Convention = "surreal"
    others: tuple[Person, ...] = Field(default=(), max_length=MAX_PEOPLE - 1)  # more people (issue 16)
    # Issue 26, each stored only when it is not its default (a default spec is stored as before):
    camera_motion: CameraMotion | None = None  # None: the static camera (mode "static" is stored as None)
    shutter: float = Field(default=0.0, ge=0.0, le=1.0)  # motion blur: open fraction of a frame; 0 = none
    correspondence: bool = False  # also write <name>_corr.mat (dense body-surface correspondence)

    @model_validator(mode="before")
    @classmethod
    def _version_1_is_clean(cls, data: object) -> object:
        """Specs stored before `convention` existed were rendered in what is now the clean convention."""
        if isinstance(data, dict) and data.get("spec_version") == 1 and "convention" not in data:
            return {**data, "convention": "clean"}
        return data

    @model_validator(mode="after")
    def _name_form(self) -> ClipSpec:
        """The name is its sequence's and a clip number, as clip_name makes it: nothing else reaches a path."""
        if not re.fullmatch(re.escape(self.sequence) + r"_c[0-9]{4,}", self.name):
            raise ValueError(
                f"the clip name {self.name!r} is not {self.sequence}_c<NNNN> (its sequence and a clip number)"
            )
        return self

    @model_validator(mode="after")
    def _static_is_none(self) -> ClipSpec:
        if self.camera_motion is not None and self.camera_motion.mode == "static":
            object.__setattr__(self, "camera_motion", None)
        return self

    @model_serializer(mode="wrap")
    def _defaults_as_before(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        """A spec is stored exactly as before a field existed while that field holds its default: one person,
        a static camera, no motion blur, no correspondence file."""
        data: dict[str, object] = handler(self)
        for key, default in (
            ("others", ()),
            ("camera_motion", None),
            ("shutter", 0.0),
            ("correspondence", False),
        ):
            if key in data and getattr(self, key) == default:
                data.pop(key)
        return data

    @property
    def camera_motion_mode(self) -> str:
        return "static" if self.camera_motion is None else self.camera_motion.mode

    @property
    def people(self) -> tuple[Person, ...]:
        """Every person of the clip, the first one (the top-level fields, placed where the camera says) first."""
        first = Person(
            **{name: getattr(self, name) for name in Person.model_fields if name in ClipSpec.model_fields}
        )
        return (first, *self.others)

    @property
    def output_dir(self) -> str:
        """The clip's folder relative to the output root, in the SURREAL layout."""
        return f"{self.catalog}/{self.split}/run{self.run}/{self.sequence}"


def clip_name(sequence: str, clip_index: int) -> str:
    return f"{sequence}_c{clip_index + 1:04d}"


def parse_spec(data: object) -> ClipSpec:
    """A stored spec (the database's, a manifest's), validated; one that is not valid, such as a name holding
    '../', is refused in one sentence (a FarmError) instead of pydantic's multi-line report."""
    try:
        return ClipSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise FarmError(
            f"a stored clip spec is not valid ({where + ': ' if where else ''}{message}); it cannot be used"
        ) from None
