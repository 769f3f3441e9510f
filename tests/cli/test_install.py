"""`pip install .` without extras gives a working `farm enqueue` / `farm status`, with no torch in sight.

The farm is built into a wheel from a copy of the tree and installed into a new virtual environment without its
dependencies; the environment sees this checkout's packages through a folder of links that leaves out every
distribution of an optional extra (torch, bpy, flower, the dataset extra's), so nothing is downloaded and an
`import torch` anywhere on those paths fails as it would on a host that never installed it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

import farm

ROOT = Path(__file__).resolve().parents[2]
TREE = ("pyproject.toml", "README.md", "LICENSE", "farm", "scheduler", "worker", "blender", "migrations")

pytestmark = pytest.mark.slow


def extras_distributions() -> set[str]:
    """Every distribution an optional extra names, with what only they pull in (torch's own helpers)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in project["dependencies"]}
    names = {
        _name(r) for extra, reqs in project["optional-dependencies"].items() if extra != "dev" for r in reqs
    }
    return (names - core) | {"triton", "functorch", "torchgen"}


def _name(requirement: str) -> str:
    for stop in "<>=![; ":
        requirement = requirement.split(stop, 1)[0]
    return requirement.lower().replace("_", "-")


def site_without_extras(folder: Path) -> Path:
    """Links to this checkout's site-packages, less the extras' distributions and the farm itself."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    skip = {"farm", "scheduler", "worker", "blender", "migrations"}
    for dist in metadata.distributions():
        name = dist.metadata["Name"].lower().replace("_", "-")
        if name in extras_distributions() or name == "surreal-farm":
            skip |= {Path(str(f)).parts[0] for f in dist.files or ()}
    folder.mkdir()
    for entry in purelib.iterdir():
        if entry.name in skip or entry.name.startswith(("__editable__", "torch", "surreal_farm")):
            continue
        if entry.suffix == ".pth":
            continue  # the editable install's path hooks would bring the checkout back
        (folder / entry.name).symlink_to(entry)
    return folder


@pytest.fixture(scope="module")
def bare_install(tmp_path_factory) -> Path:
    """A new venv with only the farm's wheel (no extras); returns its bin folder."""
    tmp = tmp_path_factory.mktemp("bare")
    src, dist, venv = tmp / "src", tmp / "dist", tmp / "venv"
    src.mkdir()
    for name in TREE:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    env = {**os.environ, "PIP_NO_INDEX": "1"}  # offline; the wheel is built with this setuptools
    build = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(dist),
        str(src),
    ]
    subprocess.run(build, check=True, env=env, capture_output=True, timeout=300)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (wheel,) = dist.glob("*.whl")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)]
    subprocess.run(pip, check=True, env=env, capture_output=True, timeout=300)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "zz-deps.pth").write_text(f"{site_without_extras(tmp / 'deps')}\n")
    return venv / "bin"


def run(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    env["FARM_DATABASE_URL"] = f"sqlite:///{cwd / 'farm.db'}"
    env["FARM_BROKER_URL"] = f"sqla+sqlite:///{cwd / 'broker.db'}"
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_wheel_names_torch_and_flower_only_in_extras(bare_install):
    (wheel,) = bare_install.parent.parent.glob("dist/*.whl")
    with zipfile.ZipFile(wheel) as zf:
        meta = next(zf.read(n).decode() for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
    requires = [
        line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")
    ]
    for name in ("torch", "flower", "bpy"):
        mine = [r for r in requires if _name(r) == name]
        assert mine and all("extra ==" in r for r in mine), (name, mine)
    assert f"Version: {farm.__version__}" in meta and "License-Expression: MIT" in meta


def test_farm_runs_without_torch(bare_install, tmp_path):
    no_torch = run(bare_install, tmp_path, "python", "-c", "import torch")
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    where = run(bare_install, tmp_path, "python", "-c", "import farm; print(farm.__file__)")
    assert where.stdout.startswith(str(bare_install.parent)), where  # the wheel's copy, not this checkout

    version = run(bare_install, tmp_path, "farm", "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"farm (surreal-farm) {farm.__version__}"
    for args in (("catalog", "import", "builtin"), ("enqueue", "--sequences", "walk_s01_01", "--limit", "2")):
        step = run(bare_install, tmp_path, "farm", *args)
        assert step.returncode == 0, step.stderr
    status = run(bare_install, tmp_path, "farm", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["clips"]["queued"] == 2
