# Stand-in for redis:7.4.2-bookworm (docker/standins/build.sh): Debian 12's redis-server and redis-cli.
FROM debian:12.12-slim
RUN apt-get update && apt-get install -y --no-install-recommends redis-server redis-tools \
    && rm -rf /var/lib/apt/lists/* && install -d -o redis -g redis /data
VOLUME /data
WORKDIR /data
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
