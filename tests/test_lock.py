"""requirements.lock still matches pyproject.toml: every requirement of the farm and of every extra is locked,
at a version the requirement allows, with hashes. A dependency changed without `make lock` fails here, not
later as a missing module on a fresh `make setup` (which installs the lock and then the farm without deps)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def locked() -> dict[str, tuple[Version, int]]:
    """name -> (version, number of hashes) of requirements.lock."""
    text = (ROOT / "requirements.lock").read_text()
    found = {}
    for block in re.split(r"\n(?=\S)", text):
        match = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", block)
        if match:
            found[canonicalize_name(match[1])] = (Version(match[2]), block.count("--hash=sha256:"))
    return found


def test_every_requirement_is_locked_at_an_allowed_version_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = locked()
    requirements = [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]
    wrong = []
    for line in requirements:
        requirement = Requirement(line)
        version, hashes = lock.get(canonicalize_name(requirement.name), (None, 0))
        if version is None or not requirement.specifier.contains(version, prereleases=True) or not hashes:
            wrong.append(f"{line} (locked: {version})")
    assert wrong == [], "run `make lock`: " + ", ".join(wrong)
    assert all(hashes for _, hashes in lock.values())
