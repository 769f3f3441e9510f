"""Where finished clips and shared assets live: a local folder (the embedded default) or an S3-compatible bucket.

One small interface (`Storage`) with two implementations, chosen from FARM_STORAGE_URL by `open_storage`.
Every object is written whole or not at all (temp file + link or rename locally, a single PUT on S3) and
carries its sha256, so `farm verify` can check a finished clip without trusting the writer.

Workers write with `put_new`, which never writes over an object it has not seen: it creates the key only if it
is free (a hard link locally, `If-None-Match: *` on S3, both decided at the moment the object lands), and
replaces another object only when the caller names that object's version (under a folder lock locally,
`If-Match` on S3). So a worker that lost its lease, even one frozen between its lease check and its write,
cannot replace the files of a clip another worker finished (worker/process.py, `store_files`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import io
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol, TypeVar

from farm.core.errors import FarmError, ServiceUnavailable
from farm.core.files import (
    CHUNK,
    atomic_path,
    atomic_write,
    file_digest,
    seal,
    sync_folder,
    temp_beside,
)
from farm.core.settings import Settings

SHA256_META = "sha256"  # S3 user metadata (x-amz-meta-sha256)
SHA256_XATTR = "user.farm.sha256"  # the same, as an extended attribute on local files
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}")
DEFAULT_RETRY_SECONDS = 120.0  # how long an upload waits out a storage outage before giving up
RACES = 5  # how often put_new looks again when the key changes under it before it gives up

T = TypeVar("T")
log = logging.getLogger(__name__)


def recorded_sha256(value: str | bytes | None) -> str | None:
    """A writer's recorded sha256 if it is one (64 lowercase hex digits), else None: metadata is anyone's word
    who can write to the bucket, and it names cache paths."""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return value if value is not None and SHA256_HEX.fullmatch(value) else None


@dataclass(frozen=True)
class ObjectInfo:
    """An object's size and sha256 (hex). From `stat`, sha256 is None when the writer did not store one."""

    sha256: str | None
    size: int


@dataclass(frozen=True)
class Stored:
    """An object as it is in storage now: its info and its version (the ETag on S3; inode, mtime and size
    locally), for a write or delete that must hit exactly this object and nothing written since."""

    info: ObjectInfo
    version: str


class Storage(Protocol):
    def check(self) -> None: ...
    def put_file(self, local: Path, key: str) -> ObjectInfo: ...
    def put_new(self, local: Path, key: str, replacing: str | None = None) -> ObjectInfo | Stored: ...
    def head(self, key: str) -> Stored | None: ...
    def stat(self, key: str) -> ObjectInfo | None: ...
    def hash(self, key: str) -> ObjectInfo | None: ...
    def read_bytes(self, key: str) -> bytes: ...
    def get_file(self, key: str, local: Path) -> None: ...
    def delete(self, key: str, version: str | None = None) -> None: ...
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
    return ObjectInfo(*file_digest(path))


def check_key(key: str) -> str:
    """The key if it is a plain relative path; keys come from the database, so never let one escape the root."""
    # Leading, trailing or doubled slashes show up as empty parts.
    if any(part in ("", ".", "..") for part in key.split("/")) or "\\" in key or "\x00" in key:
        raise FarmError(
            f"the storage key {key!r} is not a plain relative path like 'cmu/train/run0/clip.mp4'"
        )
    return key


def _commit(f: IO[bytes], temp: Path, dest: Path, replace: bool = True) -> None:
    """Publish the written temp file as dest: replacing whatever is there, or (replace=False) only if dest
    does not exist yet (FileExistsError otherwise: a hard link is created atomically or not at all).

    put_new's own step, not farm.core.files.atomic_write: the create-only hard link, and the caller holding
    the folder lock and setting the xattr between writing and publishing, have no place there."""
    seal(f)
    if replace:
        os.replace(temp, dest)
    else:
        try:
            os.link(temp, dest)
        except FileExistsError:
            raise
        except OSError as exc:  # a file system without hard links (FAT, some FUSE): check, then rename
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            if dest.exists():
                raise FileExistsError(errno.EEXIST, "exists", str(dest)) from exc
            os.replace(temp, dest)
    sync_folder(dest.parent)  # the rename itself durable: a crash right after must not lose the entry


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on a folder (flock on its descriptor), held by replacements and versioned deletes so
    that comparing an object's version and replacing it is one step. Creation needs none (the link decides).
    Where the file system has no flock the lock is skipped: the lease checks still apply."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _local_version(st: os.stat_result) -> str:
    # Every write makes a new inode (temp file + link or rename), so inode and mtime name the write.
    return f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"


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
        """Store the file at key, replacing whatever is there (for tools and tests; workers use put_new)."""
        return _put_replacing(self, local, key)

    def put_new(self, local: Path, key: str, replacing: str | None = None) -> ObjectInfo | Stored:
        """Store the file at key if the key is free, or still holds the object of version `replacing`.

        Returns the file's info when the key now holds these bytes (written now, or already there byte for
        byte), or the object that is there instead (other bytes): it is never written over unless named.
        """
        dest = self._path(key)
        info = file_info(local)
        for _ in range(RACES):
            if replacing is None:
                present = self._present(dest, info)
                if present is not None:
                    return info if present.info == info else present
            with temp_beside(dest) as (f, temp), local.open("rb") as src:
                shutil.copyfileobj(src, f, CHUNK)
                with contextlib.suppress(
                    OSError
                ):  # some file systems have no user xattrs; hash() still works
                    os.setxattr(temp, SHA256_XATTR, str(info.sha256).encode())
                if replacing is None:
                    with contextlib.suppress(FileExistsError):  # another writer was quicker: look again
                        _commit(f, temp, dest, False)  # create only
                        return info
                else:
                    with _folder_lock(dest.parent):
                        current = self.head(key)
                        if current is not None and current.version == replacing:
                            _commit(f, temp, dest)
                            return info
            replacing = None  # it changed or went away since the caller looked: look again
        raise FarmError(f"{self.uri(key)} kept changing while it was being stored; try again")

    def _present(self, dest: Path, info: ObjectInfo) -> Stored | None:
        """What is at dest now; hashed when its size matches `info` (a stored sha256 is the writer's word)."""
        try:
            st = dest.stat()
        except FileNotFoundError:
            return None
        if st.st_size == info.size:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                return Stored(file_info(dest), _local_version(st))
            return None
        return Stored(ObjectInfo(self._xattr_sha256(dest), st.st_size), _local_version(st))

    def head(self, key: str) -> Stored | None:
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return Stored(ObjectInfo(self._xattr_sha256(path), st.st_size), _local_version(st))

    @staticmethod
    def _xattr_sha256(path: Path) -> str | None:
        try:
            return recorded_sha256(os.getxattr(path, SHA256_XATTR))
        except OSError:
            return None

    def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        return ObjectInfo(self._xattr_sha256(path), size)

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
        with src, atomic_write(local) as f:
            shutil.copyfileobj(src, f, CHUNK)

    def delete(self, key: str, version: str | None = None) -> None:
        """Remove the object; with `version`, only if it is still that object."""
        path = self._path(key)
        if version is None:
            path.unlink(missing_ok=True)
            return
        with contextlib.suppress(FileNotFoundError), _folder_lock(path.parent):
            current = self.head(key)
            if current is not None and current.version == version:
                path.unlink(missing_ok=True)

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
            return ServiceUnavailable(
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
        head = self.head(key)
        return None if head is None else head.info

    def head(self, key: str) -> Stored | None:
        head = self._head(key)
        if head is None:
            return None
        info = ObjectInfo(
            recorded_sha256(head.get("Metadata", {}).get(SHA256_META)), int(head["ContentLength"])
        )
        return Stored(info, str(head.get("ETag", "")))

    def put_file(self, local: Path, key: str) -> ObjectInfo:
        """Store the file at key, replacing whatever is there (for tools and tests; workers use put_new)."""
        return _put_replacing(self, local, key)

    def put_new(self, local: Path, key: str, replacing: str | None = None) -> ObjectInfo | Stored:
        """Store the file at key if the key is free, or still holds the object whose ETag is `replacing`.

        Returns the file's info when the key now holds these bytes (written now, or already there: then
        nothing is sent), or the object that is there instead (other bytes): it is never written over unless
        named. The server decides when the upload lands (`If-None-Match: *` / `If-Match`), so an upload that
        stalled mid-body cannot land over an object written in the meantime.
        """
        info = file_info(local)
        doing = f"uploading {local} to {self.uri(key)}"
        for _ in range(RACES):
            if replacing is None:
                present = self.head(key)
                if present is not None:
                    return info if present.info == info else present
            condition = {"IfMatch": replacing} if replacing is not None else {"IfNoneMatch": "*"}
            if self._retrying(doing, functools.partial(self._put, local, key, info, condition)):
                return info
            replacing = None  # 412: it changed or went away since the caller looked: look again
        raise FarmError(f"{self.uri(key)} kept changing while it was being stored; try again")

    def _put(self, local: Path, key: str, info: ObjectInfo, condition: dict[str, str]) -> bool:
        """One PUT of the file; False when the server refused it on its condition (412)."""
        from botocore.exceptions import ClientError

        if not self._conditional_writes:
            condition = {}
        try:
            with local.open(
                "rb"
            ) as body:  # a single PUT is atomic: readers see the old or the whole new object
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    Body=body,
                    ContentLength=info.size,
                    Metadata={SHA256_META: str(info.sha256)},
                    **condition,
                )
        except ClientError as exc:
            code, status = _client_error(exc)
            if condition and status == 412:
                return False
            if condition and (status == 501 or code == "NotImplemented"):
                self._no_conditional_writes()
                return self._put(local, key, info, {})
            raise
        return True

    def _no_conditional_writes(self) -> None:
        if self._conditional_writes:
            log.warning(
                "S3 at %s does not support conditional writes (If-None-Match / If-Match): uploads check "
                "first and then write, so only the workers' lease checks keep a late worker from "
                "replacing a finished clip's files",
                self.where,
            )
        self._conditional_writes = False

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
            # Hashed as it streams in (into the sink, if any), so not farm.core.files.file_digest: no file to read.
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
        with atomic_write(local) as f:
            if self._get(key, f) is None:
                raise FarmError(f"{self.uri(key)} does not exist at {self.where}")

    def delete(self, key: str, version: str | None = None) -> None:
        """Remove the object; with `version` (its ETag), only if it is still that object."""
        from botocore.exceptions import ClientError

        def delete() -> None:
            condition = {"IfMatch": version} if version is not None and self._conditional_writes else {}
            try:
                self.client.delete_object(Bucket=self.bucket, Key=self._key(key), **condition)
            except ClientError as exc:
                code, status = _client_error(exc)
                if condition and status in (404, 412):
                    return  # gone, or replaced since: not the object meant
                if condition and (status == 501 or code == "NotImplemented"):
                    self._no_conditional_writes()
                    return delete()
                raise

        self._retrying(f"deleting {self.uri(key)}", delete)


def _put_replacing(storage: LocalStorage | S3Storage, local: Path, key: str) -> ObjectInfo:
    """put_new, and if another object is there, replace that one (looking again if it changes meanwhile)."""
    replacing = None
    for _ in range(RACES):
        result = storage.put_new(local, key, replacing)
        if isinstance(result, ObjectInfo):
            return result
        replacing = result.version
    raise FarmError(f"{storage.uri(key)} kept changing while it was being stored; try again")


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
            from farm.core.settings import get_settings

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
    name = PurePosixPath(key).name
    cached = cache_dir / "assets" / token[:2] / token / (name if SAFE_FILE_NAME.fullmatch(name) else "asset")
    if cached.is_file() and cached.stat().st_size == info.size:
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    # atomic: a concurrent process sees no file or the whole file
    with atomic_path(cached, durable=False) as temp:
        storage.get_file(key, temp)
        got = file_info(temp)
        if got.size != info.size or (info.sha256 and got.sha256 != info.sha256):
            raise FarmError(
                f"the asset {uri} does not match its stored sha256 or size (corrupt in storage); upload it again"
            )
    return cached


def local_asset(uri: str, settings: Settings | None = None) -> str:
    """A uri the asset loaders can open: built-in uris and local paths as they are, s3:// objects fetched
    once into the worker's cache."""
    if not uri.startswith("s3://"):
        return uri
    from farm.core.settings import get_settings

    return str(cached_asset(settings or get_settings(), uri))
