"""The lock files still match pyproject.toml: every requirement of the farm and of the extras each lock serves is
locked, at a version the requirement allows, with hashes. A dependency changed without `make lock` fails here,
not later as a missing module on a fresh `make setup` or in an image (both install a lock, then the farm without
its dependencies)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


# lock file -> the extras it serves (None: all); the Makefile's `lock` target writes each.
LOCKS = {"requirements.lock": None, "docker/app.lock": ["flower"], "docker/worker.lock": ["torch", "render"]}


def locked(name: str) -> dict[str, tuple[Version, int]]:
    """name -> (version, number of hashes) of a lock file."""
    text = (ROOT / name).read_text()
    found = {}
    for block in re.split(r"\n(?=\S)", text):
        match = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", block)
        if match:
            found[canonicalize_name(match[1])] = (Version(match[2]), block.count("--hash=sha256:"))
    return found


@pytest.mark.parametrize("lock_file", sorted(LOCKS))
def test_every_requirement_is_locked_at_an_allowed_version_with_hashes(lock_file: str) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    lock = locked(lock_file)
    requirements = [*project["dependencies"], *(r for e in LOCKS[lock_file] or extras for r in extras[e])]
    wrong = []
    for line in requirements:
        requirement = Requirement(line)
        version, hashes = lock.get(canonicalize_name(requirement.name), (None, 0))
        if version is None or not requirement.specifier.contains(version, prereleases=True) or not hashes:
            wrong.append(f"{line} (locked: {version})")
    assert wrong == [], "run `make lock`: " + ", ".join(wrong)
    assert all(hashes for _, hashes in lock.values())


def test_the_app_image_has_no_torch() -> None:
    """enqueue, status, the dashboard and Flower need no body: torch and the body models stay in the workers."""
    assert not {"torch", "smplx", "anny", "bpy"} & set(locked("docker/app.lock"))
