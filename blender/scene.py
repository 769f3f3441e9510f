"""The Blender scene: one body, one camera, 24 part materials, rendered clip after clip in one process.

Built once per process: render settings, view-layer passes, the shading node group and the 24 materials.
Per clip: the mesh (only when the topology changes), the texture (only when it changes), the SH weights, the
camera and the body's placement, and a PC2 point cache holding every frame's vertices. The Mesh Cache modifier
reads that cache, so Blender evaluates the true neighbouring frames and the Vector pass sees real motion.

Conventions are in farm/render/__init__.py.
"""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import bpy
import numpy as np

from blender.camera import camera_matrix, key_camera
from blender.exr import read_exr
from blender.motion_blur import render_blur
from blender.passes import convert_frame, srgb_to_linear, write_pc2
from farm.render.camera_motion import background_canvas_size, background_flow, warp_background
from farm.render.job import (
    BodyMesh,
    Progress,
    RenderError,
    RenderJob,
    RenderOptions,
    RenderResult,
    open_result_files,
    result_shapes,
    scratch_dir,
)
from farm.render.lighting import sh_weights

if TYPE_CHECKING:  # only in the fake-bpy-module stubs
    from bpy.stub_internal.rna_enums import NodeVecMathItems

PARTS = 24
_GROUP = "surreal_shading"
_CANON = "canon"  # the mesh attribute (and AOV) of the canonical vertices, for correspondence clips


@dataclass
class _Slot:
    """What one person of a clip renders with: a shading group with its own texture, 24 part materials whose
    AOVs write the part label and the person's instance, and the body object (None until a clip has it)."""

    texture_node: bpy.types.ShaderNodeTexImage
    # The SH weights' nodes: linear, square, cross, const.
    sh_nodes: tuple[bpy.types.Node, bpy.types.Node, bpy.types.Node, bpy.types.Node]
    materials: list[bpy.types.Material]
    body: bpy.types.Object | None = None
    mesh_key: str | None = None
    texture_key: str | None = None
    correspondence: bool = False  # its materials write the "uv" and "canon" AOVs (built on first need)


class SceneRenderer:
    def __init__(self, options: RenderOptions) -> None:
        self.options = options
        # Blender's per-frame EXRs (a few MB each, read and deleted at once) go to RAM when it can.
        self.workdir = Path(tempfile.mkdtemp(prefix="surreal-blender-", dir=scratch_dir()))
        self._clips = 0
        bpy.ops.wm.read_factory_settings(use_empty=True)
        scene = bpy.context.scene
        assert scene is not None  # the factory settings hold one scene
        self.scene = scene
        self._configure_render()
        self.slots = [self._build_slot(0)]  # more are built when a clip has more people
        cam_data = bpy.data.cameras.new("camera")
        self.camera = bpy.data.objects.new("camera", cam_data)
        self.scene.collection.objects.link(self.camera)
        self.scene.camera = self.camera

    # ---- built once ------------------------------------------------------------------------------------

    def _configure_render(self) -> None:
        o, s = self.options, self.scene
        r = s.render
        r.use_compositing = False  # the background is composited in numpy, exactly
        r.use_sequencer = False
        r.film_transparent = True
        r.use_motion_blur = False  # the Vector pass needs motion blur off
        r.use_persistent_data = True  # freed whenever the texture changes (_set_texture)
        r.resolution_percentage = 100
        if o.threads:
            r.threads_mode = "FIXED"
            r.threads = o.threads
        view = s.view_settings
        assert view is not None
        view.view_transform = "Standard"  # type: ignore[assignment]  # run-time enum; stubs: "NONE"
        f = r.image_settings
        f.media_type = "MULTI_LAYER_IMAGE"
        f.file_format = "OPEN_EXR_MULTILAYER"
        f.color_depth = "32"  # depth needs float32 (1e10 on background)
        f.exr_codec = "NONE"  # compression costs more CPU than the page cache saves
        vl = s.view_layers[0]
        vl.name = "ViewLayer"
        vl.use_pass_combined = True
        vl.use_pass_z = True
        vl.use_pass_normal = True
        vl.use_pass_vector = True
        if o.engine == "cycles":
            r.engine = "CYCLES"  # type: ignore[assignment]  # run-time enum; stubs: EEVEE only
            c = s.cycles  # the Cycles add-on's settings: untyped (Any) in the stubs
            assert c is not None
            c.samples = o.samples
            c.use_adaptive_sampling = False
            c.use_denoising = False
            c.max_bounces = 0  # emission only: camera rays, no bounces
            c.diffuse_bounces = c.glossy_bounces = c.transmission_bounces = 0
            c.transparent_max_bounces = 0
            c.volume_bounces = 0
            c.caustics_reflective = c.caustics_refractive = False
            c.pixel_filter_type = "BOX"
            c.filter_width = 0.01  # samples at the pixel centre: crisp, exact labels and depth
            c.seed = 0
            c.use_light_tree = False  # no lights, and a rebuilt light tree per frame was the main cost
            c.use_animated_seed = False
            c.use_auto_tile = False
            vl.use_pass_material_index = True
            self.device = self._setup_cycles_device(o.device)
        else:
            try:
                r.engine = "BLENDER_EEVEE"
            except TypeError:  # Blender 4.2 to 4.4 named it BLENDER_EEVEE_NEXT
                r.engine = "BLENDER_EEVEE_NEXT"  # type: ignore[assignment]  # run-time enum
            eevee = s.eevee
            assert eevee is not None
            eevee.taa_render_samples = o.samples
            # Samples jitter within the film filter's radius: a tiny one keeps every sample at the pixel
            # centre (like Cycles' filter_width below), so labels, depth and alpha stay unblended.
            r.filter_size = 0.01
            self.device = "EEVEE renders with the machine's OpenGL (on a GPU, or Mesa's llvmpipe on the CPU)"
            for name in ("segm", "inst"):
                aov = vl.aovs.add()
                aov.name = name
                aov.type = "VALUE"

    def _setup_cycles_device(self, device: str) -> str:
        """Point Cycles at `device`; returns which device it renders on, in words."""
        c = self.scene.cycles
        assert c is not None
        preferences = bpy.context.preferences
        assert preferences is not None
        # CyclesPreferences is defined in Python by the add-on; the stubs know only the AddonPreferences base.
        prefs: Any = preferences.addons["cycles"].preferences
        if device == "cpu":
            c.device = "CPU"
            cpus = ", ".join(d.name for d in prefs.get_devices_for_type("CPU")) or "the CPU"
            threads = self.scene.render.threads if self.options.threads else len(os.sched_getaffinity(0))
            return f"Cycles renders on the CPU ({cpus}, {threads} thread{'' if threads == 1 else 's'})"
        prefs.compute_device_type = device.upper()
        prefs.get_devices()
        gpus = [d for d in prefs.devices if d.type == device.upper()]
        if not gpus:
            raise RenderError(
                f"Blender sees no {device.upper()} device on this machine (found only: "
                f"{', '.join(d.name for d in prefs.devices) or 'none'}), so it cannot render with "
                f"--device {device}; use --device cpu (FARM_DEVICE=cpu) or start the worker where an NVIDIA GPU "
                "and its driver are"
            )
        for d in prefs.devices:
            d.use = d in gpus
        c.device = "GPU"
        return f"Cycles renders on {device.upper()}: {', '.join(d.name for d in gpus)}"

    def _build_slot(self, k: int) -> _Slot:
        """Person k's node group (emission = texture colour x SH irradiance of the camera-frame normal) and
        materials. Person 0's names are those of a one-person scene."""
        suffix = "" if k == 0 else f".p{k + 1}"
        g = cast(bpy.types.ShaderNodeTree, bpy.data.node_groups.new(_GROUP + suffix, "ShaderNodeTree"))
        assert g.interface is not None
        g.interface.new_socket("Shader", in_out="OUTPUT", socket_type="NodeSocketShader")
        nodes, links = g.nodes, g.links

        # nodes.new returns a plain Node (the type is a string), so the node's own settings and its typed
        # sockets are reached through casts. The stubs' typed nodes declare their sockets optional, so the
        # wiring goes through the plain Node.
        def math_node(kind: str, operation: str, inputs: tuple[Any, Any]) -> bpy.types.Node:
            """A math node of `kind` on two inputs, each a socket to link or a constant to set."""
            n = nodes.new(kind)
            cast(Any, n).operation = operation  # both node kinds have one; the stubs type it per kind
            for sock, src in zip(n.inputs[:2], inputs, strict=True):
                if isinstance(src, bpy.types.NodeSocket):
                    links.new(src, sock)
                else:
                    cast(Any, sock).default_value = src
            return n

        def vmath(
            op: NodeVecMathItems,
            a: bpy.types.NodeSocket | tuple[float, float, float],
            b: bpy.types.NodeSocket | tuple[float, float, float],
        ) -> bpy.types.Node:
            return math_node("ShaderNodeVectorMath", op, (a, b))

        def add(a: bpy.types.NodeSocket | float, b: bpy.types.NodeSocket | float) -> bpy.types.Node:
            return math_node("ShaderNodeMath", "ADD", (a, b))

        geo = nodes.new("ShaderNodeNewGeometry")
        to_cam = nodes.new("ShaderNodeVectorTransform")
        transform = cast(bpy.types.ShaderNodeVectorTransform, to_cam)
        transform.vector_type = "NORMAL"
        transform.convert_from = "WORLD"
        transform.convert_to = "CAMERA"
        links.new(geo.outputs["Normal"], to_cam.inputs[0])
        n = vmath("MULTIPLY", to_cam.outputs[0], (1.0, -1.0, -1.0)).outputs[0]  # OpenCV camera frame
        sep = nodes.new("ShaderNodeSeparateXYZ")
        links.new(n, sep.inputs[0])
        swz = nodes.new("ShaderNodeCombineXYZ")  # (y, z, x)
        for i, j in ((0, 1), (1, 2), (2, 0)):
            links.new(sep.outputs[j], swz.inputs[i])
        squares = vmath("MULTIPLY", n, n).outputs[0]
        crosses = vmath("MULTIPLY", n, swz.outputs[0]).outputs[0]
        # The per-clip weights live in these three dot products and one add (see farm.render.lighting.sh_weights).
        sh_linear = vmath("DOT_PRODUCT", n, (0.0, 0.0, 0.0))
        sh_square = vmath("DOT_PRODUCT", squares, (0.0, 0.0, 0.0))
        sh_cross = vmath("DOT_PRODUCT", crosses, (0.0, 0.0, 0.0))
        s1 = add(sh_linear.outputs["Value"], sh_square.outputs["Value"])
        s2 = add(s1.outputs[0], sh_cross.outputs["Value"])
        sh_const = add(s2.outputs[0], 0.0)
        tex = nodes.new("ShaderNodeTexImage")
        texture_node = cast(bpy.types.ShaderNodeTexImage, tex)
        texture_node.interpolation = "Linear"
        texture_node.extension = "EXTEND"
        emit = nodes.new("ShaderNodeEmission")
        links.new(tex.outputs["Color"], emit.inputs["Color"])
        links.new(sh_const.outputs[0], emit.inputs["Strength"])
        out = nodes.new("NodeGroupOutput")
        links.new(emit.outputs[0], out.inputs[0])

        # One material per part: the pass index is the segmentation label.
        materials: list[bpy.types.Material] = []
        for label in range(1, PARTS + 1):
            m = bpy.data.materials.new(f"part{label:02d}{suffix}")
            m.use_nodes = True
            m.pass_index = label
            mc = m.cycles
            assert mc is not None
            mc.emission_sampling = "NONE"  # emission is the shading, not a light to sample
            mt = m.node_tree
            assert mt is not None  # use_nodes made it
            mt.nodes.clear()
            grp = mt.nodes.new("ShaderNodeGroup")
            cast(bpy.types.ShaderNodeGroup, grp).node_tree = g
            mo = mt.nodes.new("ShaderNodeOutputMaterial")
            mt.links.new(grp.outputs[0], mo.inputs["Surface"])
            # EEVEE has no material- or object-index pass: AOVs carry the label and the instance.
            for aov_name, value in (("segm", label), ("inst", k + 1)):
                aov = mt.nodes.new("ShaderNodeOutputAOV")
                cast(bpy.types.ShaderNodeOutputAOV, aov).aov_name = aov_name
                cast(bpy.types.NodeSocketFloat, aov.inputs["Value"]).default_value = float(value)
            materials.append(m)
        return _Slot(texture_node, (sh_linear, sh_square, sh_cross, sh_const), materials)

    # ---- per clip --------------------------------------------------------------------------------------

    def _remove_body(self, slot: _Slot) -> None:
        if slot.body is not None:
            mesh = cast(bpy.types.Mesh, slot.body.data)
            bpy.data.objects.remove(slot.body)
            bpy.data.meshes.remove(mesh)
        slot.body, slot.mesh_key = None, None

    def _set_mesh(self, k: int, person: BodyMesh) -> None:
        slot = self.slots[k]
        h = hashlib.sha1()
        for a in (person.faces, person.vt, person.ft, person.face_parts):
            h.update(np.ascontiguousarray(a).tobytes())
        key = f"{person.vertices.shape[1]}:{h.hexdigest()}"
        canonical = person.canonical
        if canonical is not None:  # a mesh with the canonical attribute is another mesh
            if np.shape(canonical) != (person.vertices.shape[1], 3):
                raise RenderError(
                    f"canonical vertices are {np.shape(canonical)}, the mesh has {person.vertices.shape[1]}"
                )
            key += ":canon:" + hashlib.sha1(np.ascontiguousarray(canonical, np.float32).tobytes()).hexdigest()
        if key == slot.mesh_key and slot.body is not None:
            return
        faces = np.asarray(person.faces, dtype=np.int32)
        nv, nf = person.vertices.shape[1], len(faces)
        parts = np.asarray(person.face_parts)
        if parts.shape != (nf,) or parts.min() < 1 or parts.max() > PARTS:
            raise RenderError(f"part labels must be 1..{PARTS}, one per face")
        if faces.min() < 0 or faces.max() >= nv:
            raise RenderError(f"faces index vertices outside 0..{nv - 1}")
        self._remove_body(slot)
        name = "body" if k == 0 else f"body.p{k + 1}"
        me = bpy.data.meshes.new(name)
        me.vertices.add(nv)
        me.vertices.foreach_set("co", np.asarray(person.vertices[0], dtype=np.float32).ravel())
        me.loops.add(3 * nf)
        me.loops.foreach_set("vertex_index", faces.ravel())
        me.polygons.add(nf)
        me.polygons.foreach_set("loop_start", np.arange(0, 3 * nf, 3, dtype=np.int32))
        uv = me.uv_layers.new(name="UVMap")
        uv.data.foreach_set("uv", np.asarray(person.vt, dtype=np.float32)[person.ft].ravel())
        if canonical is not None:  # read by the materials' Attribute node into the "canon" AOV
            canon = me.attributes.new(_CANON, "FLOAT_VECTOR", "POINT")
            values = np.asarray(canonical, dtype=np.float32).ravel()
            canon.data.foreach_set("vector", values)  # type: ignore[attr-defined]
        for m in slot.materials:
            me.materials.append(m)
        me.polygons.foreach_set("material_index", (parts.astype(np.int32) - 1))
        me.update()
        me.shade_smooth()
        body = bpy.data.objects.new(name, me)
        body.pass_index = k + 1  # Cycles' object-index pass: the instance
        self.scene.collection.objects.link(body)
        cache = cast(bpy.types.MeshCacheModifier, body.modifiers.new("motion", "MESH_CACHE"))
        cache.cache_format = "PC2"
        cache.frame_start = 1  # scene frame 1 is cache sample 0 (clip frame 0)
        cache.interpolation = "NONE"
        cache.forward_axis, cache.up_axis = "POS_Y", "POS_Z"  # no axis conversion
        slot.body = body
        slot.mesh_key = key

    def _set_texture(self, k: int, texture: np.ndarray) -> None:
        slot = self.slots[k]
        key = hashlib.sha1(np.ascontiguousarray(texture).tobytes()).hexdigest()
        if key == slot.texture_key:
            return
        tex = np.asarray(texture)
        h, w = tex.shape[:2]
        img = slot.texture_node.image
        if img is None or tuple(img.size) != (w, h):
            if img is not None:
                bpy.data.images.remove(img)
            img = bpy.data.images.new("texture" if k == 0 else f"texture.p{k + 1}", w, h, alpha=False)
            # Set before the pixels: changing the colour space of a generated image regenerates it.
            assert img.colorspace_settings is not None
            img.colorspace_settings.name = "sRGB"  # type: ignore[assignment]  # run-time enum; stubs: "NONE"
            slot.texture_node.image = img
        rgba = np.ones((h, w, 4), dtype=np.float32)
        rgba[..., :3] = tex[::-1] / 255.0  # Blender stores rows bottom-up
        img.pixels.foreach_set(rgba.ravel())  # type: ignore[attr-defined]  # stubs: pixels is a float
        img.update()
        slot.texture_key = key
        self._resync()

    def _resync(self) -> None:
        """Free Cycles' persistent data, so the next render syncs the scene again (the frames after it reuse it).
        It does not see new pixels, a new image, new AOVs or new shader nodes: a warm process rendered the next
        clip in the previous clip's texture (tests/blender/test_warm_texture.py)."""
        render = self.scene.render
        render.use_persistent_data = False
        render.use_persistent_data = True

    def _set_people(self, job: RenderJob) -> list[BodyMesh]:
        """One slot per person, with their mesh and texture; bodies of slots the clip does not use are removed."""
        bodies = job.bodies()
        while len(self.slots) < len(bodies):
            self.slots.append(self._build_slot(len(self.slots)))
        for k, person in enumerate(bodies):
            self._set_mesh(k, person)
            self._set_texture(k, person.texture)
        for slot in self.slots[len(bodies) :]:
            self._remove_body(slot)
        return bodies

    def _set_correspondence(self, on: bool, people: int) -> None:
        """Dense correspondence (ClipSpec.correspondence): COLOR AOVs "uv" (the UV map's (u, v, 0)) and
        "canon" (the mesh's canonical-vertex attribute), both interpolated at the surface point each pixel's
        centre sees. The AOVs exist in the view layer only for such clips, so other clips' passes stay as they
        were; each slot's materials gain their AOV outputs the first time one of its clips needs them."""
        vl = self.scene.view_layers[0]
        have = {aov.name: aov for aov in vl.aovs}
        changed = False
        for name in ("uv", _CANON):
            if on and name not in have:
                aov = vl.aovs.add()
                aov.name = name
                aov.type = "COLOR"
                changed = True
            elif not on and name in have:
                vl.aovs.remove(have[name])
                changed = True
        if on:
            for slot in self.slots[:people]:
                if not slot.correspondence:
                    self._add_correspondence_nodes(slot)
                    changed = True
        if changed:  # persistent data would keep the old passes and shaders
            self._resync()

    @staticmethod
    def _add_correspondence_nodes(slot: _Slot) -> None:
        for m in slot.materials:
            mt = m.node_tree
            assert mt is not None
            uv = mt.nodes.new("ShaderNodeUVMap")
            cast(bpy.types.ShaderNodeUVMap, uv).uv_map = "UVMap"
            attr = mt.nodes.new("ShaderNodeAttribute")
            cast(bpy.types.ShaderNodeAttribute, attr).attribute_type = "GEOMETRY"
            cast(bpy.types.ShaderNodeAttribute, attr).attribute_name = _CANON
            for aov_name, source in (("uv", uv.outputs["UV"]), (_CANON, attr.outputs["Vector"])):
                aov = mt.nodes.new("ShaderNodeOutputAOV")
                cast(bpy.types.ShaderNodeOutputAOV, aov).aov_name = aov_name
                mt.links.new(source, aov.inputs["Color"])
        slot.correspondence = True

    def _set_light(self, light: tuple[float, ...]) -> None:
        a0, a, b, d = sh_weights(light)
        for slot in self.slots:  # the light is shared
            linear, square, cross, const = slot.sh_nodes
            # inputs[1] of the Vector Math dot products is a vector socket, of the Math add a float socket.
            cast(bpy.types.NodeSocketVector, linear.inputs[1]).default_value = a
            cast(bpy.types.NodeSocketVector, square.inputs[1]).default_value = b
            cast(bpy.types.NodeSocketVector, cross.inputs[1]).default_value = d
            cast(bpy.types.NodeSocketFloat, const.inputs[1]).default_value = a0

    def _set_camera(self, job: RenderJob, bodies: list[BodyMesh]) -> None:
        cam = job.camera
        w, h = cam.width, cam.height
        if w < h:
            raise RenderError("the renderer expects landscape images (width >= height)")
        s = self.scene
        s.render.resolution_x, s.render.resolution_y = w, h
        c = cast(bpy.types.Camera, self.camera.data)  # the object made from a Camera in __init__
        c.sensor_fit = "HORIZONTAL"
        c.sensor_width = job.spec.camera.sensor_mm
        c.lens = float(cam.K[0, 0]) * c.sensor_width / w
        # Blender's optical axis sits at the image centre, K's coordinate w/2 - 0.5 + pixel_centre; shift it
        # onto (cx, cy) of K (shift is in units of the image width). No shift for SURREAL's pixel_centre 0.5.
        o = cam.pixel_centre
        c.shift_x = (w / 2 - 0.5 + o - float(cam.K[0, 2])) / w
        c.shift_y = (float(cam.K[1, 2]) - h / 2 + 0.5 - o) / w
        c.clip_start, c.clip_end = 0.05, 1000.0
        self.camera.animation_data_clear()
        c.animation_data_clear()
        self.camera.rotation_mode = "XYZ" if cam.path is None else "QUATERNION"
        self.camera.matrix_world = camera_matrix(cam).T.tolist()  # mathutils takes rows
        if cam.path is not None:  # a moving camera: a key per frame, so the Vector pass sees its motion too
            key_camera(self.camera, [cam.at(t) for t in range(job.frame_count)])
        for slot, person in zip(self.slots, bodies, strict=False):
            assert slot.body is not None
            slot.body.matrix_world = np.asarray(person.world_from_body).T.tolist()

    def render(
        self,
        job: RenderJob,
        progress: Progress | None = None,
        out_dir: str | Path | None = None,
        read: bool = True,
        frames: tuple[int, int] = (0, 1),
    ) -> RenderResult:
        """Render the clip's frames; with `out_dir` the arrays are the .npy files there (farm.render.job.
        create_result_files made them; memory-mapped), else new arrays.

        `frames` = (offset, step) renders only frames offset, offset + step, ... (0-based), for a renderer that
        shares a clip among processes; the others stay zero. Every frame still sees its true neighbours in the
        point cache, so each comes out as in a render of the whole clip. `read=False` only renders (the
        benchmark's bare Blender rate): the arrays stay zero.
        """
        t0 = time.perf_counter()
        T = job.frame_count
        cam = job.camera
        canvas = (cam.height, cam.width)
        if cam.path is not None:
            canvas = background_canvas_size(cam.width, cam.height)[::-1]
        if job.background.shape[:2] != canvas:
            raise RenderError(f"background is {job.background.shape[:2]}, expected {canvas}")
        bodies = self._set_people(job)
        # The instance: each body's pass index is its person's number. One person's instance is their body
        # (segm > 0), so a one-person clip skips the pass (its EXR channel costs Blender ~1 ms a frame).
        self.scene.view_layers[0].use_pass_object_index = len(bodies) > 1
        corr = job.spec.correspondence
        if corr and any(b.canonical is None for b in bodies):
            raise RenderError("the clip asks for correspondence but a person has no canonical vertices")
        self._set_correspondence(corr, len(bodies))
        self._set_light(job.spec.light)
        self._set_camera(job, bodies)
        self._clips += 1
        clipdir = self.workdir / f"clip{self._clips}"
        clipdir.mkdir()
        for k, person in enumerate(bodies):
            if person.vertices.shape[0] != T:
                raise RenderError(f"person {k + 1} has {person.vertices.shape[0]} frames, the clip {T}")
            cache = clipdir / ("motion.pc2" if k == 0 else f"motion.p{k + 1}.pc2")
            write_pc2(cache, person.vertices)
            body = self.slots[k].body
            assert body is not None
            cast(bpy.types.MeshCacheModifier, body.modifiers["motion"]).filepath = str(cache)
        s = self.scene
        offset, step = frames
        s.frame_start, s.frame_end, s.frame_step = 1 + offset, T, step
        mine = list(range(1 + offset, T + 1, step))  # scene frames
        s.render.fps = job.spec.fps
        s.render.filepath = str(clipdir / "f_####")

        bg = srgb_to_linear(np.asarray(job.background, dtype=np.float32) / 255.0).astype(np.float32)
        eevee = self.options.engine == "eevee"
        convention = job.spec.convention
        blur = job.spec.shutter > 0  # the RGB is replaced after (blender/motion_blur.py): report frames then
        H, W = cam.height, cam.width
        arrays: dict[str, np.ndarray]
        if out_dir is None:
            shapes = result_shapes(T, H, W, corr)
            arrays = {k: np.zeros(shape, dtype) for k, (shape, dtype) in shapes.items()}
        else:  # straight into files the caller maps: no copy through the socket
            arrays = dict(open_result_files(Path(out_dir), T, H, W, correspondence=corr))
        done: list[int] = []
        errors: list[BaseException] = []
        read_s = 0.0
        written: queue.Queue[int | None] = queue.Queue()

        def reader() -> None:
            """Turns each written EXR into arrays while Blender renders the next frame (it releases the GIL)."""
            nonlocal read_s
            while (frame := written.get()) is not None:
                t = time.perf_counter()
                try:
                    path = self.scene.render.frame_path(frame=frame)
                    raw = read_exr(path)
                    os.remove(path)
                    if cam.path is None:
                        conv = convert_frame(raw, bg, cam, convention, eevee)
                    else:  # the frame's own camera, background and the background's flow
                        index = frame - 1
                        args = (cam.width, cam.height, cam.pixel_centre)
                        frame_bg = warp_background(bg, cam.path.homography(index), *args)
                        conv = convert_frame(raw, frame_bg, cam.at(index), convention, eevee)
                        fg = conv["segm"] > 0
                        conv["flow"][~fg] = background_flow(cam.path, index, convention, *args)[~fg]
                    # Frames without a predecessor (surreal) or successor (clean) hold 0 by convention;
                    # Blender would extrapolate the cache.
                    if frame == (1 if convention == "surreal" else T):
                        conv["flow"][:] = 0.0
                    for name, arr in conv.items():
                        arrays[name][frame - 1] = arr
                    done.append(frame)
                except BaseException as e:
                    errors.append(e)
                read_s += time.perf_counter() - t
                if progress and not blur:
                    progress(len(done), len(mine))

        def on_write(scene: bpy.types.Scene, *_args: object) -> None:
            if read:
                written.put(scene.frame_current)
            else:
                done.append(scene.frame_current)

        thread = threading.Thread(target=reader, name="exr-reader", daemon=True)
        thread.start()
        t_setup = time.perf_counter()
        bpy.app.handlers.render_write.append(on_write)
        try:
            bpy.ops.render.render(animation=True)
        finally:
            bpy.app.handlers.render_write.remove(on_write)
            t_end = time.perf_counter()
            written.put(None)
            thread.join()
            shutil.rmtree(clipdir, ignore_errors=True)
        t_read = time.perf_counter()
        if errors:
            raise RenderError(f"reading Blender's passes failed: {errors[0]!r}") from errors[0]
        if sorted(done) != mine:
            raise RenderError(f"Blender rendered {len(done)} of {len(mine)} frames")
        blur_s = None
        if blur:
            objects = [slot.body for slot in self.slots[: len(bodies)] if slot.body is not None]
            blurdir = self.workdir / f"clip{self._clips}-blur"
            blur_s = render_blur(
                self.scene, self.camera, objects, blurdir, job, mine, bg, arrays, progress, read
            )
        for a in arrays.values():
            if isinstance(a, np.memmap):
                a.flush()
        return RenderResult(
            **arrays,
            timings={
                "setup": t_setup - t0,
                "render": t_end - t_setup,
                "read_tail": t_read - t_end,
                "read": read_s,
                **({} if blur_s is None else {"blur": blur_s}),
            },
            software={
                "blender": bpy.app.version_string,
                "engine": self.options.engine,
                "device": self.options.device,
                "device_used": self.device,  # in words: which CPU or GPUs Cycles renders on
            },
            guarantees=self.options.guarantees,
        )

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
