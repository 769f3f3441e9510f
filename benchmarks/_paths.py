"""Imported first by every benchmark: the checkout first on sys.path, then tests/ for its helper modules.

A script's sys.path starts with its own folder (benchmarks/), and the editable install's finder is asked only
after sys.path. tests/ holds folders named like the packages (tests/scheduler, tests/worker, ...), so with
tests/ on the path and the checkout not, `import scheduler` finds tests/scheduler as a namespace package. With
the checkout on the path the real packages win, as under pytest (pyproject's pythonpath = ["."]).
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

for folder in (str(ROOT / "tests"), str(ROOT)):  # ends as [ROOT, ROOT/tests, ...]
    if folder in sys.path:
        sys.path.remove(folder)
    sys.path.insert(0, folder)
