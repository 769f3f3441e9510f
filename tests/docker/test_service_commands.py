"""SeaweedFS and Redis run with exactly the commands and environment that docker-compose.yml gives them, outside
containers: docker/service.sh, the real `weed`, socat and redis-server. Only the ports (free ones instead),
the data folders and the tmpfs (a temporary folder) differ.

"Outside the container" is an address of this machine other than 127.0.0.1: what compose keeps inside the
container listens on 127.0.0.1 and does not answer there; what the farm's network may reach listens on 0.0.0.0.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from compose_file import (
    SECRET_VALUES,
    SECRETS,
    free_ports,
    listening,
    needs,
    outside_address,
    parsed_config,
    process_tree,
    refused,
    service_argv,
)
from seaweed import weed_binary

pytestmark = pytest.mark.slow

PORT_FLAG = re.compile(r"^(-[\w.]*port[\w.]*)=(\d+)$")


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> dict[str, Any]:
    return parsed_config(tmp_path_factory.mktemp("compose"))


def command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:  # gone meanwhile (service.sh's sleeps come and go)
        return ""


def loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback


@dataclass
class Started:
    proc: subprocess.Popen[bytes]
    log: Path
    run: Path  # the tmpfs stand-in
    ports: dict[str, int] = field(default_factory=dict)  # compose's port flags and their free stand-ins

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                for pid in process_tree(self.proc.pid):
                    os.kill(pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


def start(argv: list[str], env: dict[str, str], folder: Path) -> Started:
    run = folder / "run"
    run.mkdir()
    log = folder / "service.log"
    path = f"{weed_binary().parent}:{os.environ['PATH']}"  # the `weed` that tests/seaweed.py runs
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            env={"PATH": path, "FARM_RUN_DIR": str(run), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=folder,
        )
    return Started(proc, log, run)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_until(ready: Any, started: Started, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert started.proc.poll() is None, f"{what} exited: {started.text()[-3000:]}"
        assert time.monotonic() < deadline, f"{what} did not start: {started.text()[-3000:]}"
        time.sleep(0.3)


# --- SeaweedFS -------------------------------------------------------------------------------------------


@dataclass
class Seaweed:
    started: Started
    outside: str
    gate: int  # socat's port (compose's FARM_S3_LISTEN)
    bucket: str

    def url(self, path: str, host: str | None = None) -> str:
        return f"http://{host or self.outside}:{self.gate}{path}"

    def client(
        self, access_key: str | None = None, secret_key: str | None = None, signed: bool = True
    ) -> Any:
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        config = Config(
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "max_attempts": 1},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=5,
            read_timeout=30,
            **({} if signed else {"signature_version": UNSIGNED}),
        )
        return boto3.client(
            "s3",
            endpoint_url=self.url(""),
            aws_access_key_id=access_key or SECRETS["S3_ACCESS_KEY"],
            aws_secret_access_key=secret_key or SECRETS["S3_SECRET_KEY"],
            region_name="us-east-1",
            config=config,
        )

    def weed_pid(self) -> int:
        (pid,) = [p for p in process_tree(self.started.proc.pid) if command_name(p) == "weed"]
        return pid


@pytest.fixture(scope="module")
def seaweed(config, tmp_path_factory) -> Iterator[Seaweed]:
    needs("socat")
    service = config["services"]["seaweedfs"]
    folder = tmp_path_factory.mktemp("seaweedfs")
    data = folder / "data"
    data.mkdir()
    argv = service_argv(service)
    flags = [m.group(1) for a in argv if (m := PORT_FLAG.match(a)) and m.group(2) != "0"]  # 0: turned off
    *ports, gate = free_ports(len(flags) + 1)
    stand_ins = dict(zip(flags, ports, strict=True))

    def stand_in(arg: str) -> str:
        match = PORT_FLAG.match(arg)
        if match and match.group(1) in stand_ins:
            return f"{match.group(1)}={stand_ins[match.group(1)]}"
        return f"-dir={data}" if arg == "-dir=/data" else arg

    env = {k: str(v) for k, v in service["environment"].items()}
    listen_address = env["FARM_S3_LISTEN"].rsplit(":", 1)[0]
    env["FARM_S3_LISTEN"] = f"{listen_address}:{gate}"
    started = start([stand_in(a) for a in argv], env, folder)
    started.ports = stand_ins
    s3 = Seaweed(started, outside_address(), gate, env["S3_BUCKET"])
    try:
        wait_until(lambda: answers(s3.url("/healthz")), started, "S3 through socat")
        yield s3
    finally:
        started.stop()


def test_compose_keeps_weed_on_loopback_and_only_s3_is_forwarded(seaweed, config):
    service = config["services"]["seaweedfs"]
    assert service["environment"]["FARM_S3_LISTEN"].startswith("0.0.0.0:")
    assert "-webdav=false" in service["command"] and "-master.telemetry=false" in service["command"]

    weed = listening(seaweed.weed_pid())
    # weed listens on exactly the ports compose names (filer, volume, master, S3 and their gRPC), none beyond
    # the container's loopback: no WebDAV, no admin UI, no Iceberg or Lance catalog.
    assert {port for _, port in weed} == set(seaweed.started.ports.values())
    assert all(loopback(address) for address, _ in weed), weed
    answering = [port for _, port in weed if not refused(seaweed.outside, port)]
    assert not answering, f"weed answers on {seaweed.outside} at ports {answering}"
    socat = [p for p in process_tree(seaweed.started.proc.pid) if command_name(p) == "socat"]
    assert [listening(p) for p in socat] == [{("0.0.0.0", seaweed.gate)}]  # all the farm's network sees

    # Inside the container the filer serves the bucket's folder without any key: hence loopback only.
    filer = seaweed.started.ports["-filer.port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{filer}/buckets/", timeout=10) as response:
        assert response.status == 200
    # The healthcheck goes through socat to S3.
    (url,) = [a for a in service["healthcheck"]["test"] if a.startswith("http://")]
    assert answers(url.replace(":8333/", f":{seaweed.gate}/"))


def status(call: Any) -> tuple[str, int]:
    from botocore.exceptions import ClientError

    try:
        call()
    except ClientError as exc:
        return exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]
    return "OK", 200


def test_s3_needs_the_farm_key_which_reaches_only_its_bucket(seaweed):
    bucket, key = seaweed.bucket, "clips/0001/frame.exr"
    farm = seaweed.client()
    # The bucket exists at start: service.sh created it (the farm's key may not).
    farm.head_bucket(Bucket=bucket)
    farm.put_object(Bucket=bucket, Key=key, Body=b"pixels", Metadata={"sha256": "abc"}, IfNoneMatch="*")
    assert status(lambda: farm.put_object(Bucket=bucket, Key=key, Body=b"x", IfNoneMatch="*")) == (
        "PreconditionFailed",
        412,
    )
    assert farm.get_object(Bucket=bucket, Key=key)["Body"].read() == b"pixels"
    assert farm.head_object(Bucket=bucket, Key=key)["Metadata"] == {"sha256": "abc"}
    assert [o["Key"] for o in farm.list_objects_v2(Bucket=bucket)["Contents"]] == [key]

    unsigned = seaweed.client(signed=False)
    assert status(lambda: unsigned.get_object(Bucket=bucket, Key=key)) == ("AccessDenied", 403)
    assert status(lambda: unsigned.put_object(Bucket=bucket, Key="x", Body=b"x")) == ("AccessDenied", 403)
    wrong_secret = seaweed.client(secret_key="not-the-secret")
    assert status(lambda: wrong_secret.get_object(Bucket=bucket, Key=key))[1] == 403
    unknown = seaweed.client(access_key="someone", secret_key="else")
    assert status(lambda: unknown.list_objects_v2(Bucket=bucket))[1] == 403

    # Nothing beyond the bucket's objects: no new buckets, no bucket policy, no other bucket's objects.
    assert status(lambda: farm.create_bucket(Bucket="another")) == ("AccessDenied", 403)
    assert status(lambda: farm.delete_bucket(Bucket=bucket)) == ("AccessDenied", 403)
    policy = '{"Version": "2012-10-17", "Statement": []}'
    assert status(lambda: farm.put_bucket_policy(Bucket=bucket, Policy=policy)) == ("AccessDenied", 403)
    master = f"127.0.0.1:{seaweed.started.ports['-master.port']}.{seaweed.started.ports['-master.port.grpc']}"
    made = subprocess.run(
        [str(weed_binary()), "shell", f"-master={master}"],
        input="s3.bucket.create -name other\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "created bucket" in made.stdout, made.stdout + made.stderr
    assert status(lambda: farm.put_object(Bucket="other", Key="k", Body=b"x")) == ("AccessDenied", 403)
    assert status(lambda: farm.list_objects_v2(Bucket="other")) == ("AccessDenied", 403)

    farm.delete_object(Bucket=bucket, Key=key)
    assert status(lambda: farm.head_object(Bucket=bucket, Key=key))[1] == 404


def assert_no_secret_visible(started: Started, processes: list[int]) -> None:
    for pid in processes:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        for secret in SECRET_VALUES.values():
            assert secret not in cmdline, f"a secret is on the command line of {cmdline!r}"
            # Only service.sh, which reads them, has them in its environment; the servers it starts do not.
            if command_name(pid) != "sh":
                assert secret not in environ, f"a secret is in the environment of {cmdline!r}"
    log = started.text()
    for secret in SECRET_VALUES.values():
        assert secret not in log, "a secret is in the log"
    for made in started.run.iterdir():
        assert made.stat().st_mode & 0o777 == 0o600, f"{made.name} is readable by others"


def test_no_secret_on_a_command_line_in_the_environment_or_in_the_log(seaweed):
    processes = process_tree(seaweed.started.proc.pid)
    assert len(processes) >= 3  # service.sh, weed and socat
    assert_no_secret_visible(seaweed.started, processes)
    assert [p.name for p in seaweed.started.run.iterdir()] == ["s3.json"]


def test_sigterm_stops_weed_and_socat(seaweed):
    processes = process_tree(seaweed.started.proc.pid)
    code = seaweed.started.stop()
    assert code == 0, seaweed.started.text()[-3000:]
    assert not [p for p in processes if Path(f"/proc/{p}").exists()]


# --- Redis -----------------------------------------------------------------------------------------------


def test_redis_takes_its_password_from_a_private_file_and_the_healthcheck_too(config, tmp_path):
    import redis

    server = needs("redis-server")
    service = config["services"]["redis"]
    env = {k: str(v) for k, v in service["environment"].items()}
    (port,) = free_ports(1)
    # compose's command, then where this one listens and keeps its data
    argv = [*service_argv(service), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)]
    started = start(argv, env, tmp_path)
    try:
        wait_until(lambda: not refused("127.0.0.1", port), started, "redis-server")
        assert Path(f"/proc/{started.proc.pid}/exe").resolve() == Path(server).resolve()  # exec'd
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        password = SECRETS["REDIS_PASSWORD"]
        client = redis.Redis.from_url(f"redis://:{password}@127.0.0.1:{port}/0")  # as FARM_BROKER_URL
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert_no_secret_visible(started, [started.proc.pid])
        assert [p.name for p in started.run.iterdir()] == ["redis.conf"]

        # The healthcheck, as compose runs it, with redis-cli pointed at this port.
        fake = tmp_path / "bin"
        fake.mkdir()
        (fake / "redis-cli").write_text(f'#!/bin/sh\nexec {needs("redis-cli")} -p {port} "$@"\n')
        (fake / "redis-cli").chmod(0o755)
        kind, check = service["healthcheck"]["test"]
        assert kind == "CMD-SHELL"

        def healthcheck(**extra: str) -> int:
            path = f"{fake}:{os.environ['PATH']}"
            return subprocess.run(
                ["sh", "-c", check], env={**env, "PATH": path, **extra}, timeout=30
            ).returncode

        assert healthcheck() == 0
        assert healthcheck(REDISCLI_AUTH="wrong") != 0
    finally:
        started.stop()
