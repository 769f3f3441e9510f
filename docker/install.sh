#!/bin/sh
# Install the farm into the active Python environment. The Dockerfiles run this; tests run it outside a container.
#
#   docker/install.sh deps LOCKFILE   every dependency at the version and sha256 of the image's lock file
#                                    (docker/app.lock, docker/worker.lock: `make lock`); needs only that file,
#                                    so the image caches this layer across code edits
#   docker/install.sh farm           the farm itself, without dependencies
#
# TORCH_INDEX_URL: where torch's CPU build (locked as torch==...+cpu) comes from, for a lock that has torch.
# The PyTorch CPU index by default: the body is evaluated on the CPU (the GPU renders), and PyPI's Linux torch
# pulls gigabytes of CUDA wheels. A mirror of that index may be given instead (an http:// one is trusted as
# given). Empty: pip's own indexes only.
set -eu

TORCH_INDEX_URL="${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}"
pip_install() { python -m pip install --no-cache-dir --disable-pip-version-check "$@"; }

case "${1:-}" in
deps)
    lock="${2:?usage: docker/install.sh deps LOCKFILE}"
    if [ -n "$TORCH_INDEX_URL" ] && grep -q '^torch==' "$lock"; then
        trust=
        case $TORCH_INDEX_URL in http://*)
            trust=${TORCH_INDEX_URL#http://}
            trust="--trusted-host=${trust%%[/:]*}"
            ;;
        esac
        pip_install --require-hashes --extra-index-url "$TORCH_INDEX_URL" $trust -r "$lock"
    else
        pip_install --require-hashes -r "$lock"
    fi
    ;;
farm)
    pip_install --no-deps .
    ;;
*)
    echo "usage: docker/install.sh deps LOCKFILE | farm" >&2
    exit 2
    ;;
esac
