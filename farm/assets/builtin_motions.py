"""The built-in free motion library: SMPL poses and root translations generated from code.

Every sequence is a deterministic function of its name: `<kind>_s<NN>_<take>` (e.g. `walk_s01_01`). Poses are
(T, 72) axis-angle values for the 24 SMPL joints at 120 Hz; translations are (T, 3) metres in SMPL's frame
(Y up, the body faces +Z at zero pose). Joint angles are built per joint as Euler angles and turned into
axis-angle; the root translation comes from a rough forward kinematics pass that keeps the lowest foot on the
ground and the stance foot from sliding, so the body walks rather than moonwalks.

SMPL conventions used (rotations are about the parent's rest axes): hip flexion (thigh forward) is negative x,
knee flexion positive x, ankle plantarflexion (toes down) positive x, spine flexion (lean forward) positive x;
arms come down from the T-pose with z = -75 deg on the left and +75 deg on the right, and swing forward with
negative x.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from farm.core.errors import FarmError
from farm.core.seeding import keyed_rng
from farm.core.skeleton import NUM_JOINTS, PARENTS

BUILTIN_RATE = 120.0
KINDS = ("walk", "run", "jump", "turn", "wave", "squat", "kick", "sit", "reach")
SUBJECT_COUNT = 20
TEST_SUBJECTS = frozenset({5, 10, 15, 20})  # whole subjects, 20% of them, as SURREAL splits CMU by subject
STANDING_ROOT_HEIGHT = 0.95  # metres; the body stands on its own, so only changes of this matter
_LIBRARY_SEED = 20170101  # changing it changes every built-in motion

# Sequence length range per kind, in seconds (several clips of 100 frames at 30 fps in the longer ones).
_DURATION_S = {
    "walk": (5.0, 20.0),
    "run": (4.0, 14.0),
    "jump": (5.0, 12.0),
    "turn": (6.0, 16.0),
    "wave": (4.0, 12.0),
    "squat": (6.0, 15.0),
    "kick": (5.0, 12.0),
    "sit": (8.0, 18.0),
    "reach": (5.0, 12.0),
}

# Approximate rest joint positions (metres) of an average adult, on SMPL's tree (farm.core.skeleton); enough
# for placing the root on the ground, not a body model.
REST_JOINTS = np.array(
    [
        [0.000, -0.240, 0.028],  # 0 pelvis
        [0.059, -0.331, 0.018],  # 1 left hip
        [-0.060, -0.331, 0.020],  # 2 right hip
        [0.004, -0.114, 0.002],  # 3 spine1
        [0.104, -0.709, 0.026],  # 4 left knee
        [-0.104, -0.713, 0.016],  # 5 right knee
        [0.002, 0.020, 0.024],  # 6 spine2
        [0.089, -1.135, -0.013],  # 7 left ankle
        [-0.092, -1.134, -0.014],  # 8 right ankle
        [0.003, 0.078, 0.025],  # 9 spine3
        [0.123, -1.191, 0.110],  # 10 left foot (toes)
        [-0.117, -1.193, 0.116],  # 11 right foot (toes)
        [-0.013, 0.300, 0.009],  # 12 neck
        [0.075, 0.212, -0.009],  # 13 left collar
        [-0.084, 0.210, -0.009],  # 14 right collar
        [0.008, 0.388, 0.051],  # 15 head
        [0.173, 0.248, -0.017],  # 16 left shoulder
        [-0.172, 0.245, -0.013],  # 17 right shoulder
        [0.429, 0.231, -0.043],  # 18 left elbow
        [-0.433, 0.232, -0.044],  # 19 right elbow
        [0.682, 0.237, -0.049],  # 20 left wrist
        [-0.685, 0.239, -0.049],  # 21 right wrist
        [0.767, 0.229, -0.063],  # 22 left hand
        [-0.770, 0.226, -0.067],  # 23 right hand
    ]
)

# Joint indices by name, for readable pose building.
PELVIS, L_HIP, R_HIP, SPINE1, L_KNEE, R_KNEE, SPINE2, L_ANKLE, R_ANKLE, SPINE3 = range(10)
L_TOE, R_TOE, NECK, L_COLLAR, R_COLLAR, HEAD, L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW = range(10, 20)
L_WRIST, R_WRIST, L_HAND, R_HAND = range(20, 24)
_FOOT_POINTS = ((L_ANKLE, L_TOE), (R_ANKLE, R_TOE))
_GRAVITY = 9.81

Array = NDArray[np.float64]


@dataclass(frozen=True)
class BuiltinMotion:
    name: str
    subject: str
    split: Literal["train", "test"]
    kind: str
    frames: int  # at BUILTIN_RATE


def _rng(*parts: str | int) -> np.random.Generator:
    """The library's generator for these keys (strings count as their crc32: see farm.core.seeding)."""
    return keyed_rng(_LIBRARY_SEED, *parts)


def _takes(kind: str, subject: int) -> int:
    return int(_rng("takes", kind, subject).integers(1, 4))


def _frames(kind: str, subject: int, take: int) -> int:
    low, high = _DURATION_S[kind]
    return int(
        _rng("frames", kind, subject, take).integers(int(low * BUILTIN_RATE), int(high * BUILTIN_RATE))
    )


@lru_cache(maxsize=1)
def _library() -> dict[str, BuiltinMotion]:
    motions: dict[str, BuiltinMotion] = {}
    for subject in range(1, SUBJECT_COUNT + 1):
        split: Literal["train", "test"] = "test" if subject in TEST_SUBJECTS else "train"
        for kind in KINDS:
            for take in range(1, _takes(kind, subject) + 1):
                name = f"{kind}_s{subject:02d}_{take:02d}"
                motions[name] = BuiltinMotion(
                    name, f"s{subject:02d}", split, kind, _frames(kind, subject, take)
                )
    return motions


def builtin_library() -> list[BuiltinMotion]:
    """Every built-in sequence (metadata only; nothing is generated)."""
    return list(_library().values())


def builtin_motion(name: str) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Poses (T, 72) and root translations (T, 3), float32, at BUILTIN_RATE, identical on every call."""
    motion = _library().get(name)
    if motion is None:
        raise FarmError(
            f"there is no built-in motion named {name!r}; use a name from farm.assets.builtin_motions.builtin_library(), "
            "e.g. 'walk_s01_01'"
        )
    subject = int(motion.subject[1:])
    take = int(name.rsplit("_", 1)[1])
    style = _Style.draw(_rng("style", subject))
    rng = _rng("take", motion.kind, subject, take)
    t = np.arange(motion.frames) / BUILTIN_RATE
    motion_builder = _BUILDERS[motion.kind]
    pose = motion_builder(t, style, rng)
    poses, trans = pose.finish()
    return poses.astype(np.float32), trans.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Small signal helpers


def _wrap(angle: Array) -> Array:
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _bump(phase: Array, centre: float, width: float) -> Array:
    """A smooth periodic bump of height 1 at `centre` (radians)."""
    return np.exp(-0.5 * (_wrap(phase - centre) / width) ** 2)


def _smoothstep(x: Array) -> Array:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _pulse(t: Array, start: float, rise: float, hold: float, fall: float) -> Array:
    """0 -> 1 over `rise` seconds from `start`, stays 1 for `hold`, back to 0 over `fall`."""
    up = _smoothstep((t - start) / rise)
    down = _smoothstep((t - start - rise - hold) / fall)
    return up - down


def _noise(rng: np.random.Generator, t: Array, amplitude: float, fastest_hz: float = 0.6) -> Array:
    """Slow smooth wobble (a few random sinusoids) that keeps poses from looking mechanical."""
    out = np.zeros_like(t)
    for _ in range(3):
        freq = rng.uniform(0.08, fastest_hz)
        out += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    return amplitude * out / 2.0


def _events(
    rng: np.random.Generator, duration: float, length: tuple[float, float], gap: tuple[float, float]
) -> list[tuple[float, float]]:
    """Start times and lengths of repeated actions (a squat, a kick, ...) that fit in the sequence."""
    start = rng.uniform(*gap) * 0.6
    out = []
    while True:
        span = rng.uniform(*length)
        if start + span > duration - 0.3:
            break
        out.append((start, span))
        start += span + rng.uniform(*gap)
    if not out:  # short sequences still do the action once
        span = min(length[0], duration * 0.8)
        out.append((duration * 0.1, span))
    return out


def _ramp_in_out(t: Array, seconds: float) -> Array:
    return _smoothstep(t / seconds) * _smoothstep((t[-1] - t) / seconds)


# ---------------------------------------------------------------------------------------------------------
# Style and pose building


@dataclass(frozen=True)
class _Style:
    """How one subject moves: the same in every take, so subjects differ like real people do."""

    arms_down: float  # degrees from the T-pose
    arm_swing: float
    elbow: float
    lean: float  # torso forward lean while moving
    cadence: float  # walking strides per second
    stride: float  # hip swing amplitude scale
    knee_lift: float
    right_handed: bool

    @staticmethod
    def draw(rng: np.random.Generator) -> _Style:
        return _Style(
            arms_down=rng.uniform(68, 80),
            arm_swing=rng.uniform(12, 24),
            elbow=rng.uniform(10, 25),
            lean=rng.uniform(2, 7),
            cadence=rng.uniform(0.85, 1.0),
            stride=rng.uniform(0.9, 1.1),
            knee_lift=rng.uniform(0.9, 1.1),
            right_handed=bool(rng.random() < 0.8),
        )


class _Pose:
    """Per-frame Euler angles in degrees, (T, 24, 3) as (x, y, z); a joint's rotation is Rx @ Ry @ Rz.

    The root is kept apart: heading (yaw, radians) and pelvis pitch/roll/yaw wobble in degrees, composed
    as Ry(heading + yaw) @ Rx(pitch) @ Rz(roll).
    """

    def __init__(self, t: Array, style: _Style, rng: np.random.Generator) -> None:
        self.t = t
        self.deg = np.zeros((len(t), NUM_JOINTS, 3))
        self.heading = np.full(len(t), rng.uniform(0, 2 * np.pi))
        self.pitch = np.zeros(len(t))
        self.roll = np.zeros(len(t))
        self.yaw = np.zeros(len(t))
        self.airborne = np.zeros(len(t), dtype=bool)
        self.flight_height = np.zeros(len(t))
        self.flight_velocity = np.zeros((len(t), 2))  # horizontal (x, z) while airborne
        self.smooth_velocity_s = 0.0  # average the foot-locked velocity over this window (running)
        self.stance: Array | None = None  # (T, 2) weight of each foot on the ground, if the motion knows it
        self.style = style
        self.rng = rng

    def arm(self, side: int, down: Array | float, swing: Array | float, elbow: Array | float) -> None:
        """side +1 left, -1 right; `down` degrees below horizontal, `swing` forward, elbow flexion forward."""
        shoulder, elbow_joint = (L_SHOULDER, L_ELBOW) if side > 0 else (R_SHOULDER, R_ELBOW)
        self.deg[:, shoulder, 2] = -side * np.asarray(down)
        self.deg[:, shoulder, 0] = -np.asarray(swing)
        self.deg[:, elbow_joint, 1] = -side * np.asarray(elbow)

    def leg(self, side: int, thigh_flex: Array, knee: Array, foot_pitch: Array | float = 0.0) -> None:
        """Angles in world terms: thigh flexion forward, knee flexion, foot pitch (toes down) relative to the
        ground; local joint angles follow from subtracting what the parents already rotate."""
        hip, knee_joint, ankle = (L_HIP, L_KNEE, L_ANKLE) if side > 0 else (R_HIP, R_KNEE, R_ANKLE)
        self.deg[:, hip, 0] = -thigh_flex - self.pitch
        self.deg[:, knee_joint, 0] = knee
        self.deg[:, ankle, 0] = thigh_flex - knee + foot_pitch

    def torso(self, lean: Array | float, twist: Array | float = 0.0, side_bend: Array | float = 0.0) -> None:
        """Spread a forward lean, a twist and a side bend over the three spine joints."""
        for joint, share in ((SPINE1, 0.3), (SPINE2, 0.3), (SPINE3, 0.4)):
            self.deg[:, joint, 0] = share * np.asarray(lean)
            self.deg[:, joint, 1] = share * np.asarray(twist)
            self.deg[:, joint, 2] = share * np.asarray(side_bend)

    def idle(self, amount: float = 1.0) -> None:
        """The small sway and fidget of a person standing, added on top of whatever else is set."""
        t, rng = self.t, self.rng
        self.roll += _noise(rng, t, 1.5 * amount, 0.3)
        for joint, amplitude in ((SPINE2, 2.0), (NECK, 3.0), (HEAD, 3.0), (L_COLLAR, 1.5), (R_COLLAR, 1.5)):
            for axis in range(3):
                self.deg[:, joint, axis] += _noise(rng, t, amplitude * amount)
        for joint in (L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST):
            for axis in range(3):
                self.deg[:, joint, axis] += _noise(rng, t, 3.0 * amount)

    def gaze_forward(self) -> None:
        """Neck and head undo part of the torso's pitch and twist, as people keep looking where they go."""
        torso_pitch = self.pitch + self.deg[:, [SPINE1, SPINE2, SPINE3], 0].sum(axis=1)
        torso_twist = self.yaw + self.deg[:, [SPINE1, SPINE2, SPINE3], 1].sum(axis=1)
        for joint in (NECK, HEAD):
            self.deg[:, joint, 0] -= 0.35 * torso_pitch
            self.deg[:, joint, 1] -= 0.4 * torso_twist
        # Arms hang by gravity: a torso leaning forward does not swing them backwards.
        for joint in (L_SHOULDER, R_SHOULDER):
            self.deg[:, joint, 0] -= 0.8 * torso_pitch

    def finish(self) -> tuple[Array, Array]:
        from scipy.spatial.transform import Rotation

        frames = len(self.t)
        rad = np.deg2rad(self.deg)
        # Extrinsic "zyx": z first, then y, then x about fixed axes, i.e. Rx @ Ry @ Rz.
        local = Rotation.from_euler("zyx", rad[..., ::-1].reshape(-1, 3))
        root = Rotation.from_euler(
            "zxy",
            np.stack([np.deg2rad(self.roll), np.deg2rad(self.pitch), self.heading + np.deg2rad(self.yaw)], 1),
        )
        rotvec = local.as_rotvec().reshape(frames, NUM_JOINTS, 3)
        rotvec[:, 0] = root.as_rotvec()
        poses = rotvec.reshape(frames, 72)
        return poses, self._translation(poses)

    def _translation(self, poses: Array) -> Array:
        joints = approx_joint_positions(poses, np.zeros((len(poses), 3)))
        rest = REST_JOINTS
        # Height of each foot's lowest point above where it rests in the standing pose.
        foot_height = np.stack(
            [np.minimum(joints[:, a, 1] - rest[a, 1], joints[:, b, 1] - rest[b, 1]) for a, b in _FOOT_POINTS],
            1,
        )
        drop = foot_height.min(axis=1)
        trans = np.zeros((len(poses), 3))
        trans[:, 1] = STANDING_ROOT_HEIGHT - drop + self.flight_height
        # The foot nearest the ground stays put, so the root moves by minus that foot's motion.
        ankles = joints[:, [L_ANKLE, R_ANKLE]][:, :, [0, 2]]
        step = np.diff(ankles, axis=0, prepend=ankles[:1])
        weight = np.exp(-(foot_height - drop[:, None]) / 0.01) if self.stance is None else self.stance + 1e-6
        velocity = -(weight[:, :, None] * step).sum(1) / weight.sum(1)[:, None]
        if self.smooth_velocity_s > 0:
            width = max(1, int(self.smooth_velocity_s * BUILTIN_RATE))
            kernel = np.ones(width) / width
            padded = np.pad(velocity, ((width, width), (0, 0)), mode="edge")
            velocity = np.stack([np.convolve(padded[:, i], kernel, "same") for i in range(2)], 1)[
                width:-width
            ]
        velocity[self.airborne] = self.flight_velocity[self.airborne] / BUILTIN_RATE
        trans[:, [0, 2]] = np.cumsum(velocity, axis=0)
        return trans


def approx_joint_positions(poses: NDArray[np.floating], trans: NDArray[np.floating]) -> Array:
    """World positions (T, 24, 3) of the 24 joints on an approximate average skeleton (for checks and
    sketches; the real joints come from the body model)."""
    from scipy.spatial.transform import Rotation

    poses = np.asarray(poses, dtype=np.float64)
    frames = len(poses)
    rot = Rotation.from_rotvec(poses.reshape(-1, 3)).as_matrix().reshape(frames, NUM_JOINTS, 3, 3)
    world_rot = np.empty_like(rot)
    pos = np.empty((frames, NUM_JOINTS, 3))
    world_rot[:, 0] = rot[:, 0]
    pos[:, 0] = REST_JOINTS[0] + np.asarray(trans, dtype=np.float64)
    for j in range(1, NUM_JOINTS):
        p = PARENTS[j]
        world_rot[:, j] = world_rot[:, p] @ rot[:, j]
        pos[:, j] = pos[:, p] + world_rot[:, p] @ (REST_JOINTS[j] - REST_JOINTS[p])
    return pos


# ---------------------------------------------------------------------------------------------------------
# Motions


def _phase(t: Array, rng: np.random.Generator, cadence: float, variation: float) -> Array:
    """Gait phase in radians; the stride rate drifts slowly so one take holds several speeds."""
    rate = cadence * (1 + variation * np.sin(2 * np.pi * rng.uniform(0.03, 0.1) * t + rng.uniform(0, 6.3)))
    return rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.cumsum(rate) / BUILTIN_RATE


def _gait(pose: _Pose, phase: Array, amount: Array, running: bool, amplitude: float) -> None:
    """A walking or running cycle. Phase 0 of a leg is mid-swing; heel strike is near pi/2.

    `amount` (0..1) fades the cycle in and out; `amplitude` scales the hip swing (stride length).
    """
    s = pose.style
    hip_amp = amplitude * s.stride * (38.0 if running else 25.0)
    knee_swing = s.knee_lift * (95.0 if running else 58.0)
    knee_load = 35.0 if running else 10.0
    # Heel strike comes just after the thigh's peak flexion, so the stance leg extends from the start.
    strike = np.pi / 2 + 0.3
    stance_half = (0.42 if running else 0.6) * np.pi
    stance_centre = strike + stance_half
    lean = (12.0 if running else s.lean) * amount
    pose.pitch = pose.pitch + (6.0 if running else 3.0) * amount
    pose.yaw = pose.yaw - (8.0 if running else 5.0) * amount * np.sin(phase)
    pose.roll = pose.roll + 3.0 * amount * np.sin(phase)
    stances = []
    for side, leg_phase in ((1, phase), (-1, phase + np.pi)):
        thigh = amount * (hip_amp * np.sin(leg_phase) + (12.0 if running else 4.0))
        knee = amount * (
            knee_swing * (_bump(leg_phase, -0.2, 0.6) if running else _bump(leg_phase, 0.2, 0.6))
            + knee_load * _bump(leg_phase, strike + 0.5, 0.4)
            + 4.0
        )
        stance = 1 / (1 + np.exp(-12 * (np.cos(leg_phase - stance_centre) - np.cos(stance_half))))
        stances.append(stance)
        # Flat on the ground in stance (foot pitch 0), a push-off, and toes up a little in swing.
        # Swing: the ankle near neutral relative to the shin (foot pitch = knee - thigh - 5).
        push_off = _bump(leg_phase, strike + 2 * stance_half - 0.35, 0.35)
        foot = (1 - stance) * (knee - thigh - 5.0 * amount) + 18.0 * amount * push_off
        pose.leg(side, thigh, knee, foot)
        toe = L_TOE if side > 0 else R_TOE
        pose.deg[:, toe, 0] = -20.0 * amount * push_off
        # Arms swing against the legs: the left arm forward while the left leg is behind.
        swing = amount * (s.arm_swing * (1.6 if running else 1.0) * amplitude) * -np.sin(leg_phase)
        elbow = s.elbow + amount * ((75.0 if running else 10.0) + 12.0 * np.clip(swing / 20.0, 0, None))
        pose.arm(side, s.arms_down - (10.0 if running else 0.0) * amount, swing, elbow)
    pose.torso(lean, twist=(10.0 if running else 6.0) * amount * np.sin(phase))
    pose.stance = np.stack(stances, 1)


def _walk(t: Array, style: _Style, rng: np.random.Generator) -> _Pose:
    pose = _Pose(t, style, rng)
    amplitude = rng.uniform(0.85, 1.2)
    phase = _phase(t, rng, style.cadence * rng.uniform(0.9, 1.1), 0.08)
    # Paths curve gently instead of running on rails.
    pose.heading = pose.heading + np.deg2rad(rng.uniform(-40, 40)) * np.sin(
        2 * np.pi * rng.uniform(0.02, 0.06) * t
    )
    _gait(pose, phase, _ramp_in_out(t, 0.8), running=False, amplitude=amplitude)
    pose.idle(0.5)
    pose.gaze_forward()
    return pose


def _run(t: Array, style: _Style, rng: np.random.Generator) -> _Pose:
    pose = _Pose(t, style, rng)
    phase = _phase(t, rng, style.cadence * rng.uniform(1.3, 1.55), 0.06)
    pose.heading = pose.heading + np.deg2rad(rng.uniform(-30, 30)) * np.sin(
        2 * np.pi * rng.uniform(0.02, 0.05) * t
    )
    _gait(pose, phase, _ramp_in_out(t, 1.0), running=True, amplitude=rng.uniform(0.85, 1.15))
    # A short flight between steps: the body lifts off twice a stride.
    pose.flight_height = rng.uniform(0.03, 0.06) * _ramp_in_out(t, 1.0) * _bump(2 * phase, 0.8 * np.pi, 0.5)
    pose.smooth_velocity_s = 0.35
    pose.idle(0.3)
    pose.gaze_forward()
    return pose


def _turn(t: Array, style: _Style, rng: np.random.Generator) -> _Pose:
    """Walking with sharp turns, or stepping on the spot while turning around."""
    pose = _Pose(t, style, rng)
    on_the_spot = rng.random() < 0.4
    amplitude = rng.uniform(0.25, 0.4) if on_the_spot else rng.uniform(0.7, 1.0)
    phase = _phase(t, rng, style.cadence * rng.uniform(0.85, 1.0), 0.05)
    turn = np.zeros_like(t)
    for start, span in _events(rng, t[-1], (1.0, 2.5), (0.8, 2.5)):
        turn += np.deg2rad(rng.choice([-1, 1]) * rng.uniform(45, 180)) * _smoothstep((t - start) / span)
    pose.heading = pose.heading + turn
    _gait(pose, phase, _ramp_in_out(t, 0.8), running=False, amplitude=amplitude)
    if not on_the_spot:  # lean into the turn (a positive heading rate turns left; negative roll leans left)
        pose.roll = pose.roll - 4.0 * np.gradient(turn, t)
    pose.idle(0.5)
    pose.gaze_forward()
    return pose


def _crouch(pose: _Pose, depth: Array, knee_max: float, lean: Array | float = 0.0) -> None:
    """Both legs bent to `depth` (0..1) of `knee_max` with the feet flat and the trunk over the feet."""
    knee = depth * knee_max
    thigh = 0.62 * knee
    pose.pitch = pose.pitch + 0.3 * thigh
    for side in (1, -1):
        pose.leg(side, thigh, knee)
    pose.torso(0.25 * thigh + lean)


def _jump(t: Array, style: _Style, rng: np.random.Generator) -> _Pose:
    pose = _Pose(t, style, rng)
    forward = rng.random() < 0.5
    crouch = np.zeros_like(t)
    arms_back = np.zeros_like(t)
    arms_up = np.zeros_like(t)
    tuck = np.zeros_like(t)
    heading = pose.heading[0]
    for start, _ in _events(rng, t[-1], (2.2, 2.6), (0.4, 1.5)):
        height = rng.uniform(0.15, 0.4)
        flight = 2 * np.sqrt(2 * height / _GRAVITY)
        takeoff = start + 0.7
        landing = takeoff + flight
        depth = rng.uniform(0.5, 0.85)
        crouch += depth * _pulse(t, start, 0.55, 0.05, 0.12)  # load, then extend into the take-off
        crouch += depth * 0.8 * _pulse(t, landing - 0.02, 0.12, 0.1, 0.6)  # absorb the landing
        arms_back += _pulse(t, start, 0.55, 0.05, 0.12)
        arms_up += _pulse(t, takeoff - 0.25, 0.3, flight - 0.1, 0.4)
        tuck += _pulse(t, takeoff, flight / 2, 0.0, flight / 2)
        in_air = (t >= takeoff) & (t < landing)
        tau = t[in_air] - takeoff
        pose.flight_height[in_air] += np.sqrt(2 * _GRAVITY * height) * tau - 0.5 * _GRAVITY * tau**2
        pose.airborne |= in_air
        if forward:
            speed = rng.uniform(0.6, 1.6)
            pose.flight_velocity[in_air] = speed * np.array([np.sin(heading), np.cos(heading)])
    _crouch(pose, crouch, rng.uniform(90, 120))
    for side in (1, -1):
        knee_joint = L_KNEE if side > 0 else R_KNEE
        ankle = L_ANKLE if side > 0 else R_ANKLE
        hip = L_HIP if side > 0 else R_HIP
        pose.deg[:, knee_joint, 0] += 35.0 * tuck
        pose.deg[:, hip, 0] -= 25.0 * tuck
        pose.deg[:, ankle, 0] += 25.0 * arms_up  # toes point down in the air
        # Arms swing back while loading, then forward and up through the flight.
        lifted = np.maximum(arms_up, arms_back)
        pose.arm(
            side, style.arms_down + (90 - style.arms_down) * lifted, -50 * arms_back + 150 * arms_up, 20.0
        )
    pose.idle(0.5)
    pose.gaze_forward()
    return pose


def _squat(t: Array, style: _Style, rng: np.random.Generator) -> _Pose:
    pose = _Pose(t, style, rng)
    depth = np.zeros_like(t)
    for start, span in _events(rng, t[-1], (2.0, 3.5), (0.3, 1.5)):
        down = span * rng.uniform(0.35, 0.5)
        hold = span * rng.uniform(0.0, 0.2)
        depth += rng.uniform(0.55, 1.0) * _pulse(t, start, down, hold, span - down - hold)
    _crouch(pose, depth, rng.uniform(100, 125), lean=5.0 * depth)
    arms_forward = rng.uniform(0.3, 1.0)  # some hold their arms out for balance, some keep them low
    for side in (1, -1):
        pose.arm(side, style.arms_down + 15 * arms_forward * depth, 85 * arms_forward * depth, style.elbow)
    pose.idle(1.0)
    pose.gaze_forward()
    return pose


def _kick(t: Array, style: _Style, rng: np.random.Generator) -> _Pose:
    pose = _Pose(t, style, rng)
    kick_side = 1 if not style.right_handed else -1
    for side in (1, -1):
        guard = rng.uniform(0.4, 1.0)  # fists up for some takes, loose arms for others
        pose.arm(side, style.arms_down - 15 * guard, 35 * guard, style.elbow + 90 * guard)
    thigh = np.zeros((2, len(t)))
    knee = np.zeros((2, len(t)))
    for start, span in _events(rng, t[-1], (1.0, 1.4), (0.5, 1.5)):
        leg = 0 if rng.random() < 0.75 else 1  # mostly the preferred leg
        height = rng.uniform(60, 95)
        lift = _pulse(t, start, 0.3 * span, 0.1 * span, 0.6 * span)
        extend = _pulse(t, start + 0.2 * span, 0.12 * span, 0.1 * span, 0.2 * span)
        thigh[leg] += height * lift
        knee[leg] += 100 * lift * (1 - extend)
        # The standing leg gives a little.
        knee[1 - leg] += 12 * lift
    for i, side in enumerate((kick_side, -kick_side)):
        # Off the ground the ankle points a little (20 deg) instead of keeping the foot level.
        airborne = _smoothstep(thigh[i] / 25.0)
        pose.leg(side, thigh[i], knee[i] + 5, airborne * (knee[i] - thigh[i] + 20))
    pose.torso(-0.2 * thigh.max(axis=0))  # lean back to balance the leg
    pose.idle(0.8)
    pose.gaze_forward()
    return pose


def _sit(t: Array, style: _Style, rng: np.random.Generator) -> _Pose:
    """Sit down on a chair (not rendered) and stand up again, repeatedly."""
    pose = _Pose(t, style, rng)
    seat = np.zeros_like(t)
    transit = np.zeros_like(t)
    for start, span in _events(rng, t[-1], (6.0, 9.0), (0.5, 2.0)):
        down = rng.uniform(1.4, 2.2)
        up = rng.uniform(1.2, 1.8)
        seat += _pulse(t, start, down, span - down - up, up)
        transit += _pulse(t, start, down / 2, 0, down / 2) + _pulse(t, start + span - up, up / 2, 0, up / 2)
    seat_height = rng.uniform(0.85, 1.0)
    thigh = 90 * seat_height * seat
    shin = 18 * transit  # knees forward over the toes while getting up or down
    pose.pitch = pose.pitch + 10 * transit
    for side in (1, -1):
        pose.leg(side, thigh, thigh + shin)
    pose.torso(35 * transit - 6 * seat)
    hands_on_lap = rng.uniform(0.3, 1.0)
    for side in (1, -1):
        pose.arm(side, style.arms_down, 25 * hands_on_lap * seat, style.elbow + 50 * hands_on_lap * seat)
    pose.idle(1.0)
    pose.gaze_forward()
    return pose


def _wave(t: Array, style: _Style, rng: np.random.Generator) -> _Pose:
    pose = _Pose(t, style, rng)
    for side in (1, -1):
        pose.arm(side, style.arms_down, 0.0, style.elbow)
    main = -1 if style.right_handed else 1
    for start, span in _events(rng, t[-1], (2.0, 4.0), (0.5, 2.5)):
        both = rng.random() < 0.25
        raise_ = _pulse(t, start, 0.5, span - 1.0, 0.5)
        rate = rng.uniform(1.5, 3.0)
        sweep = rng.uniform(20, 35)
        elevation = rng.uniform(20, 60)
        for side in (main, -main) if both else (main,):
            shoulder = L_SHOULDER if side > 0 else R_SHOULDER
            elbow = L_ELBOW if side > 0 else R_ELBOW
            # Upper arm out to the side and up, forearm up, swinging side to side about the elbow.
            pose.deg[:, shoulder, 2] += side * (style.arms_down + elevation) * raise_
            pose.deg[:, shoulder, 0] -= 20 * raise_
            pose.deg[:, elbow, 1] *= 1 - raise_
            pose.deg[:, elbow, 2] += side * raise_ * (80 + sweep * np.sin(2 * np.pi * rate * t))
    pose.idle(1.0)
    pose.gaze_forward()
    return pose


def _reach(t: Array, style: _Style, rng: np.random.Generator) -> _Pose:
    """Reach forward, up, to the side or down for something, one arm at a time."""
    pose = _Pose(t, style, rng)
    down = np.full((2, len(t)), style.arms_down)
    swing = np.zeros((2, len(t)))
    elbow = np.full((2, len(t)), style.elbow)
    bend = np.zeros_like(t)
    for start, span in _events(rng, t[-1], (1.6, 3.0), (0.4, 1.5)):
        arm = 0 if rng.random() < (0.3 if style.right_handed else 0.7) else 1  # 0 left, 1 right
        reach = _pulse(t, start, 0.4 * span, 0.2 * span, 0.4 * span)
        target = rng.choice(["forward", "up", "side", "down"])
        if target == "forward":
            down[arm] += (90 - style.arms_down) * reach
            swing[arm] += rng.uniform(70, 100) * reach
        elif target == "up":
            swing[arm] += rng.uniform(130, 165) * reach
        elif target == "side":
            down[arm] -= (style.arms_down + rng.uniform(-10, 30)) * reach
            swing[arm] += rng.uniform(0, 30) * reach
        else:
            swing[arm] += rng.uniform(40, 70) * reach
            bend += rng.uniform(25, 50) * reach
        elbow[arm] -= (style.elbow - 3) * reach
    for i, side in enumerate((1, -1)):
        pose.arm(side, down[i], swing[i], elbow[i])
    _crouch(pose, bend / 250.0, 60.0, lean=bend)
    pose.idle(0.8)
    pose.gaze_forward()
    return pose


_BUILDERS: dict[str, Callable[[Array, _Style, np.random.Generator], _Pose]] = {
    "walk": _walk,
    "run": _run,
    "jump": _jump,
    "turn": _turn,
    "wave": _wave,
    "squat": _squat,
    "kick": _kick,
    "sit": _sit,
    "reach": _reach,
}
