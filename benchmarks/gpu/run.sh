#!/bin/sh
# The GPU benchmark in one call, on a bare machine that has only the bundle's pieces and prepared jobs:
#
#   sh benchmarks/gpu/run.sh PIECES JOBS WORK [REFERENCE]
#
# PIECES: a folder with `farm bundle --no-torch --split 60M`'s pieces, SHA256SUMS and join.sh;
# JOBS: a folder from `farm jobs prepare`; WORK: an empty folder to join and render into;
# REFERENCE: a CPU render of the same jobs (`farm jobs render JOBS --out REFERENCE`), default: the CPU run here.
# Renders the jobs with Cycles on the CPU, CUDA and OptiX and with EEVEE (on a machine without an NVIDIA GPU:
# the CPU only, and it says so), checks each with `farm qc`, and prints one table and the comparison with the
# CPU render (benchmarks/gpu/compare.py). Exits non-zero when a check or a comparison fails.
set -eu
pieces=$1 jobs=$2 work=$3 reference=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work"
work=$(cd "$work" && pwd)
status=0
for p in "$pieces"/*.tar.gz.[0-9][0-9][0-9]; do  # each piece must fit one command's 64 MiB
    size=$(wc -c < "$p")
    echo "$(basename "$p"): $(( size / 1048576 )) MiB ($size bytes)"
    if [ "$size" -gt 67108864 ]; then echo "$(basename "$p") is over 64 MiB"; status=1; fi
done
t0=$(date +%s)
farm=$(sh "$pieces/join.sh" "$work" | tail -n 1)
echo "joined the bundle in $(( $(date +%s) - t0 )) s: $farm"
bin=$(dirname "$farm")
export FARM_CACHE_DIR="$work/cache" HOME="${HOME:-$work}"

runs="cycles:cpu"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    nvidia-smi -L
    runs="cycles:cpu cycles:cuda cycles:optix eevee:cuda"
else
    echo "no NVIDIA GPU here (nvidia-smi is missing or sees none): rendering on the CPU only"
fi

for run in $runs; do
    engine=${run%:*} device=${run#*:}
    name="$engine-$device"
    sampler=""
    if [ "$device" != cpu ]; then  # the GPU's peak memory while this run renders
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$work/$name.mem" &
        sampler=$!
    fi
    if ! "$farm" jobs render "$jobs" --out "$work/out-$name" --engine "$engine" --device "$device" \
            --report "$work/$name.json" > "$work/$name.log" 2>&1; then
        echo "$name: the render failed:"; tail -n 20 "$work/$name.log"; status=1
    elif ! "$farm" qc "$work/out-$name" > "$work/$name.qc" 2>&1; then
        echo "$name: farm qc found problems:"; tail -n 20 "$work/$name.qc"; status=1
    fi
    if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true; fi
done
"$bin/python" "$here/compare.py" "$work" ${reference:+--reference "$reference"} || status=1
exit $status
