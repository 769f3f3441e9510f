"""EEVEE on real renders. bpy renders EEVEE headless through Mesa's software OpenGL (llvmpipe), so these run
on every machine, CI included: a few frames each, in one warm EEVEE process.

The Cycles tests of the rigid stand-in and the walk (tests/blender/test_render_blender.py) hold here too, run
on EEVEE fixtures (the imported tests are collected again in this module), and EEVEE's passes agree with
Cycles' on the same clip within farm.render.job.EEVEE_BOUNDS, which the README and every EEVEE clip's
manifest state. tests/render/test_surreal_meaning_eevee.py checks the original's relations on EEVEE.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from standin_job import check_standin, standin_job
from test_render_blender import (
    FRAMES,
    test_walk_files_have_the_reference_format,
    test_walk_joints_project_with_camloc_and_k,
    test_walk_passes_agree_and_show_the_body,
    walk_spec,
)

from farm.render.client import BlenderProcessRenderer
from farm.render.job import EEVEE_BOUNDS, GUARANTEES, RenderOptions
from farm.render.prepare import prepare_clip
from worker.output import write_clip

pytestmark = pytest.mark.blender

# Run here on EEVEE's `walk`: format, joints against camLoc and K, segmentation, alpha and depth agreeing.
CYCLES_TESTS = (
    test_walk_files_have_the_reference_format,
    test_walk_joints_project_with_camloc_and_k,
    test_walk_passes_agree_and_show_the_body,
)


@pytest.fixture(scope="module")
def renderer():
    r = BlenderProcessRenderer(RenderOptions(engine="eevee", timeout_s=600))
    yield r
    r.close()


@pytest.fixture(scope="module")
def walk(renderer, tmp_path_factory):
    root = tmp_path_factory.mktemp("eevee")
    clip = prepare_clip(walk_spec(), frames=FRAMES)
    result = renderer.render(clip.job)
    files = write_clip(root, clip.job.spec, result, clip.poses, clip.joints, clip.job.camera, result.software)
    return clip, result, files


@pytest.mark.parametrize("convention", ["clean", "surreal"])
def test_standin_geometry_and_flow_on_eevee(renderer, convention):
    """The stand-in's closed-form geometry as on Cycles; the flow within EEVEE's half-float bound."""
    job = standin_job(3, convention)
    result = renderer.render(job)
    assert renderer.device is not None and renderer.device.startswith("EEVEE")
    check_standin(result, job, flow_atol=EEVEE_BOUNDS["flow_px"], flow_rtol=EEVEE_BOUNDS["flow_relative"])


def test_eevee_agrees_with_cycles_within_the_stated_bounds(walk):
    clip, eevee, _ = walk
    with BlenderProcessRenderer(RenderOptions(timeout_s=300)) as blender:
        cycles = blender.render(clip.job)
    b = EEVEE_BOUNDS
    body = (eevee.segm > 0) | (cycles.segm > 0)
    assert body.sum() > 1000 * FRAMES
    assert (eevee.segm != cycles.segm)[body].mean() <= b["segm_differs"]
    seen = (eevee.segm == cycles.segm) & (eevee.segm > 0)  # the same part at both
    close = np.abs(eevee.depth - cycles.depth) <= b["depth_m"]
    assert close[seen].mean() >= b["depth_within"]
    same = seen & close  # the same surface
    flow_error = np.linalg.norm(eevee.flow - cycles.flow, axis=-1)[same]
    allowed = b["flow_px"] + b["flow_relative"] * np.linalg.norm(cycles.flow, axis=-1)[same]
    assert (flow_error <= allowed).all()
    assert (
        np.linalg.norm(cycles.flow[:-1], axis=-1)[same[:-1]].max() > 2
    )  # it moves: the bound means something
    cosine = np.einsum("...i,...i", eevee.normal.astype(np.float64), cycles.normal)[same]
    assert (1 - cosine).max() <= b["normal"]
    assert np.allclose(np.linalg.norm(eevee.normal[eevee.segm > 0], axis=-1), 1, atol=1e-5)


def test_manifest_states_what_eevee_guarantees(walk):
    _, result, files = walk
    manifest = json.loads((files.directory / "walk_s01_01_c0003_manifest.json").read_text())
    assert manifest["software"]["engine"] == "eevee"
    assert manifest["guarantees"] == GUARANTEES["eevee"] == result.guarantees
    assert set(GUARANTEES["eevee"]) == set(GUARANTEES["cycles"])


def test_two_people_instances_on_eevee(renderer):
    """EEVEE's instance AOV: person k's pixels hold k exactly where segm > 0, and agree with Cycles' within the
    segmentation's bound."""
    from test_render_people import two_people

    job = prepare_clip(two_people(), frames=2).job
    eevee = renderer.render(job)
    with BlenderProcessRenderer(RenderOptions(timeout_s=300)) as blender:
        cycles = blender.render(job)
    assert np.array_equal(eevee.inst > 0, eevee.segm > 0) and set(np.unique(eevee.inst)) == {0, 1, 2}
    body = (eevee.inst > 0) | (cycles.inst > 0)
    assert (eevee.inst != cycles.inst)[body].mean() <= EEVEE_BOUNDS["segm_differs"]
