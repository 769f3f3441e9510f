# SeaweedFS for the farm: the pinned release's weed (a static binary) and socat, which docker/service.sh uses
# to forward the S3 port while weed itself listens on the container's loopback only.
#   docker build -f docker/seaweedfs.Dockerfile -t surreal-farm-seaweedfs .
FROM chrislusf/seaweedfs:4.48 AS seaweedfs

FROM alpine:3.21
RUN apk add --no-cache socat && adduser -D -H -u 10002 seaweed && install -d -o seaweed -g seaweed /data
COPY --from=seaweedfs /usr/bin/weed /usr/bin/weed

USER seaweed
WORKDIR /data
