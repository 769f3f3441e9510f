"""`farm --help` groups the commands and lists the exit codes; `farm --version` prints the one version."""

from __future__ import annotations

import farm as farm_package


def test_help_groups_the_commands_and_lists_the_exit_codes(farm):  # type: ignore[no-untyped-def]
    run = farm("--help")
    assert run.code == 0
    panels = [
        run.out.index(f"─ {name} ")
        for name in ("Set up", "Plan and track", "Run the farm", "Clips and files")
    ]
    assert panels == sorted(panels), run.out
    words = " ".join(run.out.split())
    assert "Exit codes: 0 success; 1 a check found problems" in words
    assert "2 bad usage" in words and "3 bad input" in words and "4 a service is unreachable" in words


def test_version(farm):  # type: ignore[no-untyped-def]
    run = farm("--version")
    assert run.code == 0 and run.out.strip() == f"farm (surreal-farm) {farm_package.__version__}"


def test_a_value_outside_the_choices_is_bad_usage(farm):  # type: ignore[no-untyped-def]
    run = farm("worker", "--device", "metal")
    assert run.code == 2 and "Invalid value for '--device'" in run.err and "Traceback" not in run.err
