# The worker image, for GPU hosts and for machines without GPUs alike: Blender (the bpy 5.0.1 wheel, Python
# 3.11 only) renders with OptiX or CUDA on the GPU that the container locks, or with Cycles on the CPU; the
# body is evaluated with torch's CPU build.
#   docker build -f docker/worker.Dockerfile -t surreal-farm-worker .
#
# No CUDA base image: Cycles needs only the NVIDIA driver, whose libraries (libcuda, libnvoptix, nvidia-smi)
# the NVIDIA Container Toolkit mounts into any container that reserves a GPU, as NVIDIA_DRIVER_CAPABILITIES
# asks; Blender's own GPU kernels are in the wheel.
FROM python:3.11.14-slim-bookworm

# compute: CUDA; graphics: libnvoptix (OptiX) and the EGL driver (EEVEE); utility: nvidia-smi.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH

# The X11/GL client libraries that bpy links against (nothing opens a display).
RUN apt-get update && apt-get install -y --no-install-recommends \
        libx11-6 libxext6 libxrender1 libxfixes3 libxi6 libxxf86vm1 libxkbcommon0 libsm6 libice6 \
        libgl1 libegl1 libgomp1 \
    && rm -rf /var/lib/apt/lists/*
# /run/farm-gpus: the GPU locks (docker/entrypoint.sh); a new volume mounted there takes the farm user as owner.
RUN python -m venv /opt/venv && useradd --create-home --uid 10001 farm \
    && install -d -o farm -g farm /run/farm-gpus
WORKDIR /opt/farm

# Where torch's CPU build comes from (docker/install.sh): the PyTorch CPU index, or a mirror of it.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
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
# The free body, built here once rather than by every new worker container (about a minute on a CPU).
RUN farm assets build-body >/dev/null
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
# One worker process per container, rendering one clip at a time on the container's one GPU.
CMD ["worker", "--device", "optix", "--concurrency", "1"]
