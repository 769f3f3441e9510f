# The GPU worker image: Blender (the bpy 5.0.1 wheel, Python 3.11 only) renders with CUDA or OptiX on the GPU
# the container reserves; the body is evaluated with torch's CPU build.
#   docker build -f docker/worker.Dockerfile -t surreal-farm-worker .
#
# Python 3.11 comes from the official Python image: Ubuntu 24.04 (the CUDA base) ships only 3.12, and its
# glibc (2.39) is newer than the Debian 12 one that Python was built against.
FROM python:3.11.14-slim-bookworm AS python

FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04

# compute: CUDA; graphics: makes the NVIDIA runtime mount libnvoptix, which OptiX needs; utility: nvidia-smi.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:/usr/local/bin:$PATH \
    LD_LIBRARY_PATH=/usr/local/lib

# Python's own shared libraries, and the X11/GL client libraries that bpy links against (nothing opens a display).
RUN apt-get update && apt-get install -y --no-install-recommends \
        ca-certificates libssl3t64 libffi8 libsqlite3-0 libbz2-1.0 liblzma5 zlib1g libexpat1 libuuid1 \
        libncursesw6 libreadline8t64 libgdbm6t64 \
        libx11-6 libxext6 libxrender1 libxfixes3 libxi6 libxkbcommon0 libsm6 libice6 libgl1 libegl1 libgomp1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=python /usr/local /usr/local
# /run/farm-gpus: the GPU locks (docker/entrypoint.sh); a new volume mounted there takes the farm user as owner.
RUN python3.11 -c "import ssl, sqlite3, ctypes, lzma, bz2, uuid" \
    && python3.11 -m venv /opt/venv && useradd --create-home --uid 10001 farm \
    && install -d -o farm -g farm /run/farm-gpus
WORKDIR /opt/farm

COPY docker/install.sh docker/worker.lock ./
RUN ./install.sh deps worker.lock
COPY pyproject.toml README.md LICENSE ./
COPY farm farm
COPY scheduler scheduler
COPY worker worker
COPY blender blender
COPY migrations migrations
RUN ./install.sh farm && rm -rf build *.egg-info
COPY docker/entrypoint.sh /usr/local/bin/entrypoint.sh

USER farm
WORKDIR /home/farm
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
# One worker process per container, rendering one clip at a time on the container's one GPU.
CMD ["worker", "--device", "optix", "--concurrency", "1"]
