#!/bin/sh
# The images' entrypoint. `exec` replaces this shell, so the program gets the container's signals directly
# (SIGTERM from `docker compose stop` starts Celery's warm shutdown: the clip in hand is finished first).
#
#   entrypoint.sh worker --device optix    ->  farm worker --device optix   (a farm command)
#   entrypoint.sh celery flower ...        ->  celery flower ...            (a program on PATH runs as is)
#
# FARM_GPU_LOCKS=<folder shared by the worker containers of one host>: take one GPU of this host for this
# container. Compose cannot give each replica of `--scale worker=N` its own GPU (a reservation of one GPU
# gives every replica the same one), so each container sees all of them and locks the first free one; the
# lock lives as long as the worker process, which inherits it. The folder must be writable by this user: the
# worker image makes /run/farm-gpus its own, and a new volume mounted there keeps that owner.
set -eu
if [ "$#" -eq 0 ]; then
    set -- --help
fi
if [ "$1" != "farm" ] && ! command -v "$1" >/dev/null 2>&1; then
    set -- farm "$@"
fi

if [ -n "${FARM_GPU_LOCKS:-}" ]; then
    gpus=$(nvidia-smi -L | grep -c '^GPU ' || true)
    if [ "$gpus" -eq 0 ]; then
        echo "entrypoint: no GPU visible (nvidia-smi -L lists none); is the NVIDIA container toolkit installed?" >&2
        exit 1
    fi
    mkdir -p "$FARM_GPU_LOCKS" 2>/dev/null || true
    if [ ! -d "$FARM_GPU_LOCKS" ] || [ ! -w "$FARM_GPU_LOCKS" ]; then
        echo "entrypoint: $FARM_GPU_LOCKS is not writable by uid $(id -u), so no GPU can be locked; make that uid its owner (with compose: docker compose down, docker volume rm the old gpulocks volume, and the next up recreates it from the image, owned by uid 10001)" >&2
        exit 1
    fi
    i=0
    while [ "$i" -lt "$gpus" ]; do
        exec 9>"$FARM_GPU_LOCKS/gpu$i.lock"
        if flock -n 9; then
            export CUDA_VISIBLE_DEVICES="$i"
            echo "entrypoint: this worker renders on GPU $i of $gpus" >&2
            exec "$@"
        fi
        exec 9>&-
        i=$((i + 1))
    done
    echo "entrypoint: all $gpus GPUs of this host already have a worker; scale the workers to at most $gpus" >&2
    exit 1
fi
exec "$@"
