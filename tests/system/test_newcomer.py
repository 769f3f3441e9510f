"""The README's first command as a newcomer runs it: `make demo` where sudo and apt-get are of no use (the demo
needs no system package), then the command its last line offers, pasted into a shell whose PATH has no venv,
then the README's dataset example as written, on the demo's clips."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import demo_digests
import pytest

pytestmark = [pytest.mark.blender, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_make_demo_needs_no_sudo_and_its_closing_hint_runs_as_pasted(tmp_path):
    shims = tmp_path / "bin"
    shims.mkdir()
    called = tmp_path / "called"
    for program in ("sudo", "apt-get"):  # each notes that it was called, and fails as it would for a user
        (shims / program).write_text(f'#!/bin/sh\necho "{program} $*" >> {called}\nexit 1\n')
        (shims / program).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FARM_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{shims}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    demo = tmp_path / "farm-demo"
    result = subprocess.run(
        ["make", "--no-print-directory", "demo", f"DEMO_DIR={demo}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert not called.exists(), called.read_text()
    hints = [line for line in output.splitlines() if line.startswith("FARM_DATABASE_URL=")]
    assert len(hints) == 1, output[-4000:]

    status = subprocess.run(
        ["bash", "-c", hints[0]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert status.returncode == 0, status.stdout + status.stderr
    done = re.search(r"clips: .*\bdone (\d+)", status.stdout + status.stderr)
    assert done and int(done[1]) == 4, status.stdout + status.stderr
    # The default output is what it was before issue 26's options existed: the same arrays, the same videos.
    assert demo_digests.digests(demo / "output") == json.loads(demo_digests.GOLDEN.read_text())

    # "Using the data": the README's first Python block, run as written beside the demo's folder.
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(from torch.utils.data import DataLoader\n.*?)```", readme, re.S)
    assert block, "README.md has no dataset example"
    example = subprocess.run(
        [sys.executable, "-c", block[1]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert example.returncode == 0, example.stderr[-3000:]
    assert re.search(r"_s01_01_c0001 tensor", example.stdout), example.stdout


def test_the_first_commands_of_using_it_run_as_written_on_the_embedded_defaults(tmp_path):
    """README's "Using it" block up to its first blank line, in a fresh folder (SQLite, a local queue), with
    `farm worker` left out (it runs until stopped; the demo above renders)."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Using it") :]
    block = re.search(r"```sh\n(.*?)\n\n", section, re.S)
    assert block, "README's Using it has no sh block"
    commands = [line.split("  #")[0].replace("[--json]", "").strip() for line in block[1].splitlines()]
    assert commands[0] == "farm catalog import builtin" and "farm status" in commands, commands
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    outputs = {}
    for command in commands:
        if command.startswith("farm worker"):
            continue
        result = subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, (command, result.stdout + result.stderr)
        outputs[command] = result.stdout
    dry_run = next(out for command, out in outputs.items() if "--dry-run" in command)
    assert re.search(r"\d+ new clips would be stored", dry_run), dry_run
    assert "20 new clips queued" in next(out for command, out in outputs.items() if "--limit 20" in command)
    assert re.search(r"clips: queued 20\b", outputs["farm status"]), outputs["farm status"]
