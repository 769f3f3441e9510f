"""Motion blur (ClipSpec.shutter > 0, issue 26): the RGB of a shutter open for `shutter` of a frame's time.

Temporal supersampling, after the clip's ordinary render (which gave every pass, ground truth and the sharp
RGB, at the frames' own times: the shutter's centre): each frame t is rendered again at MOTION_BLUR_SAMPLES
times t + motion_blur_offsets(shutter) (farm/render/job.py), Combined pass only, each sample composited in
linear light over the background of its own time, and the frame's RGB is the samples' mean, sRGB-encoded.
Blender's own motion blur stays off, so the ordinary render's Vector pass is untouched.

The samples are one more animation render, of scene frames 1..M (M = frames x samples), each frame one sample:
- the bodies' Mesh Cache modifiers read a second point cache, the clip's frames with one more at either end
  (extrapolated at constant speed from the first and last two frames: the clip has no frames beyond itself),
  at each sample's time (play mode CUSTOM, its `eval_frame` keyed per scene frame), interpolating LINEAR
  between frames: each vertex moves on a straight line at constant speed from frame to frame;
- a moving camera (farm/render/camera_motion.py) is keyed at each sample with its exact pose and lens at that
  time (CameraPath.at), its background warped to that time; a static camera and its background stay.
No other scene state changes: the modifiers' settings and the passes the samples do not need (off while they
render) are restored after, so the next clip renders as if no blur had been; a moving camera's keys are set
again by the next clip's SceneRenderer._set_camera, as always.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import time
from pathlib import Path
from typing import Any, cast

import bpy
import numpy as np

from blender.camera import key_camera
from blender.exr import read_exr
from blender.passes import linear_to_srgb8, write_pc2
from farm.render.camera_motion import warp_background
from farm.render.job import MOTION_BLUR_SAMPLES, Progress, RenderError, RenderJob, motion_blur_offsets

# The passes the samples do not need (Cycles' and EEVEE's alike; an absent one is skipped).
_OFF = (
    "use_pass_z",
    "use_pass_normal",
    "use_pass_vector",
    "use_pass_material_index",
    "use_pass_object_index",
)


def extended_vertices(vertices: np.ndarray) -> np.ndarray:
    """(T + 2, V, 3) float32: the vertices (T, V, 3) with a frame before the first and one after the last, each
    continuing the motion of the two frames next to it at constant speed (a clip of one frame stands still)."""
    v = np.asarray(vertices, np.float32)
    if len(v) == 1:
        return np.repeat(v, 3, axis=0)
    return np.concatenate([2 * v[:1] - v[1:2], v, 2 * v[-1:] - v[-2:-1]])


def render_blur(
    scene: bpy.types.Scene,
    camera: bpy.types.Object,
    bodies: list[bpy.types.Object],
    blurdir: Path,
    job: RenderJob,
    mine: list[int],
    background_linear: np.ndarray,
    arrays: dict[str, np.ndarray],
    progress: Progress | None,
    read: bool,
) -> float:
    """Replace arrays["rgb"] of the scene frames `mine` (1-based) by their motion-blurred RGB; the seconds it
    took. `scene` has just rendered those frames of `job` (its people, light and camera are set): `camera` is its
    camera object, `bodies` the people's body objects in order; `blurdir` a new scratch folder's path."""
    t0 = time.perf_counter()
    if not mine:  # a process with no frame of this clip (more processes than frames)
        return 0.0
    n = MOTION_BLUR_SAMPLES
    offsets = motion_blur_offsets(job.spec.shutter, n)
    times = np.array([m - 1 + o for m in mine for o in offsets])  # clip frames (0-based); sample j
    M = len(times)
    s = scene
    cam = job.camera
    surreal = job.spec.convention == "surreal"
    blurdir.mkdir()
    vl = s.view_layers[0]
    passes = {name: getattr(vl, name) for name in _OFF if hasattr(vl, name)}
    mods: list[tuple[bpy.types.Object, bpy.types.MeshCacheModifier, Any, Any]] = []
    done: list[int] = []
    errors: list[BaseException] = []
    written: queue.Queue[int | None] = queue.Queue()
    try:
        for k, (person, body) in enumerate(zip(job.bodies(), bodies, strict=True)):
            cache = blurdir / f"blur.p{k + 1}.pc2"
            write_pc2(cache, extended_vertices(person.vertices))
            mod = cast(bpy.types.MeshCacheModifier, body.modifiers["motion"])
            mods.append((body, mod, mod.play_mode, mod.interpolation))
            mod.filepath = str(cache)
            mod.play_mode, mod.interpolation = "CUSTOM", "LINEAR"
            for j, tau in enumerate(times):  # cache sample 0 is clip frame -1
                mod.eval_frame = float(tau + 1.0)
                mod.keyframe_insert("eval_frame", frame=j + 1)
        if cam.path is not None:  # the camera's exact pose and lens at each sample (its keys are frames')
            camera.animation_data_clear()
            cast(bpy.types.Camera, camera.data).animation_data_clear()
            key_camera(camera, [cam.at(float(tau)) for tau in times])
        for name in passes:
            setattr(vl, name, False)
        s.frame_start, s.frame_end, s.frame_step = 1, M, 1
        s.render.filepath = str(blurdir / "b_####")
        args = (cam.width, cam.height, cam.pixel_centre)

        def reader() -> None:
            """Accumulates each frame's samples as Blender writes them; a frame's last sample finishes it."""
            H, W = cam.height, cam.width
            premul, alpha = np.zeros((H, W, 3), np.float32), np.zeros((H, W), np.float32)
            linear = np.zeros((H, W, 3), np.float32)
            while (j := written.get()) is not None:
                try:
                    path = s.render.frame_path(frame=j)
                    raw = read_exr(path)
                    os.remove(path)
                    if surreal:  # as convert_frame: the unmirrored render flipped, the background not
                        raw = {key: v[:, ::-1] for key, v in raw.items()}
                    a = raw["ViewLayer.Combined.A"].astype(np.float32)
                    p = np.stack([raw[f"ViewLayer.Combined.{ch}"] for ch in "RGB"], axis=-1).astype(
                        np.float32
                    )
                    k = (j - 1) % n
                    if k == 0:
                        premul[:], alpha[:], linear[:] = 0.0, 0.0, 0.0
                    if cam.path is None:  # one background: the mean of the composites is the composite of
                        # the means, which keeps a pixel no sample covers exactly the unblurred one
                        premul += p
                        alpha += a
                    else:  # each sample over the background of its own time
                        bg = warp_background(
                            background_linear, cam.path.homography(float(times[j - 1])), *args
                        )
                        linear += p + (1.0 - a[..., None]) * bg
                    if k == n - 1:
                        if cam.path is None:
                            mean = premul / n + (1.0 - alpha[..., None] / n) * background_linear
                        else:
                            mean = linear / n
                        arrays["rgb"][mine[(j - 1) // n] - 1] = linear_to_srgb8(mean)
                        done.append(mine[(j - 1) // n])
                        if progress:
                            progress(len(done), len(mine))
                except BaseException as e:
                    errors.append(e)

        def on_write(scene: bpy.types.Scene, *_args: object) -> None:
            if read:
                written.put(scene.frame_current)
            elif scene.frame_current % n == 0:
                done.append(mine[scene.frame_current // n - 1])

        thread = threading.Thread(target=reader, name="exr-blur-reader", daemon=True)
        thread.start()
        bpy.app.handlers.render_write.append(on_write)
        try:
            bpy.ops.render.render(animation=True)
        finally:
            bpy.app.handlers.render_write.remove(on_write)
            written.put(None)
            thread.join()
    finally:
        for body, mod, play_mode, interpolation in mods:
            body.animation_data_clear()  # the eval_frame keys
            mod.play_mode, mod.interpolation = play_mode, interpolation
        for name, value in passes.items():
            setattr(vl, name, value)
        shutil.rmtree(blurdir, ignore_errors=True)
    if errors:
        raise RenderError(f"reading Blender's motion-blur samples failed: {errors[0]!r}") from errors[0]
    if done != mine:
        raise RenderError(f"Blender rendered the motion blur of {len(done)} of {len(mine)} frames")
    return time.perf_counter() - t0
