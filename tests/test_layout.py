"""The tree's layout rules: rooms import downward only, and bpy stays in blender/.

Every import in the source, at module level or inside a function, is an edge. A room is a subpackage of farm/
or one of the top-level packages; ROOMS lists them bottom first, and a room may import only itself and the
rooms before it, so no two rooms (and no two modules) can import each other in a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROOMS = (
    "farm.core",  # settings, spec, models, db, storage, the Celery app: what every part shares
    "farm.assets",  # bodies, motions, textures, backgrounds, safe readers of untrusted files
    "farm.render",  # the renderer boundary: jobs and results, camera and lighting maths, the client
    "blender",  # the only room that imports bpy
    "worker",  # one clip's life: claims, rendering, output files, quality gate, verification
    "scheduler",  # catalogs, the plan, the sampler, enqueue, the reconciler
    "farm.dataset",  # reading rendered clips for training (torch only here): outputs and storage
    "farm.dashboard",  # progress queries, metrics, the web page
    "farm.cli",  # the `farm` command and the demo
)
# The one module outside the rooms: `celery -A farm.celery_app` needs the app at a fixed top-level name. It may
# import only these rooms, and nothing may import it.
TOP_LEVEL = {"farm.celery_app": ("farm.core",)}
PACKAGES = ("farm", "worker", "scheduler", "blender")


def room_of(module: str) -> str | None:
    return next((r for r in ROOMS if module == r or module.startswith(r + ".")), None)


def imports() -> dict[str, set[str]]:
    """module -> the modules of this tree it imports (anywhere in its code)."""
    graph: dict[str, set[str]] = {}
    for package in ("farm", "worker", "scheduler", "blender"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found = graph.setdefault(module, set())
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module)
                    found.update(f"{node.module}.{a.name}" for a in node.names)
                elif isinstance(node, ast.Import):
                    found.update(a.name for a in node.names)
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def test_every_module_lives_in_a_room() -> None:
    homeless = [m for m in imports() if room_of(m) is None and m not in PACKAGES and m not in TOP_LEVEL]
    assert homeless == []


def test_the_top_level_celery_app_imports_only_farm_core() -> None:
    graph = imports()
    for module, rooms in TOP_LEVEL.items():
        assert graph[module] and {room_of(d) for d in graph[module]} <= set(rooms), graph[module]


def test_rooms_import_downward_only() -> None:
    upward = []
    for module, deps in imports().items():
        room = room_of(module)
        for dep in deps:
            target = room_of(dep)
            if room is None or target is None:
                assert dep in PACKAGES or (module in TOP_LEVEL and target is not None), (module, dep)
                continue
            if ROOMS.index(target) > ROOMS.index(room):
                upward.append(f"{module} -> {dep}")
    assert upward == []


def test_no_module_imports_itself_in_a_circle() -> None:
    graph = imports()
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        for dep in sorted(graph[module]):
            if dep in path:
                cycles.append(path[path.index(dep) :] + [dep])
            elif dep not in done:
                visit(dep, path + [dep])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert cycles == []


def test_bpy_is_imported_only_in_blender() -> None:
    users = [m for m, _ in _bpy_importers() if room_of(m) != "blender"]
    assert users == []


def _bpy_importers() -> list[tuple[str, Path]]:
    found = []
    for package in ("farm", "worker", "scheduler", "blender"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                if any(n == "bpy" or n.startswith("bpy.") for n in names):
                    found.append((".".join(path.relative_to(ROOT).with_suffix("").parts), path))
    return found


def test_blender_imports_only_the_render_protocol_and_its_maths() -> None:
    """blender/ takes a plain job and returns arrays: it knows nothing of the database, Celery or storage."""
    allowed = {
        "farm.render.job",
        "farm.render.camera",
        "farm.render.camera_motion",
        "farm.render.lighting",
        "farm.core.spec",
    }
    used = {
        d for m, deps in imports().items() if room_of(m) == "blender" for d in deps if room_of(d) != "blender"
    }
    assert used <= allowed, used - allowed
