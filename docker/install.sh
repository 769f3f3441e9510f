#!/bin/sh
# Install the farm into the active Python environment. The Dockerfiles run this; tests run it outside a container.
#
#   docker/install.sh deps [EXTRA[,EXTRA]]  torch (CPU build) and every dependency in pyproject.toml (+ extras);
#                                    needs only pyproject.toml, so the image caches this layer across code edits
#   docker/install.sh farm           the farm itself, without dependencies
#
# TORCH_INDEX_URL: where torch comes from. The PyTorch CPU index by default: the body is evaluated on the CPU
# (the GPU renders), and PyPI's default Linux torch would pull gigabytes of CUDA wheels. Empty: pip's own index.
set -eu

TORCH="torch==2.13.0"
TORCH_INDEX_URL="${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}"
pip_install() { python -m pip install --no-cache-dir --disable-pip-version-check "$@"; }

case "${1:-}" in
deps)
    if [ -n "$TORCH_INDEX_URL" ]; then
        pip_install --index-url "$TORCH_INDEX_URL" "$TORCH"
    else
        pip_install "$TORCH"
    fi
    # The requirement list comes from pyproject.toml, so this file is the only place versions are pinned.
    python - "${2:-}" >/tmp/farm-requirements.txt <<'PY'
import sys
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = [e for e in sys.argv[1].split(",") if e]
print("\n".join(project["dependencies"] + [r for e in extras for r in project["optional-dependencies"][e]]))
PY
    pip_install -r /tmp/farm-requirements.txt
    rm -f /tmp/farm-requirements.txt
    ;;
farm)
    pip_install --no-deps .
    ;;
*)
    echo "usage: docker/install.sh deps [EXTRA[,EXTRA]] | farm" >&2
    exit 2
    ;;
esac
