#!/bin/sh
# Starts Redis, SeaweedFS or Prometheus in its compose container. Secrets come from the environment and go into a private
# file (mode 0600 in FARM_RUN_DIR, a tmpfs in compose), never onto a command line, which any process can read.
#
#   service.sh redis-server [OPTION]...   REDIS_PASSWORD becomes `requirepass` in a redis.conf
#   service.sh weed server [FLAG]...      S3_ACCESS_KEY and S3_SECRET_KEY become the one S3 identity, which may
#                                         read, write and list S3_BUCKET and nothing else; the bucket is created
#                                         on start. weed listens on the container's loopback only (its S3 gRPC
#                                         port would let anyone add an identity), so socat forwards
#                                         FARM_S3_LISTEN (address:port) to weed's -s3.port.
#   service.sh prometheus [FLAG]...       FARM_DASHBOARD_AUTH (user:password), which the bookkeeper asks for:
#                                         the password becomes the scrape's password_file, the user its
#                                         `username`, in a copy of --config.file that Prometheus then reads
set -eu
run=${FARM_RUN_DIR:-/run/farm}
umask 077

# The value of the variable named $1 (called $2 in messages, if given); it must be a plain token (it goes into
# URLs, a config line and JSON).
token() {
    eval "value=\${$1:-}"
    case $value in
    "" | *[!A-Za-z0-9._~-]*)
        echo "service.sh: set ${2:-$1} in cluster.env (letters, digits and . _ ~ - only)" >&2
        exit 2
        ;;
    esac
    printf '%s' "$value"
}

case "${1:-}" in
redis-server)
    shift
    password=$(token REDIS_PASSWORD)
    printf 'requirepass %s\n' "$password" >"$run/redis.conf"
    unset REDIS_PASSWORD REDISCLI_AUTH password
    exec redis-server "$run/redis.conf" "$@"
    ;;
weed)
    key=$(token S3_ACCESS_KEY)
    secret=$(token S3_SECRET_KEY)
    bucket=$(token S3_BUCKET)
    printf '{"identities": [{"name": "farm", "credentials": [{"accessKey": "%s", "secretKey": "%s"}], "actions": ["Read:%s", "Write:%s", "List:%s"]}]}\n' \
        "$key" "$secret" "$bucket" "$bucket" "$bucket" >"$run/s3.json"
    unset S3_ACCESS_KEY S3_SECRET_KEY AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY key secret
    listen=${FARM_S3_LISTEN:?set it to the address:port that socat serves S3 on}
    master= master_grpc= s3=
    for arg; do
        case $arg in
        -master.port=*) master=${arg#*=} ;;
        -master.port.grpc=*) master_grpc=${arg#*=} ;;
        -s3.port=*) s3=${arg#*=} ;;
        esac
    done
    if [ -z "$master" ] || [ -z "$master_grpc" ] || [ -z "$s3" ]; then
        echo "service.sh: give weed -master.port, -master.port.grpc and -s3.port" >&2
        exit 2
    fi

    "$@" "-s3.config=$run/s3.json" &
    weed=$!
    gate=
    trap 'kill -TERM $weed $gate 2>/dev/null || true' TERM INT
    # The bucket, once the master answers (s3.bucket.create reports an existing bucket, on stderr, and changes
    # nothing: a restart with the volume's data finds it there).
    until echo "s3.bucket.create -name $bucket" | timeout 10 weed shell "-master=127.0.0.1:$master.$master_grpc" \
        2>&1 | grep -q -e "created bucket" -e "already exist"; do
        kill -0 "$weed" 2>/dev/null || exit 1
        sleep 1
    done
    socat "TCP-LISTEN:${listen##*:},bind=${listen%:*},fork,reuseaddr" "TCP:127.0.0.1:$s3" &
    gate=$!
    echo "service.sh: S3 on $listen" >&2
    # Either one ending ends the container (compose restarts it).
    while kill -0 "$weed" 2>/dev/null && kill -0 "$gate" 2>/dev/null; do
        sleep 1 &
        wait $! || true
    done
    kill -TERM "$weed" "$gate" 2>/dev/null || true
    status=0
    wait "$weed" || status=$?
    wait "$gate" || true
    exit "$status"
    ;;
prometheus)
    auth=${FARM_DASHBOARD_AUTH:-}
    DASHBOARD_USER=${auth%%:*} DASHBOARD_PASSWORD=${auth#*:}
    case $auth in *:*) ;; *) DASHBOARD_PASSWORD= ;; esac
    user=$(token DASHBOARD_USER "FARM_DASHBOARD_AUTH's user")
    password=$(token DASHBOARD_PASSWORD "FARM_DASHBOARD_AUTH's password")
    printf '%s' "$password" >"$run/dashboard-password"
    unset FARM_DASHBOARD_AUTH DASHBOARD_USER DASHBOARD_PASSWORD auth password
    config=
    for arg; do
        shift
        case $arg in
        --config.file=*)
            config=${arg#*=}
            arg=--config.file=$run/prometheus.yml
            ;;
        esac
        set -- "$@" "$arg"
    done
    if [ -z "$config" ]; then
        echo "service.sh: give prometheus --config.file" >&2
        exit 2
    fi
    sed -e "s|^\([[:space:]]*username:\).*|\1 $user|" \
        -e "s|^\([[:space:]]*password_file:\).*|\1 $run/dashboard-password|" "$config" >"$run/prometheus.yml"
    exec "$@"
    ;;
*)
    echo "usage: service.sh redis-server [OPTION]... | weed server [FLAG]... | prometheus [FLAG]..." >&2
    exit 2
    ;;
esac
