"""A renderer that imports bpy into this process: for benchmarks and single-shot tools."""

from __future__ import annotations

from farm.render.job import (
    CORRESPONDENCE_ARRAYS,
    RESULT_ARRAYS,
    FrameSink,
    Progress,
    RenderJob,
    RenderOptions,
    RenderResult,
)


class InProcessRenderer:
    """Imports bpy into this process (once) and renders there: for benchmarks and single-shot tools."""

    def __init__(self, options: RenderOptions | None = None) -> None:
        from blender.scene import SceneRenderer  # bpy is imported here, not at module import

        self.options = options or RenderOptions()
        self._scene = SceneRenderer(self.options)

    def render(
        self, job: RenderJob, progress: Progress | None = None, sink: FrameSink | None = None
    ) -> RenderResult:
        result = self._scene.render(job, progress)
        if sink:
            names = RESULT_ARRAYS + (CORRESPONDENCE_ARRAYS if result.uv is not None else ())
            sink({k: getattr(result, k) for k in names}, job.frame_count)
        return result

    def close(self) -> None:
        self._scene.close()
