"""`farm bundle`: a relocatable worker folder (this machine's Python 3.11, bpy, the farm and its locked
dependencies) that runs on an x86-64 Linux with glibc >= Debian 12's and no network, whatever Python it has.

The runtime is this interpreter's own binary and standard library. A `._pth` file beside the binary fixes
sys.path relative to the folder and makes Python ignore PYTHON* variables and the user's site (as -I does),
so no Python of the host is ever consulted. Shared libraries the binaries need, except glibc's own, are
copied into lib/native and found through LD_LIBRARY_PATH, which the launchers set.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path
from typing import Annotated, BinaryIO

import typer

from farm import __version__
from farm.core.errors import BadUsage, FarmError

ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = ("farm", "scheduler", "worker", "blender", "migrations")

# What `farm jobs render` and `farm qc` import (measured: sys.modules after both, mapped to distributions).
RENDER_DISTS = (
    "bpy", "isal", "numpy", "scipy", "pillow", "imageio-ffmpeg", "pydantic", "pydantic-core", "pydantic-settings",
    "annotated-types", "typing-inspection", "typing-extensions", "python-dotenv", "typer", "click", "rich",
    "markdown-it-py", "mdurl", "pygments", "shellingham", "annotated-doc",
)  # fmt: skip
# Tools for developing the farm, never needed by a worker.
DEV_DISTS = {"pytest", "ruff", "mypy", "pip-tools", "build", "fake-bpy-module-5-0", "cython", "pip", "wheel"}

# glibc's own libraries: the target brings them (glibc >= Debian 12's), and they must match its ld.so.
GLIBC = re.compile(
    r"^(ld-linux.*|libc|libm|libmvec|libpthread|libdl|librt|libutil|libresolv|libanl|libnsl|libBrokenLocale"
    r"|libnss_.*|libthread_db|libc_malloc_debug)\.so"
)
# The GPU driver's libraries come from the target's driver (they must match its kernel module), and so do
# OpenGL's vendor libraries (libEGL_nvidia, libGLX_mesa, ...).
DRIVER = re.compile(r"^(libcuda|libnvidia|libnvoptix|lib(EGL|GLX|GLESv\w*)_\w+|libvulkan)")
# bpy loads OpenGL when imported: glvnd's vendor-neutral dispatchers, which find the target's driver
# through its /usr/share/glvnd; a minimal system has none, a GPU machine's driver brings the vendor part.
GLVND = ("libGL.so.1", "libGLX.so.0", "libGLdispatch.so.0", "libEGL.so.1", "libOpenGL.so.0")
STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages",
               "dist-packages", "__pycache__", "config-3.11-x86_64-linux-gnu"}  # fmt: skip

LAUNCHER = """#!/bin/sh
# The bundle's {what}: its own Python 3.11 and libraries, wherever the folder lies.
here=$(cd "$(dirname "$0")" && pwd)
LD_LIBRARY_PATH="$here/../lib/native${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"
export LD_LIBRARY_PATH
exec "$here/python3.11" {args}"$@"
"""

JOIN = """#!/bin/sh
# Checks the pieces against SHA256SUMS, then joins and unpacks them: sh join.sh [DEST] (default: here).
# Prints the path of the bundle's `farm` launcher.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dest=${{1:-$here}}
cd "$here"
if ! sha256sum -c --quiet SHA256SUMS; then
    echo "join.sh: a piece is missing or damaged (see above); copy it again" >&2
    exit 1
fi
mkdir -p "$dest"
cat {name}.tar.gz.[0-9][0-9][0-9] | tar -xzf - -C "$dest"
echo "$(cd "$dest" && pwd)/{name}/bin/farm"
"""


def parse_size(text: str) -> int:
    """'60M' -> bytes (K, M, G: powers of 1024)."""
    m = re.fullmatch(r"(\d+)([KMG]?)", text.strip().upper())
    if not m or int(m.group(1)) == 0:
        raise BadUsage(f"--split {text!r} is not a size such as 60M")
    return int(m.group(1)) * 1024 ** " KMG".index(m.group(2) or " ")


def dist_closure(names: list[str], extras: tuple[str, ...] = ()) -> list[md.Distribution]:
    """The installed distributions `names` need, with everything they require (markers of this Python; the
    extras asked for, by `extras` for the first ones, by `name[extra]` below them)."""
    from packaging.requirements import Requirement

    seen: dict[str, md.Distribution] = {}
    done: set[tuple[str, tuple[str, ...]]] = set()
    todo = [(n, extras) for n in names]
    while todo:
        text, wanted = todo.pop()
        name = re.sub(r"[-_.]+", "-", text).lower()
        if name in DEV_DISTS or (name, wanted) in done:
            continue
        done.add((name, wanted))
        try:
            dist = seen.get(name) or md.distribution(name)
        except md.PackageNotFoundError as e:
            raise FarmError(
                f"{name} is not installed in this environment; install the farm's lock first"
            ) from e
        first = name not in seen
        seen[name] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": x}) for x in ("", *wanted)):
                # A distribution's plain requirements once; its extras' whenever they are asked for.
                if first or (req.marker is not None and "extra" in str(req.marker)):
                    todo.append((req.name, tuple(req.extras)))
    return [seen[k] for k in sorted(seen)]


def worker_dists(torch: bool) -> list[md.Distribution]:
    """--no-torch: what `farm jobs render` needs; else the farm's own requirements with its torch (bodies)
    and render (bpy) extras."""
    if not torch:
        return dist_closure(list(RENDER_DISTS))
    return dist_closure(["surreal-farm", *RENDER_DISTS], ("torch", "render"))


def _skip(rel: str) -> bool:
    parts = rel.split("/")
    return "__pycache__" in parts or rel.endswith(".pyc") or "tests" in parts[1:-1] or rel.startswith("..")


def copy_dist(dist: md.Distribution, site: Path) -> int:
    """Copy an installed distribution's files (its RECORD) into `site`; returns bytes copied."""
    total = 0
    base = Path(str(dist.locate_file("")))
    for f in dist.files or []:
        rel = str(f)
        if _skip(rel) or rel.endswith(".pth"):
            continue
        src = base / rel
        if not src.is_file():
            continue
        dst = site / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        total += src.stat().st_size
    return total


def copy_project(site: Path) -> None:
    """The farm's own packages as plain files (a checkout may be installed editable), and a dist-info so
    that importlib.metadata reports its version as a normal install does."""
    for pkg in PROJECT_PACKAGES:
        shutil.copytree(ROOT / pkg, site / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    info = site / f"surreal_farm-{__version__}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: surreal-farm\nVersion: {__version__}\n")


def needed_libraries(binaries: list[Path], inside: Path) -> set[Path]:
    """The shared libraries `binaries` load from the system (ldd), less glibc's and the GPU driver's."""
    found: set[Path] = set()
    for chunk in range(0, len(binaries), 200):
        run = subprocess.run(
            ["ldd", *map(str, binaries[chunk : chunk + 200])], capture_output=True, text=True, check=False
        )
        for line in run.stdout.splitlines():
            m = re.match(r"\s*(\S+) => (/\S+)", line)
            if not m or GLIBC.match(m.group(1)) or DRIVER.match(m.group(1)):
                continue
            path = Path(m.group(2))
            if not path.resolve().is_relative_to(inside):
                found.add(path)
    return found


def build_bundle(out: Path, torch: bool) -> dict[str, int]:
    """Write the bundle folder `out` (whole or not at all); returns sizes in bytes per part."""
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        sizes = _build(tmp, torch)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sizes


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _build(folder: Path, torch: bool) -> dict[str, int]:
    bindir, lib = folder / "bin", folder / "lib"
    stdlib = lib / "python3.11"
    site, native = lib / "site-packages", lib / "native"
    for d in (bindir, site, native):
        d.mkdir(parents=True)
    shutil.copy2(os.path.realpath(getattr(sys, "_base_executable", sys.executable)), bindir / "python3.11")
    shutil.copytree(
        sysconfig.get_path("stdlib"),
        stdlib,
        ignore=shutil.ignore_patterns(*STDLIB_SKIP, "*.pyc", "_tkinter.*"),
        symlinks=False,
    )
    dynload = Path(sysconfig.get_path("platstdlib")) / "lib-dynload"
    if not (stdlib / "lib-dynload").exists():
        shutil.copytree(dynload, stdlib / "lib-dynload")
    # sys.path exactly this, relative to the binary; its presence also isolates Python from the environment.
    (bindir / "python3.11._pth").write_text(
        "../lib/python3.11\n../lib/python3.11/lib-dynload\n../lib/site-packages\n"
    )
    for name, what, args in (
        ("python", "python", ""),
        ("farm", "`farm` command", "-c 'from farm.cli.main import main; main()' "),
    ):
        (bindir / name).write_text(LAUNCHER.format(what=what, args=args))
        (bindir / name).chmod(0o755)
    for dist in worker_dists(torch):
        if dist.metadata["Name"] != "surreal-farm":  # copied from the checkout below
            copy_dist(dist, site)
    copy_project(site)
    for name in GLVND:
        for libdir in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"):
            if Path(libdir, name).exists():
                shutil.copy2(Path(libdir, name).resolve(), native / name)
                break
        else:
            raise FarmError(f"{name} is missing here; install libglvnd (Debian: libgl1 libegl1 libopengl0)")
    binaries = [bindir / "python3.11"] + [p for p in lib.rglob("*.so*") if p.is_file() and not p.is_symlink()]
    for path in sorted(needed_libraries(binaries, folder.resolve())):
        shutil.copy2(path.resolve(), native / path.name)
    return {
        "runtime": _tree_size(bindir) + _tree_size(stdlib) + _tree_size(native),
        "packages": _tree_size(site),
    }


def split_bundle(folder: Path, piece: int) -> list[Path]:
    """`folder` as NAME.tar.gz.000, .001, ... of at most `piece` bytes beside it, SHA256SUMS and join.sh.
    gzip because every Linux has it (xz and zstd are missing from minimal images)."""
    name, parent = folder.name, folder.parent
    pieces: list[Path] = []
    digests: list[str] = []

    class Pieces:
        """A file-like writer that rolls over to the next piece at `piece` bytes."""

        def __init__(self) -> None:
            self.f: BinaryIO | None = None
            self.left = 0
            self.h = hashlib.sha256()

        def _next(self) -> None:
            self.close()
            path = parent / f"{name}.tar.gz.{len(pieces):03d}"
            pieces.append(path)
            self.f = open(path, "wb")  # noqa: SIM115 (closed on rollover)
            self.left, self.h = piece, hashlib.sha256()

        def write(self, data: bytes) -> int:
            view = memoryview(data)
            while view:
                if self.f is None or self.left == 0:
                    self._next()
                assert self.f is not None
                n = min(self.left, len(view))
                self.f.write(view[:n])
                self.h.update(view[:n])
                self.left -= n
                view = view[n:]
            return len(data)

        def close(self) -> None:
            if self.f is not None:
                self.f.close()
                digests.append(self.h.hexdigest())
                self.f = None

        def flush(self) -> None:
            pass

    sink = Pieces()
    with tarfile.open(fileobj=sink, mode="w:gz", compresslevel=6) as tar:  # type: ignore[call-overload]
        tar.add(folder, arcname=name, recursive=True)
    sink.close()
    sums = "".join(f"{d}  {p.name}\n" for d, p in zip(digests, pieces, strict=True))
    (parent / "SHA256SUMS").write_text(sums)
    (parent / "join.sh").write_text(JOIN.format(name=name))
    (parent / "join.sh").chmod(0o755)
    return pieces


def bundle(
    out: Annotated[Path, typer.Argument(help="The bundle folder to write (must not exist).")],
    torch: Annotated[
        bool,
        typer.Option("--torch/--no-torch", help="Include torch and the bodies (--no-torch: render only)."),
    ] = True,
    split: Annotated[
        str | None,
        typer.Option(
            help="Also write the folder as numbered .tar.gz pieces of at most this size (e.g. 60M)."
        ),
    ] = None,
) -> None:
    """Write a relocatable, network-free worker: Python 3.11, bpy, the farm and its locked dependencies."""
    from farm.cli.console import out as stdout

    piece = parse_size(split) if split is not None else None
    if not sys.platform.startswith("linux") or sys.version_info[:2] != (3, 11):
        raise FarmError("farm bundle runs only on Linux from the farm's Python 3.11 environment")
    out = out.absolute()
    if out.exists():
        raise FarmError(f"{out} already exists; name a new folder or remove it first")
    if not out.parent.is_dir():
        raise FarmError(f"{out.parent} is not a folder; create it first")
    if piece is not None:
        clash = [p for p in ("SHA256SUMS", "join.sh") if (out.parent / p).exists()]
        clash += [p.name for p in out.parent.glob(f"{out.name}.tar.gz.*")]
        if clash:
            raise FarmError(f"{out.parent / clash[0]} already exists; write the bundle into an empty folder")
    sizes = build_bundle(out, torch)
    stdout.print(
        f"wrote {out}: runtime {sizes['runtime'] / 2**20:.0f} MiB, packages {sizes['packages'] / 2**20:.0f} MiB; "
        f"run {out}/bin/farm",
        highlight=False,
        soft_wrap=True,
    )
    if piece is not None:
        try:
            pieces = split_bundle(out, piece)
        except BaseException:
            for p in out.parent.glob(f"{out.name}.tar.gz.*"):
                p.unlink()
            raise
        for p in pieces:
            stdout.print(f"{p.name}: {p.stat().st_size / 2**20:.1f} MiB", highlight=False)
        stdout.print(
            f"{len(pieces)} pieces, {sum(p.stat().st_size for p in pieces) / 2**20:.1f} MiB in all; "
            f"check and join them with: sh {out.parent / 'join.sh'} [DEST]",
            highlight=False,
            soft_wrap=True,
        )
