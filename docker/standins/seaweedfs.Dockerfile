# Stand-in for chrislusf/seaweedfs:4.48 (docker/standins/build.sh): the same release's static weed binary.
FROM debian:12.12-slim
COPY weed /usr/bin/weed
EXPOSE 8333 9333
ENTRYPOINT ["/usr/bin/weed"]
