"""A contact sheet of the free bodies in several shapes and poses: orthographic, flat-shaded, no Blender."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from farm.core.settings import Settings

PANEL = 240  # pixels per panel side
# One colour per SMPL part label 1..24 (left parts warm, right parts cool, trunk and head neutral).
PART_COLOURS = np.array(
    [
        [0, 0, 0], [200, 200, 200], [230, 120, 80], [80, 140, 230], [170, 170, 150], [240, 170, 60],
        [60, 190, 220], [150, 150, 130], [220, 80, 60], [60, 100, 220], [130, 130, 110], [250, 210, 60],
        [90, 220, 170], [180, 160, 200], [230, 90, 150], [90, 160, 110], [250, 220, 180], [240, 140, 110],
        [110, 170, 240], [220, 110, 40], [40, 150, 200], [250, 190, 120], [120, 220, 250], [200, 60, 100],
        [60, 200, 120],
    ],
    dtype=np.float64,
)  # fmt: skip


def _axis_angle_pose(entries: dict[int, tuple[float, float, float]]) -> np.ndarray:
    pose = np.zeros(72)
    for joint, rotvec in entries.items():
        pose[3 * joint : 3 * joint + 3] = rotvec
    return pose


POSES = {
    "T-pose": _axis_angle_pose({}),
    "walk": _axis_angle_pose(
        {1: (-0.5, 0, 0), 2: (0.4, 0, 0), 4: (0.3, 0, 0), 5: (0.6, 0, 0), 16: (0, 0, -1.2), 17: (0, 0, 1.2),
         18: (0, -0.3, 0), 19: (0, 0.3, 0)}
    ),
    "squat": _axis_angle_pose(
        {1: (-1.4, 0, -0.2), 2: (-1.4, 0, 0.2), 4: (1.9, 0, 0), 5: (1.9, 0, 0), 7: (-0.3, 0, 0), 8: (-0.3, 0, 0),
         3: (0.4, 0, 0), 16: (0.0, -1.0, 0), 17: (0.0, 1.0, 0)}
    ),
    "wave": _axis_angle_pose({16: (0, 0, 0.2), 18: (0, 0, 1.5), 17: (0, 0, 1.2), 19: (0, 0.4, 0), 12: (0, 0.3, 0)}),
}  # fmt: skip


def render_panel(
    verts: np.ndarray, faces: np.ndarray, face_colours: np.ndarray, yaw: float = 0.0, size: int = PANEL
) -> np.ndarray:
    """(size,size,3) uint8: an orthographic view along -Z after turning the body by `yaw` about Y."""
    from PIL import Image, ImageDraw

    c, s = np.cos(yaw), np.sin(yaw)
    v = verts @ np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]]).T
    # One scale for every panel (2.1 m fill a panel) and feet on the panel's floor, so heights compare.
    scale = size / 2.1
    centre_x = (v[:, 0].max() + v[:, 0].min()) / 2
    xy = np.stack(
        [(v[:, 0] - centre_x) * scale + size / 2, size * 0.97 - (v[:, 1] - v[:, 1].min()) * scale], axis=1
    )
    tri = v[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    light = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])
    shade = 0.35 + 0.65 * np.abs(normal @ light)
    colours = np.clip(face_colours * shade[:, None], 0, 255).astype(int)
    img = Image.new("RGB", (size, size), (245, 245, 240))
    draw = ImageDraw.Draw(img)
    for i in np.argsort(tri[:, :, 2].mean(axis=1), kind="stable"):  # painter's algorithm, far to near
        draw.polygon([tuple(p) for p in xy[faces[i]]], fill=tuple(colours[i]))
    return np.asarray(img)


def body_sheet(out: Path, settings: Settings | None = None) -> Path:
    """Rows: female, male, neutral. Columns: shapes (betas) and poses, coloured by part label; one textured."""
    from PIL import Image, ImageDraw

    from farm.assets.body import load_body_model
    from farm.assets.textures import load_texture

    columns = [
        ("betas 0, T-pose", np.zeros(10), "T-pose", 0.0),
        ("beta1 +2", np.eye(10)[0] * 2, "T-pose", 0.0),
        ("beta1 -2", np.eye(10)[0] * -2, "T-pose", 0.0),
        ("beta2 +2, walk, side", np.eye(10)[1] * 2, "walk", np.pi / 2),
        ("squat, 3/4 view", np.zeros(10), "squat", 0.7),
        ("wave, textured", np.zeros(10), "wave", 0.3),
    ]
    rows = []
    for gender in ("female", "male", "neutral"):
        model = load_body_model("free", gender, settings)
        label_colours = PART_COLOURS[model.part_labels[model.faces].max(axis=1)]
        tex_gender, tex_index = {"female": ("female", 3), "male": ("male", 3), "neutral": ("female", 7)}[
            gender
        ]
        tex = load_texture(f"builtin:texture/{tex_gender}/train/{tex_index:04d}", settings=settings)
        uv = model.vt[model.ft].mean(axis=1)  # one texel per face is enough at this size
        h, w = tex.shape[:2]
        tex_colours = tex[
            np.clip(((1 - uv[:, 1]) * h).astype(int), 0, h - 1), np.clip((uv[:, 0] * w).astype(int), 0, w - 1)
        ].astype(np.float64)
        panels = []
        for title, betas, pose, yaw in columns:
            verts = model.evaluate(POSES[pose][None], betas, np.zeros((1, 3))).vertices[0]
            colours = tex_colours if "textured" in title else label_colours
            panel = Image.fromarray(render_panel(verts, model.faces, colours, yaw))
            ImageDraw.Draw(panel).text((4, 4), f"{gender}: {title}", fill=(20, 20, 20))
            panels.append(np.asarray(panel))
        rows.append(np.concatenate(panels, axis=1))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(out)
    return out
