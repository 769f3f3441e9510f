"""The original SURREAL's relations hold on EEVEE too: tests/render/test_surreal_meaning.py's real-render tests,
collected again here on a default-convention `farm render-clip` with FARM_ENGINE=eevee (Mesa's software
OpenGL renders it headless, so this runs on every machine, CI included)."""

from __future__ import annotations

import pytest
from test_surreal_meaning import (
    render_default_clip,
    test_default_render_is_in_the_surreal_convention,
    test_flow_is_the_raw_speed_pass_towards_the_previous_frame,
    test_normals_are_world_frame_and_face_the_camera,
    test_pose_and_zrot_give_joints3d_through_rotate_body,
    test_projection_mirror_and_world_frame,
    test_the_originals_keys_plus_visibility_and_boxes,
    test_types_and_shapes_are_the_originals,
)

# Run here on EEVEE's `rendered` (smpl_models is a shared fixture of tests/conftest.py).
SURREAL_TESTS = (
    test_default_render_is_in_the_surreal_convention,
    test_the_originals_keys_plus_visibility_and_boxes,
    test_types_and_shapes_are_the_originals,
    test_projection_mirror_and_world_frame,
    test_pose_and_zrot_give_joints3d_through_rotate_body,
    test_flow_is_the_raw_speed_pass_towards_the_previous_frame,
    test_normals_are_world_frame_and_face_the_camera,
)

pytestmark = pytest.mark.blender


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    files = render_default_clip(tmp_path_factory.mktemp("surreal-eevee"), FARM_ENGINE="eevee")
    assert files["manifest"]["software"]["engine"] == "eevee"
    return files
