"""A real two-person render (bpy 5.0.1, Cycles): one person walks behind the other.

The clip is written in the default (surreal) convention and read back from its files. What it must agree with
comes from outside the writer: the same two bodies rendered each on their own with the same camera (which one
is nearer at a pixel where both show), and the original's relations (tests/surreal_relations.py) per person.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import surreal_relations as sr

from farm.core.spec import CameraSpec, ClipSpec, MotionRef, Person
from farm.render.client import BlenderProcessRenderer
from farm.render.job import BACKGROUND_DEPTH, RenderOptions
from farm.render.prepare import prepare_clip
from worker.output import write_clip
from worker.visibility import SELF_OCCLUSION_M

pytestmark = pytest.mark.blender

W, H = 320, 240
FRAMES = 8
CLIP = "walk_s01_01_c0003"


def walker(sequence: str, frames: int, start: int, **fields: object) -> Person:
    motion = MotionRef(
        uri=f"builtin:{sequence}", pose_key="poses", trans_key="trans", rate=120, frames=frames
    )
    return Person(sequence=sequence, frame_start=start, motion=motion, **fields)  # type: ignore[arg-type]


def two_people() -> ClipSpec:
    """A walk, and behind it (1.5 m further along the view, straight behind) another person walking across."""
    behind = walker(
        "walk_s01_02", 1905, 100, gender="male", shape=(-0.5,) + (0.0,) * 9, shape_source="test",
        texture="builtin:texture/male/train/0001", zrot=1.6, ground_x=0.0, ground_depth=1.5, gap=0.1,
    )  # fmt: skip
    return ClipSpec(
        name=CLIP, catalog="cmu", sequence="walk_s01_01", split="train", run=0, clip_index=2, stride=50,
        frame_start=100, frame_count=100,
        motion=MotionRef(uri="builtin:walk_s01_01", pose_key="poses", trans_key="trans", rate=120, frames=1432),
        seed=7, body_model="free", gender="female", shape=(0.5, -0.3) + (0.0,) * 8, shape_source="test",
        texture="builtin:texture/female/train/0003", background="builtin:background/train/0001",
        light=(0.9, -0.5, 0.1, 0.2, 0.0, 0.0, 0.1, 0.0, 0.1), camera=CameraSpec(distance=7.5), zrot=0.8,
        others=(behind,),
    )  # fmt: skip


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The clip's files read back, and each person rendered alone (depth and mask) with the same camera."""
    root = tmp_path_factory.mktemp("people")
    prepared = prepare_clip(two_people(), frames=FRAMES)
    job = prepared.job
    one = prepare_clip(two_people().model_copy(update={"others": ()}), frames=FRAMES)
    renderer = BlenderProcessRenderer(RenderOptions(timeout_s=600))
    try:
        before = write_one(root / "one-before", renderer, one)
        result = renderer.render(job)
        write_clip(
            root,
            job.spec,
            result,
            prepared.poses,
            prepared.joints,
            job.camera,
            result.software,
            prepared.others,
        )
        alone = []
        for body in job.bodies():
            camera = dataclasses.replace(job.camera, world_from_body=body.world_from_body)
            solo = dataclasses.replace(
                job, vertices=body.vertices, faces=body.faces, vt=body.vt, ft=body.ft, face_parts=body.face_parts,
                texture=body.texture, camera=camera, others=[],
            )  # fmt: skip
            r = renderer.render(solo)
            alone.append({"depth": np.array(r.depth), "segm": np.array(r.segm)})
        after = write_one(root / "one-after", renderer, one)
    finally:
        renderer.close()
    folder = root / "cmu/train/run0/walk_s01_01"
    files = {"info": scipy.io.loadmat(folder / f"{CLIP}_info.mat"), "alone": alone, "folder": folder}
    files["one"] = (before, after)
    for prefix in ("depth", "segm", "gtflow", "normal", "inst"):
        mat = scipy.io.loadmat(folder / f"{CLIP}_{prefix}.mat")
        files[prefix] = np.stack([mat[f"{prefix}_{t}"] for t in range(1, FRAMES + 1)])
        files[f"{prefix}_dtype"] = mat[f"{prefix}_1"].dtype
    return files


def write_one(root: Path, renderer: BlenderProcessRenderer, prepared) -> dict[str, bytes]:
    result = renderer.render(prepared.job)
    out = write_clip(root, prepared.job.spec, result, prepared.poses, prepared.joints, prepared.job.camera)
    return {f.name: (root / f).read_bytes() for f in out.files}


def test_a_one_person_clip_is_unchanged_by_a_clip_of_several(clip):
    """The same one-person clip before and after a two-person clip in the same warm Blender: the same bytes,
    and SURREAL's files only."""
    before, after = clip["one"]
    assert before == after
    assert sorted(before) == sorted(
        f"{CLIP}{s}" for s in (".mp4", "_info.mat", "_depth.mat", "_segm.mat", "_gtflow.mat", "_normal.mat",
                               "_thumb.jpg", "_manifest.json")
    )  # fmt: skip


def test_surreact_layout(clip):
    info = clip["info"]
    P, T = 2, FRAMES
    shapes = {"joints2D": (P, 2, 24, T), "joints3D": (P, 3, 24, T), "pose": (P, 72, T), "shape": (P, 10, T),
              "zrot": (P, T, 1), "gender": (P, T, 1), "cloth": (P, T), "visible": (P, 24, T), "bbox": (P, 4, T),
              "camLoc": (3, 1), "light": (9, T), "bg": (1, T)}  # fmt: skip
    assert {k: info[k].shape for k in shapes} == shapes
    assert info["gender"][:, 0, 0].tolist() == [0, 1]
    assert clip["inst_dtype"] == np.uint8 and set(np.unique(clip["inst"])) == {0, 1, 2}


def test_instances_segmentation_and_depth_agree(clip):
    """Every pixel of a person has a part label and a depth, and the background has neither."""
    inst, segm, depth = clip["inst"], clip["segm"], clip["depth"]
    assert np.array_equal(inst > 0, segm > 0)
    assert np.array_equal(inst > 0, depth < BACKGROUND_DEPTH)
    assert (depth[inst == 0] == BACKGROUND_DEPTH).all()


def test_where_the_two_overlap_the_nearer_one_wins(clip):
    """Against each person rendered alone: where both would show, the clip shows the nearer one, at its depth."""
    inst, depth = clip["inst"], clip["depth"]
    (a, b) = clip["alone"]
    both = (a["segm"] > 0) & (b["segm"] > 0)
    assert both.sum(axis=(1, 2)).min() > 100  # they do overlap, in every frame
    apart = both & (np.abs(a["depth"] - b["depth"]) > 0.01)
    nearer = np.where(a["depth"] < b["depth"], 1, 2)
    assert np.array_equal(inst[apart], nearer[apart])
    assert (nearer[both] == 1).mean() > 0.99  # the first person is in front
    assert np.allclose(depth[both], np.minimum(a["depth"], b["depth"])[both], rtol=1e-5)
    only_a, only_b = (a["segm"] > 0) & ~both, (b["segm"] > 0) & ~both
    assert (inst[only_a] == 1).all() and (inst[only_b] == 2).all()
    assert (inst[(a["segm"] == 0) & (b["segm"] == 0)] == 0).all()


def test_a_joint_behind_the_near_person_is_not_visible(clip):
    info = clip["info"]
    near = clip["alone"][0]
    far = sr.person(info, 1)
    pixels = np.floor(sr.project(far)).astype(int)  # (T, 24, 2): pixel c spans [c, c + 1]
    distance = np.linalg.norm(sr.joints3d(far) - sr.cam_loc(far), axis=-1)  # depth is along the ray
    hidden = seen = 0
    for t in range(FRAMES):
        for j in range(24):
            x, y = pixels[t, j]
            if not (0 <= x < W and 0 <= y < H):
                continue
            if near["segm"][t, y, x] > 0 and near["depth"][t, y, x] < distance[t, j] - SELF_OCCLUSION_M:
                assert not far["visible"][j, t], (t, j)
                hidden += 1
            seen += int(far["visible"][j, t])
    assert hidden >= 3 * FRAMES and seen >= 3 * FRAMES  # both cases occur


def test_every_visible_joint_lies_in_its_persons_box(clip):
    info = clip["info"]
    for k in range(2):
        p = sr.person(info, k)
        j2 = sr.stored_joints2d(p)  # (T, 24, 2)
        box = p["bbox"].T  # (T, 4)
        assert not np.isnan(box).any()  # both show in every frame
        vis = p["visible"].T.astype(bool)  # (T, 24)
        inside = (j2[..., 0] >= box[:, None, 0]) & (j2[..., 0] <= box[:, None, 2])
        inside &= (j2[..., 1] >= box[:, None, 1]) & (j2[..., 1] <= box[:, None, 3])
        assert vis.any() and inside[vis].all()
        # the box is tight: its edges are pixels of this person
        for t in range(FRAMES):
            ys, xs = np.nonzero(clip["inst"][t] == k + 1)
            assert tuple(box[t]) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_each_person_satisfies_the_originals_relations(clip, smpl_models):
    """Per person, in the default convention: joints2D project from joints3D, camLoc and K (whole pixels,
    mirrored frames); pose, shape and zrot give joints3D through rotateBody; the depth of that person's pixels
    is the distance along the ray to that SMPL body; the raw speed pass moves with their joints."""
    info, depth, inst, flow = clip["info"], clip["depth"], clip["inst"], clip["gtflow"]
    rays = sr.pixel_rays(W, H)
    unit = rays / np.linalg.norm(rays, axis=-1, keepdims=True)
    rng = np.random.default_rng(0)
    for k in range(2):
        p = sr.person(info, k)
        assert np.array_equal(np.round(sr.project(p)), sr.stored_joints2d(p))
        assert (sr.mirror_sign(p) == -1).all()
        gender = "male" if int(p["gender"][0, 0]) == 1 else "female"
        vertices, joints = sr.smpl_from_info(smpl_models[gender], p)
        assert np.abs(joints - sr.joints3d(p)).max() < 1e-3
        faces = np.asarray(smpl_models[gender].faces, np.int64)
        for t in (0, FRAMES - 1):
            own = inst[t] == k + 1
            inner = own & np.roll(own, 1, 0) & np.roll(own, -1, 0) & np.roll(own, 1, 1) & np.roll(own, -1, 1)
            ys, xs = np.nonzero(inner)
            pick = rng.choice(len(ys), 40, replace=False)
            hits = sr.ray_distances(sr.cam_loc(p), unit[ys[pick], xs[pick]], vertices[t], faces)
            assert np.median(np.abs(depth[t][ys[pick], xs[pick]] - hits)) < 2e-3
        proj = sr.project(p)
        errors, motions = [], []
        for t in range(1, FRAMES):
            for j in (0, 3, 6, 9, 1, 2):
                x, y = np.floor(proj[t, j]).astype(int)
                if not p["visible"][j, t]:
                    continue
                seen = np.array([-flow[t, y, x, 0], flow[t, y, x, 1]])
                errors.append(np.linalg.norm(seen - (proj[t, j] - proj[t - 1, j])))
                motions.append(np.linalg.norm(proj[t, j] - proj[t - 1, j]))
        assert len(errors) >= FRAMES and np.median(errors) < 0.25 * np.median(motions) + 0.1


def test_stored_qc_is_per_person(clip):
    import json

    manifest = json.loads((Path(clip["folder"]) / f"{CLIP}_manifest.json").read_text())
    people = manifest["qc"]["people"]
    assert len(people) == 2 and all(p["frames_visible"] == FRAMES for p in people)
    assert people[0]["pixels_mean"] > people[1]["pixels_mean"] > 0  # the far one is partly hidden and smaller
    assert f"{CLIP}_inst.mat" in {f["name"] for f in manifest["files"]}


def test_farm_qc_reads_the_clip_back_alike(clip):
    import json

    from worker.qc import assess_files

    quality = assess_files(Path(clip["folder"]), CLIP)
    assert quality.ok, quality.problems
    manifest = json.loads((Path(clip["folder"]) / f"{CLIP}_manifest.json").read_text())
    assert quality.stats == manifest["qc"]


def test_the_loader_and_shards_carry_people_visibility_and_boxes(clip):
    """farm.dataset's clean items: a person axis, inst unmirrored, and boxes moved with the flip so that each
    visible joint's clean projection still lies in its box (to within the surreal rounding of half a pixel)."""
    from farm.cli.export import shard_samples
    from farm.dataset.clips import load_clip, read_manifest
    from farm.dataset.shards import decode_sample

    items = load_clip(read_manifest(Path(clip["folder"]), CLIP))
    assert items["joints2D"].shape == (FRAMES, 2, 24, 2) and items["visible"].shape == (FRAMES, 2, 24)
    assert items["bbox"].shape == (FRAMES, 2, 4) and items["inst"].shape == (FRAMES, H, W)
    assert np.array_equal(items["inst"], clip["inst"][:, :, ::-1])
    assert np.array_equal(items["visible"], clip["info"]["visible"].transpose(2, 0, 1).astype(bool))
    j2, box, vis = items["joints2D"], items["bbox"][:, :, None, :], items["visible"]
    inside = (j2[..., 0] >= box[..., 0] - 0.5) & (j2[..., 0] <= box[..., 2] + 0.5)
    inside &= (j2[..., 1] >= box[..., 1] - 0.5) & (j2[..., 1] <= box[..., 3] + 0.5)
    assert inside[vis].all()
    for t in (0, FRAMES - 1):
        for k in range(2):
            ys, xs = np.nonzero(items["inst"][t] == k + 1)
            assert tuple(items["bbox"][t, k]) == (
                xs.min() - 0.5,
                ys.min() - 0.5,
                xs.max() + 0.5,
                ys.max() + 0.5,
            )
    sample = decode_sample(next(shard_samples(items, CLIP, {}, "png")))  # compact: inst as 8-bit PNG
    for key in ("visible", "bbox", "inst"):
        assert np.array_equal(sample[key], items[key][0], equal_nan=True), key
