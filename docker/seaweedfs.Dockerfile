# SeaweedFS for the farm: the pinned release's weed (a static binary), socat, which docker/service.sh uses
# to forward the S3 port while weed itself listens on the container's loopback only, and wget (the healthcheck).
#   docker build -f docker/seaweedfs.Dockerfile -t surreal-farm-seaweedfs .
FROM chrislusf/seaweedfs:4.48 AS seaweedfs

FROM debian:12.12-slim
RUN apt-get update && apt-get install -y --no-install-recommends socat wget \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --uid 10002 seaweed && install -d -o seaweed -g seaweed /data
COPY --from=seaweedfs /usr/bin/weed /usr/bin/weed

USER seaweed
WORKDIR /data
