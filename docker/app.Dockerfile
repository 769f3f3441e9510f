# The app image: migrations, catalog import and enqueue, the reconciler, the bookkeeper and Flower.
#   docker build -f docker/app.Dockerfile -t surreal-farm-app .
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv && useradd --create-home --uid 10001 farm
WORKDIR /opt/farm

# Dependencies first (they change only with the lock file, `make lock`), then the code.
COPY docker/install.sh docker/app.lock ./
RUN ./install.sh deps app.lock
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
EXPOSE 8080 5555
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
CMD ["bookkeeper", "--host", "0.0.0.0", "--port", "8080"]
