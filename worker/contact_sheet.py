"""A contact sheet for people: a few frames of a clip, one row each, showing RGB with the 2D joints and
skeleton, segmentation in colour, the instances (one colour per person) with their boxes, depth, optical flow
(hue = direction, brightness = speed) and normals; and, for a clip with correspondence (`<name>_corr.mat`),
the texture UV seen at each pixel as colour (red = u, green = v)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from farm.core.skeleton import NUM_JOINTS, PARENTS
from worker.clip_files import BadClipFile, read_corr, read_info, read_manifest, read_pass
from worker.video import read_mp4

COLUMNS = ("rgb", "zoom: rgb + joints", "segmentation", "instances + boxes", "depth", "flow (hue = direction)",
           "normal")  # fmt: skip
CORR_COLUMN = "uv (red = u, green = v)"
PERSON_COLOURS = np.array([[0, 0, 0], [230, 60, 60], [60, 200, 90], [70, 120, 240], [240, 200, 50]], np.uint8)


def part_colours() -> np.ndarray:
    """25 distinct colours: black background, then 24 parts spread around the hue circle."""
    hues = (np.arange(NUM_JOINTS) * 7 % NUM_JOINTS) / NUM_JOINTS
    rgb = np.stack([_hsv_to_rgb(h, 0.75, 1.0) for h in hues])
    return np.vstack([[0, 0, 0], rgb * 255]).astype(np.uint8)


def _hsv_to_rgb(h: np.ndarray | float, s: np.ndarray | float, v: np.ndarray | float) -> np.ndarray:
    h, s, v = np.broadcast_arrays(np.asarray(h, float), np.asarray(s, float), np.asarray(v, float))
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)])  # (6, 3, ...)
    return np.take_along_axis(table, i[None, None], 0)[0].transpose(*range(1, h.ndim + 1), 0)


def colour_depth(depth: np.ndarray, fg: np.ndarray) -> np.ndarray:
    out = np.zeros((*depth.shape, 3), np.uint8)
    if fg.any():
        d = depth[fg]
        lo, hi = d.min(), d.max()
        out[fg] = (255 * (1 - 0.8 * (d - lo) / max(hi - lo, 1e-6)))[:, None].astype(np.uint8)  # near = bright
    return out


def colour_flow(flow: np.ndarray, scale: float | None = None) -> np.ndarray:
    mag = np.hypot(flow[..., 0], flow[..., 1])
    scale = scale or max(float(mag.max()), 1e-6)
    hue = (np.arctan2(flow[..., 1], flow[..., 0]) / (2 * np.pi)) % 1.0
    return (_hsv_to_rgb(hue, np.ones_like(hue), np.clip(mag / scale, 0, 1)) * 255).astype(np.uint8)


def colour_normal(normal: np.ndarray, fg: np.ndarray) -> np.ndarray:
    out = ((normal * [1, -1, -1] + 1) * 127.5).clip(0, 255).astype(np.uint8)  # x right, up, towards viewer
    out[~fg] = 0
    return out


def colour_uv(uv: np.ndarray) -> np.ndarray:
    """(H, W, 2) texture UV, NaN on background -> red = u, green = v, blue a quarter (background black)."""
    body = np.isfinite(uv).all(axis=-1)
    out = np.zeros((*uv.shape[:2], 3), np.uint8)
    out[body, :2] = (np.clip(uv[body], 0.0, 1.0) * 255).astype(np.uint8)
    out[body, 2] = 64
    return out


def draw_joints(rgb: np.ndarray, joints2d: np.ndarray) -> np.ndarray:
    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    pts = [tuple(map(float, p)) for p in joints2d]
    for j, parent in enumerate(PARENTS):
        if parent >= 0:
            draw.line([pts[parent], pts[j]], fill=(255, 255, 0), width=1)
    for x, y in pts:
        draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(255, 0, 0))
    return np.asarray(img)


def draw_instances(inst: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """inst (H, W) -> each person in their colour, with their box (P, 4) outlined (NaN: not shown)."""
    img = Image.fromarray(PERSON_COLOURS[np.minimum(inst, len(PERSON_COLOURS) - 1)])
    draw = ImageDraw.Draw(img)
    for k, box in enumerate(boxes):
        if not np.isnan(box).any():
            colour = tuple(int(c) for c in PERSON_COLOURS[min(k + 1, len(PERSON_COLOURS) - 1)])
            draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=colour, width=1)
    return np.asarray(img)


def contact_sheet(
    rgb: np.ndarray,
    segm: np.ndarray,
    depth: np.ndarray,
    flow: np.ndarray,
    normal: np.ndarray,
    joints2d: np.ndarray,
    frames: list[int] | None = None,
    title: str = "",
    inst: np.ndarray | None = None,
    bbox: np.ndarray | None = None,
    uv: np.ndarray | None = None,
) -> Image.Image:
    """Arrays (T, H, W, ...), joints2d (T, 24, 2) or (P, T, 24, 2), inst (T, H, W) (default: the body is person
    1), bbox (P, 4, T) (default: none drawn) and uv (T, H, W, 2) (default: no correspondence column) -> one
    image, a row per chosen frame."""
    T, H, W = segm.shape
    people_joints = joints2d if joints2d.ndim == 4 else joints2d[None]
    inst = (segm > 0).astype(np.uint8) if inst is None else inst
    bbox = np.full((len(people_joints), 4, T), np.nan) if bbox is None else bbox
    frames = frames if frames is not None else sorted({0, T // 3, 2 * T // 3, max(T - 2, 0)})
    colours = part_colours()
    flow_scale = max(float(np.abs(flow[frames]).max()), 1e-6)
    # Zoom on the body: one crop (the chosen frames' foreground plus a margin) for every tile.
    ys, xs = np.nonzero(segm[frames].any(axis=0))
    if len(ys):
        cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
        half_h = max((ys.max() - ys.min()) / 2 + 12, H / 4)
        half_w = half_h * W / H
        y0 = int(np.clip(cy - half_h, 0, max(H - 2 * half_h, 0)))
        x0 = int(np.clip(cx - half_w, 0, max(W - 2 * half_w, 0)))
        box = (x0, y0, min(W, x0 + int(2 * half_w)), min(H, y0 + int(2 * half_h)))
    else:
        box = (0, 0, W, H)

    def fit(tile: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(tile).crop(box).resize((W, H), Image.Resampling.NEAREST))

    rows = []
    for t in frames:
        fg = segm[t] > 0
        zoomed = fit(rgb[t])
        for person in people_joints:
            zoomed = draw_joints(
                zoomed, (person[t] - box[:2]) * [W / (box[2] - box[0]), H / (box[3] - box[1])]
            )
        tiles = [
            rgb[t],
            zoomed,
            fit(colours[np.minimum(segm[t], NUM_JOINTS)]),
            fit(draw_instances(inst[t], bbox[:, :, t])),
            fit(colour_depth(depth[t], fg)),
            fit(colour_flow(flow[t], flow_scale)),
            fit(colour_normal(normal[t], fg)),
        ]
        if uv is not None:
            tiles.append(fit(colour_uv(uv[t])))
        rows.append(np.concatenate([np.pad(x, ((2, 2), (2, 2), (0, 0))) for x in tiles], axis=1))
    header = 16
    sheet = np.concatenate(rows, axis=0)
    canvas = Image.new("RGB", (sheet.shape[1], sheet.shape[0] + header), (40, 40, 40))
    canvas.paste(Image.fromarray(sheet), (0, header))
    draw = ImageDraw.Draw(canvas)
    for i, name in enumerate(COLUMNS + ((CORR_COLUMN,) if uv is not None else ())):
        draw.text((i * (W + 4) + 4, 2), name, fill=(230, 230, 230))
    if title:
        draw.text((canvas.width - 8 * len(title) - 4, 2), title, fill=(180, 180, 180))
    for r, t in enumerate(frames):
        draw.text((6, header + r * (H + 4) + 4), f"frame {t + 1}", fill=(255, 255, 255))
    return canvas


def contact_sheet_from_files(clip_dir: Path, name: str, frames: list[int] | None = None) -> Image.Image:
    """The same sheet, read back from a clip's SURREAL files (what a dataset user sees) by the reader `farm qc`
    and the dataset share (worker/clip_files.py: every file bounded by the clip's spec)."""
    clip_dir = Path(clip_dir)
    spec, _, T = read_manifest(clip_dir, name)
    W, H, P = spec.camera.width, spec.camera.height, len(spec.people)
    info = read_info(clip_dir / f"{name}_info.mat", T, P)
    if "joints2D" not in info:
        raise BadClipFile(clip_dir / f"{name}_info.mat", "lacks joints2D")
    order = (0, 3, 2, 1) if P > 1 else (2, 1, 0)  # SURREACT's P x 2 x 24 x T, or SURREAL's 2 x 24 x T

    def frames_of(prefix: str) -> np.ndarray:
        return read_pass(clip_dir / f"{name}_{prefix}.mat", prefix, T, W, H)

    corr = clip_dir / f"{name}_corr.mat"

    return contact_sheet(
        rgb=read_mp4(clip_dir / f"{name}.mp4", W, H, T),
        segm=frames_of("segm"),
        depth=frames_of("depth"),
        flow=frames_of("gtflow"),
        normal=frames_of("normal"),
        joints2d=info["joints2D"].transpose(order),
        frames=frames,
        title=name,
        inst=frames_of("inst") if P > 1 else None,
        bbox=info.get("bbox"),
        uv=read_corr(corr, T, W, H)["uv"] if spec.correspondence or corr.is_file() else None,
    )


def contact_sheet_for_clip(clip_dir: Path, name: str, out: Path, frames: list[int] | None = None) -> Path:
    """Read a written clip and save its contact sheet as a PNG at `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet_from_files(clip_dir, name, frames).save(out)
    return out
