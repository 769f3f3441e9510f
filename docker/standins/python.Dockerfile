# Stand-in for python:3.11.14-slim-bookworm (docker/standins/build.sh): Debian 12's Python 3.11 with venv.
FROM debian:12.12-slim
ENV LANG=C.UTF-8
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/python3.11 /usr/local/bin/python && ln -s /usr/bin/python3.11 /usr/local/bin/python3
CMD ["python3"]
