"""The GPU benchmark's rehearsal: `farm bundle --no-torch --split 60M` and jobs prepared here render, through
benchmarks/gpu/run.sh, in a container with no network and no Python 3.11 (Debian 13, made here with mmdebstrap), the
pieces copied in one at a time as the GPU machine gets them; the files pass `farm qc` and equal this
machine's render of the same jobs (one warm renderer, clip after clip, as a worker renders) and `farm
render-clip`'s of each clip byte for byte."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from compose_file import ROOT
from conftest import service_missing
from engine import Engine

pytestmark = [pytest.mark.slow, pytest.mark.blender, pytest.mark.timeout(1200)]
FARM = str(Path(sys.executable).parent / "farm")
# Like the GPU machine: a newer system (Debian 13: a newer glibc) whose Python is not 3.11 (it is 3.13).
IMAGE = "surreal-farm-rehearsal:trixie"
PIECE = 60 * 2**20


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = Engine()
    try:
        engine.start()
        if engine.docker("image", "inspect", IMAGE, check=False).returncode != 0:
            rootfs = tmp_path_factory.mktemp("trixie") / "rootfs.tar"
            subprocess.run(
                ["mmdebstrap", "--quiet", "--variant=minbase", "--include=python3", "trixie", str(rootfs)],
                check=True, capture_output=True, timeout=600,
            )  # fmt: skip
            engine.docker("import", str(rootfs), IMAGE, timeout=300)
    except Exception as exc:
        service_missing("a Docker engine of the test's own with a Debian 13 image", exc)
    yield engine
    engine.stop()


def farm(*args: str, cwd: Path, env: dict[str, str]) -> str:
    run = subprocess.run([FARM, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"farm {' '.join(args)} failed:\n{run.stdout}\n{run.stderr[-3000:]}"
    return run.stdout


def same_files(a: Path, b: Path) -> list[str]:
    """Files that differ between two trees, or exist in one only (empty: byte for byte equal)."""
    names = sorted({p.relative_to(a) for p in a.rglob("*") if p.is_file()}
                   | {p.relative_to(b) for p in b.rglob("*") if p.is_file()})  # fmt: skip
    return [str(n) for n in names if not ((a / n).is_file() and (b / n).is_file()
                                          and filecmp.cmp(a / n, b / n, shallow=False))]  # fmt: skip


def test_a_bundle_renders_travelling_jobs_without_network_or_python(engine: Engine, tmp_path: Path) -> None:
    env = {**os.environ, "FARM_DATABASE_URL": f"sqlite:///{tmp_path / 'farm.db'}"}
    env.pop("FARM_CONVENTION", None)
    pieces = tmp_path / "pieces"
    pieces.mkdir()
    printed = farm("bundle", str(pieces / "surreal-farm-worker"), "--no-torch", "--split", "60M",
                   cwd=tmp_path, env=env)  # fmt: skip
    parts = sorted(pieces.glob("surreal-farm-worker.tar.gz.*"))
    assert len(parts) > 1 and all(p.stat().st_size <= PIECE for p in parts), printed
    print(printed)

    farm("catalog", "import", "builtin", cwd=tmp_path, env=env)
    jobs = tmp_path / "jobs"
    farm("jobs", "prepare", str(jobs), "--sequence", "walk_s01_01", "--clips", "2", "--frames", "3",
         cwd=tmp_path, env=env)  # fmt: skip
    reference = tmp_path / "reference"  # as a worker renders: one warm renderer, clip after clip
    farm("jobs", "render", str(jobs), "--out", str(reference), cwd=tmp_path, env=env)
    single = tmp_path / "single"  # and each clip as `farm render-clip` renders it, in a fresh process
    for clip in ("0", "1"):
        farm("render-clip", "--sequence", "walk_s01_01", "--clip", clip, "--frames", "3", "--out", str(single),
             cwd=tmp_path, env=env)  # fmt: skip
    assert not same_files(single, reference)

    name = f"surreal-farm-rehearsal-{os.getpid()}"
    engine.docker("rm", "-f", name, check=False)
    engine.docker("run", "-d", "--name", name, "--network", "none", IMAGE, "sleep", "infinity")
    try:
        probe = engine.docker(
            "exec", name, "sh", "-c", "command -v python3.11; python3 --version", check=False
        )
        assert "/python3.11" not in probe.stdout and "Python 3.13" in probe.stdout, probe.stdout  # not 3.11
        engine.docker("exec", name, "mkdir", "-p", "/rehearsal/pieces", "/rehearsal/bench")
        for f in [*parts, pieces / "SHA256SUMS", pieces / "join.sh"]:  # one at a time, as the GPU machine
            engine.docker("cp", str(f), f"{name}:/rehearsal/pieces/{f.name}")
        engine.docker("cp", str(jobs), f"{name}:/rehearsal/jobs")
        engine.docker("cp", str(reference), f"{name}:/rehearsal/reference")
        for f in ("run.sh", "compare.py"):
            engine.docker("cp", str(ROOT / "benchmarks" / "gpu" / f), f"{name}:/rehearsal/bench/{f}")
        bench = engine.docker(
            "exec", name, "sh", "/rehearsal/bench/run.sh", "/rehearsal/pieces", "/rehearsal/jobs", "/rehearsal/work",
            "/rehearsal/reference", check=False, timeout=900,
        )  # fmt: skip
        print(bench.stdout)
        assert bench.returncode == 0, f"{bench.stdout}\n{bench.stderr[-3000:]}"
        assert "no NVIDIA GPU here" in bench.stdout and "cycles-cpu: PASS (exact)" in bench.stdout
        engine.docker("cp", f"{name}:/rehearsal/work/out-cycles-cpu", str(tmp_path / "rehearsed"))
    finally:
        engine.docker("rm", "-f", name, check=False)
    assert not same_files(tmp_path / "rehearsed", reference)
    qc = subprocess.run([FARM, "qc", str(tmp_path / "rehearsed")], cwd=tmp_path, env=env, capture_output=True)
    assert qc.returncode == 0, qc.stdout
