"""A warm Blender's next clip with another texture: found by the bundle's rehearsal (issue 25), where a
second clip rendered after a first in one process came out in the first clip's clothes (Cycles' persistent
data kept the image's old pixels; blender/scene.py now frees that data whenever a texture changes)."""

from __future__ import annotations

import numpy as np
import pytest
from test_render_blender import walk_spec

from farm.render.client import ParallelRenderer
from farm.render.job import RenderOptions
from farm.render.prepare import prepare_clip


@pytest.mark.blender
def test_a_warm_process_draws_the_next_clips_texture():
    first = prepare_clip(walk_spec(), frames=2).job
    second = prepare_clip(walk_spec(texture="builtin:texture/female/train/0109"), frames=2).job
    assert not np.array_equal(first.texture, second.texture)
    with ParallelRenderer(RenderOptions(timeout_s=300, processes=1)) as fresh:
        alone = fresh.render(second)
    with ParallelRenderer(RenderOptions(timeout_s=300, processes=1)) as warm:
        warm.render(first)
        after = warm.render(second)
    assert np.array_equal(after.segm, alone.segm)  # the geometry is right either way
    assert np.array_equal(after.rgb, alone.rgb)
