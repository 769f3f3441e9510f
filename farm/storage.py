"""Where finished clips and shared assets live: a local folder (the embedded default) or an S3-compatible bucket.

One small interface (`Storage`) with two implementations, chosen from FARM_STORAGE_URL by `open_storage`.
Every object is written whole or not at all (temp file + rename locally, a single PUT on S3) and carries
its sha256, so `farm verify` can check a finished clip without trusting the writer.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol, TypeVar

from farm.errors import FarmError
from farm.settings import Settings

CHUNK = 1 << 20
SHA256_META = "sha256"  # S3 user metadata (x-amz-meta-sha256)
SHA256_XATTR = "user.farm.sha256"  # the same, as an extended attribute on local files
DEFAULT_RETRY_SECONDS = 120.0  # how long an upload waits out a storage outage before giving up

T = TypeVar("T")


@dataclass(frozen=True)
class ObjectInfo:
    """An object's size and sha256 (hex). From `stat`, sha256 is None when the writer did not store one."""

    sha256: str | None
    size: int


class Storage(Protocol):
    def check(self) -> None: ...
    def put_file(self, local: Path, key: str) -> ObjectInfo: ...
    def stat(self, key: str) -> ObjectInfo | None: ...
    def hash(self, key: str) -> ObjectInfo | None: ...
    def read_bytes(self, key: str) -> bytes: ...
    def get_file(self, key: str, local: Path) -> None: ...
    def delete(self, key: str) -> None: ...
    def uri(self, key: str) -> str: ...
    def key_of(self, uri: str) -> str | None: ...


def open_storage(settings: Settings, retry_seconds: float = DEFAULT_RETRY_SECONDS) -> Storage:
    """The storage FARM_STORAGE_URL names: `s3://bucket/prefix` or a local folder (`file://` optional)."""
    url = settings.storage_url.strip()
    if url.startswith("s3://"):
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise FarmError(f"FARM_STORAGE_URL {url!r} names no bucket; use s3://bucket/prefix")
        return S3Storage(bucket, prefix, settings.s3_endpoint_url, retry_seconds=retry_seconds)
    if url.startswith("file://"):
        url = url.removeprefix("file://")
    elif "://" in url:
        raise FarmError(
            f"FARM_STORAGE_URL {url!r} is neither a local folder nor s3://bucket/prefix; use one of those"
        )
    return LocalStorage(Path(url or "."))


def file_info(path: Path) -> ObjectInfo:
    """sha256 and size of a local file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return ObjectInfo(digest.hexdigest(), size)


def check_key(key: str) -> str:
    """The key if it is a plain relative path; keys come from the database, so never let one escape the root."""
    # Leading, trailing or doubled slashes show up as empty parts.
    if any(part in ("", ".", "..") for part in key.split("/")) or "\\" in key or "\x00" in key:
        raise FarmError(
            f"the storage key {key!r} is not a plain relative path like 'cmu/train/run0/clip.mp4'"
        )
    return key


@contextlib.contextmanager
def _temp_beside(dest: Path) -> Iterator[tuple[IO[bytes], Path]]:
    """A temp file in dest's folder (so the final rename is atomic); removed unless renamed into place."""
    if (
        not dest.parent.is_dir()
    ):  # mkdir locks the parent folder even when it exists: busy workers queue on it
        dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f, temp
    finally:
        temp.unlink(missing_ok=True)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's 0600 would hide the dataset from its users


def _commit(f: IO[bytes], temp: Path, dest: Path) -> None:
    f.flush()
    os.fchmod(f.fileno(), FILE_MODE)
    os.fsync(f.fileno())
    os.replace(temp, dest)
    # Make the rename itself durable: a crash right after must not lose the entry.
    dir_fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class LocalStorage:
    """Objects are files under `root`; the key is the relative path."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FarmError(
                f"cannot create the output folder {self.root} ({exc.strerror}); fix FARM_STORAGE_URL or its permissions"
            ) from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise FarmError(
                f"the output folder {self.root} is not writable; fix its permissions or FARM_STORAGE_URL"
            )

    def put_file(self, local: Path, key: str) -> ObjectInfo:
        dest = self._path(key)
        info = file_info(local)
        if dest.is_file() and dest.stat().st_size == info.size and file_info(dest) == info:
            return info  # already there, byte for byte
        with _temp_beside(dest) as (f, temp), local.open("rb") as src:
            while chunk := src.read(CHUNK):
                f.write(chunk)
            with contextlib.suppress(OSError):  # some file systems have no user xattrs; hash() still works
                os.setxattr(temp, SHA256_XATTR, str(info.sha256).encode())
            _commit(f, temp, dest)
        return info

    def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        try:
            sha256: str | None = os.getxattr(path, SHA256_XATTR).decode()
        except OSError:
            sha256 = None
        return ObjectInfo(sha256, size)

    def hash(self, key: str) -> ObjectInfo | None:
        try:
            return file_info(self._path(key))
        except (FileNotFoundError, IsADirectoryError):
            return None

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise FarmError(f"{self.uri(key)} does not exist in the output folder {self.root}") from None

    def get_file(self, key: str, local: Path) -> None:
        path = self._path(key)
        try:
            src = path.open("rb")
        except FileNotFoundError:
            raise FarmError(f"{path} does not exist in the output folder {self.root}") from None
        with src, _temp_beside(local) as (f, temp):
            while chunk := src.read(CHUNK):
                f.write(chunk)
            _commit(f, temp, local)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def uri(self, key: str) -> str:
        return str(self._path(key))

    def key_of(self, uri: str) -> str | None:
        path = Path(uri.removeprefix("file://")).expanduser().resolve()
        return path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else None


def _s3_config(connect_timeout: float, read_timeout: float) -> Any:
    from botocore.config import Config

    return Config(
        # Non-AWS servers (SeaweedFS, Ceph, older MinIO) reject or mangle the CRC checksums that recent boto3
        # adds by default; only send and check them where the API demands it.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"},  # bucket.host names need wildcard DNS that local servers lack
        # A few quick retries for blips; longer outages are waited out by S3Storage._retrying.
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        tcp_keepalive=True,
    )


class S3Storage:
    """Objects under s3://bucket/prefix/ on AWS or any S3-compatible server (endpoint_url)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        *,
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
        max_backoff: float = 10.0,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        import boto3

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.retry_seconds = retry_seconds
        self.max_backoff = max_backoff
        # Credentials come from the standard AWS variables, profiles or instance roles unless given here.
        session = boto3.session.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key)
        self.client = session.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=session.region_name or "us-east-1",
            config=_s3_config(connect_timeout, read_timeout),
        )
        self._conditional_writes = True  # cleared if the server rejects If-None-Match

    @property
    def where(self) -> str:
        return self.endpoint_url or "AWS S3"

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def key_of(self, uri: str) -> str | None:
        root = f"s3://{self.bucket}/{self.prefix + '/' if self.prefix else ''}"
        return uri.removeprefix(root) if uri.startswith(root) else None

    # Errors -------------------------------------------------------------------------------------------

    def _error(self, exc: Exception, doing: str) -> FarmError:
        """One sentence for an S3 failure that waiting will not fix."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        if isinstance(exc, NoCredentialsError):
            return FarmError(
                f"no S3 credentials found for {self.where}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        if isinstance(exc, ClientError):
            code, status = _client_error(exc)
            if code in ("NoSuchBucket",) or (status == 404 and doing == "checking the bucket"):
                return FarmError(
                    f"the bucket {self.bucket!r} does not exist at {self.where}: create it or fix FARM_STORAGE_URL"
                )
            if status in (401, 403):
                return FarmError(
                    f"{self.where} refused the S3 credentials for bucket {self.bucket!r} ({code}); "
                    "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                )
            return FarmError(f"S3 at {self.where} failed while {doing} ({code}, HTTP {status})")
        if isinstance(exc, BotoCoreError):
            return FarmError(
                f"cannot reach S3 at {self.where} while {doing} ({exc}); "
                "check FARM_S3_ENDPOINT_URL and that the server is running"
            )
        return FarmError(f"S3 at {self.where} failed while {doing} ({exc})")

    def _retrying(self, doing: str, op: Callable[[], T]) -> T:
        """Run op, waiting out connection failures and 5xx answers with backoff for up to retry_seconds."""
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.5
        while True:
            try:
                return op()
            except Exception as exc:
                if not _transient(exc):
                    if isinstance(exc, FarmError):
                        raise
                    raise self._error(exc, doing) from exc
                if time.monotonic() + delay > deadline:
                    raise FarmError(
                        f"S3 at {self.where} kept failing for {self.retry_seconds:.0f} s while {doing} ({exc}); "
                        "check that the server is running and FARM_S3_ENDPOINT_URL"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, self.max_backoff)

    # Operations -------------------------------------------------------------------------------------------

    def check(self) -> None:
        # No long retry here: a wrong endpoint or bucket should be reported at once, not after minutes.
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise self._error(exc, "checking the bucket") from exc

    def _head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        def head() -> dict[str, Any] | None:
            try:
                response: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
                return response
            except ClientError as exc:
                if _client_error(exc)[1] == 404:
                    return None
                raise

        return self._retrying(f"reading {self.uri(key)}", head)

    def stat(self, key: str) -> ObjectInfo | None:
        head = self._head(key)
        if head is None:
            return None
        return ObjectInfo(head.get("Metadata", {}).get(SHA256_META), int(head["ContentLength"]))

    def put_file(self, local: Path, key: str) -> ObjectInfo:
        from botocore.exceptions import ClientError

        info = file_info(local)
        existing = self.stat(key)
        if existing == info:
            return info  # already stored with this content: send nothing

        def put(conditional: bool) -> bool:
            """Store the file; False when a conditional write found the key taken."""
            # If-None-Match: * makes a concurrent writer of the same new key lose cleanly instead of racing.
            extra = {"IfNoneMatch": "*"} if conditional else {}
            try:
                with local.open("rb") as body:
                    self.client.put_object(
                        Bucket=self.bucket,
                        Key=self._key(key),
                        Body=body,
                        ContentLength=info.size,
                        Metadata={SHA256_META: str(info.sha256)},
                        **extra,
                    )
            except ClientError as exc:
                code, status = _client_error(exc)
                if conditional and status == 412:
                    return False
                if conditional and (status == 501 or code == "NotImplemented"):
                    self._conditional_writes = False  # an older server: a plain PUT is still atomic
                    return put(False)
                raise
            return True

        # A single PUT is atomic: readers see the old object or the whole new one, never a part.
        doing = f"uploading {local} to {self.uri(key)}"
        conditional = existing is None and self._conditional_writes
        if not self._retrying(doing, lambda: put(conditional)):
            if self.stat(key) == info:
                return info  # another writer stored the same bytes first
            self._retrying(doing, lambda: put(False))
        return info

    def _get(self, key: str, sink: IO[bytes] | None) -> ObjectInfo | None:
        """Download the object (into sink if given) and hash it; None if it does not exist."""
        from botocore.exceptions import ClientError

        def get() -> ObjectInfo | None:
            if sink is not None:  # a retry starts over
                sink.seek(0)
                sink.truncate()
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if _client_error(exc)[1] == 404:
                    return None
                raise
            digest = hashlib.sha256()
            size = 0
            for chunk in response["Body"].iter_chunks(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                if sink is not None:
                    sink.write(chunk)
            return ObjectInfo(digest.hexdigest(), size)

        return self._retrying(f"downloading {self.uri(key)}", get)

    def hash(self, key: str) -> ObjectInfo | None:
        return self._get(key, None)

    def read_bytes(self, key: str) -> bytes:
        buffer = io.BytesIO()
        if self._get(key, buffer) is None:
            raise FarmError(f"{self.uri(key)} does not exist at {self.where}")
        return buffer.getvalue()

    def get_file(self, key: str, local: Path) -> None:
        with _temp_beside(local) as (f, temp):
            if self._get(key, f) is None:
                raise FarmError(f"{self.uri(key)} does not exist at {self.where}")
            _commit(f, temp, local)

    def delete(self, key: str) -> None:
        self._retrying(
            f"deleting {self.uri(key)}",
            lambda: self.client.delete_object(Bucket=self.bucket, Key=self._key(key)),
        )


def _client_error(exc: Any) -> tuple[str, int]:
    response = getattr(exc, "response", {}) or {}
    code = str(response.get("Error", {}).get("Code", "?"))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def _transient(exc: Exception) -> bool:
    """Worth waiting for: the server is unreachable, overloaded or restarting."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, ConnectionError | HTTPClientError):
        return True
    if isinstance(exc, ClientError):
        code, status = _client_error(exc)
        return status >= 500 and code != "NotImplemented" or code in ("SlowDown", "RequestTimeout")
    return False


# Assets ---------------------------------------------------------------------------------------------------


def cached_asset(source: Storage | Settings, uri: str, cache_dir: Path | None = None) -> Path:
    """A local path for an asset: plain paths as they are, s3:// objects downloaded once into the cache.

    The cache is keyed by the object's stored sha256 (or its uri when it has none) and filled by
    download-to-temp + rename, so concurrent worker processes never see a partial file.
    `builtin:` uris are not files; callers resolve those themselves.
    """
    if isinstance(source, Settings):
        cache_dir = cache_dir or source.cache_dir
        storage: Storage = open_storage(source)
    else:
        storage = source
        if cache_dir is None:
            from farm.settings import get_settings

            cache_dir = get_settings().cache_dir
    if not uri.startswith("s3://"):
        path = Path(uri.removeprefix("file://")).expanduser()
        if not path.is_file():
            raise FarmError(f"the asset {uri} does not exist; put the file there or register the asset again")
        return path
    key = storage.key_of(uri)
    if key is None:
        raise FarmError(
            f"the asset {uri} is outside the farm's storage {storage.uri('x')[:-1]}; "
            "upload it there or fix FARM_STORAGE_URL"
        )
    info = storage.stat(key)
    if info is None:
        raise FarmError(
            f"the asset {uri} is not in storage; upload it there (e.g. aws s3 cp) or register it again"
        )
    token = info.sha256 or hashlib.sha256(f"{uri}\n{info.size}".encode()).hexdigest()
    cached = cache_dir / "assets" / token[:2] / token / PurePosixPath(key).name
    if cached.is_file() and cached.stat().st_size == info.size:
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=cached.parent, prefix=f".{cached.name}.", suffix=".tmp")
    os.close(fd)
    temp = Path(name)
    try:
        storage.get_file(key, temp)
        got = file_info(temp)
        if got.size != info.size or (info.sha256 and got.sha256 != info.sha256):
            raise FarmError(
                f"the asset {uri} does not match its stored sha256 or size (corrupt in storage); upload it again"
            )
        os.replace(temp, cached)  # atomic: a concurrent process sees no file or the whole file
    finally:
        temp.unlink(missing_ok=True)
    return cached


def local_asset(uri: str, settings: Settings | None = None) -> str:
    """A uri the asset loaders can open: built-in uris and local paths as they are, s3:// objects fetched
    once into the worker's cache."""
    if not uri.startswith("s3://"):
        return uri
    from farm.settings import get_settings

    return str(cached_asset(settings or get_settings(), uri))
