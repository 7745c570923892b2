"""An external store whose source is an S3-compatible bucket (AWS S3, MinIO, Ceph, ...): one object per key.

The key is the store's PREFIX plus the object key (with ``object_prefix``
removed); the value type comes from the object's name like a file's (``.json``
is json, ``.txt`` or no extension is string when the bytes are UTF-8, anything
else bytes) unless the object carries ``x-amz-meta-value-type``. Every poll
lists the bucket (ListObjectsV2, paginated) and downloads only the objects
whose ETag changed; a write is a PutObject conditional on the ETag last seen.
See docs/stores/s3.md.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from django.core.exceptions import ImproperlyConfigured

from datastream_app.codec import ValueType, validate_key
from datastream_app.conf import datastream_settings
from datastream_app.exceptions import Aborted, InvalidKey
from datastream_app.models import MirroredEntry
from datastream_app.stores.mirrored import MirroredStore, Snapshot

logger = logging.getLogger(__name__)

# User metadata naming the value type; S3 sends it as the header x-amz-meta-value-type.
VALUE_TYPE_METADATA = "value-type"

CONTENT_TYPES = {
    ValueType.JSON.value: "application/json",
    ValueType.STRING.value: "text/plain; charset=utf-8",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"

# What S3 and S3-compatible servers answer when a conditional write loses:
# 412 the ETag no longer matches, 404 the object is gone, 409 another
# conditional write to the same key is in flight (AWS).
_LOST_RACE_CODES = {"PreconditionFailed", "412", "NoSuchKey", "404", "NotFound", "ConditionalRequestConflict", "409"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


def infer_value_type(object_key: str, body: bytes, declared: str | None = None) -> str:
    """The value type of an object: its ``value-type`` metadata if set, else from its name and bytes like a file."""
    if declared:
        # An unknown declared type is passed on as is: the store skips the key with a warning.
        return declared.strip().lower()
    name = object_key.rsplit("/", 1)[-1]
    stem, dot, extension = name.rpartition(".")
    # ".env" is a name without an extension, as for files.
    extension = extension.lower() if dot and stem else ""
    if extension == "json":
        return ValueType.JSON.value
    if extension in ("", "txt"):
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return ValueType.BYTES.value
        return ValueType.STRING.value
    return ValueType.BYTES.value


def error_code(exc: ClientError) -> str:
    """The S3 error code of a failed call (``NoSuchKey``, ``PreconditionFailed``, or the HTTP status as text)."""
    response: dict[str, Any] = exc.response
    code = str(response.get("Error", {}).get("Code", "") or "")
    return code or str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


@dataclass(frozen=True, slots=True)
class Listed:
    """One object as ListObjectsV2 reports it."""

    object_key: str
    etag: str
    size: int


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """The headers a PutObject replaces and a write must send again."""

    content_type: str | None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Cached:
    """What the store last downloaded of an object; ``meta`` is None when seeded from the copy without a download."""

    snapshot: Snapshot
    meta: ObjectMeta | None = None


class S3Store(MirroredStore):
    """Serves the objects of one S3 bucket as keys.

    OPTIONS (besides ``poll_interval`` and ``stale_after``): ``bucket``
    (required), ``endpoint_url`` (None: AWS), ``region``, ``access_key`` and
    ``secret_key`` (None: boto3's credential chain), ``object_prefix``,
    ``path_style``, ``if_match`` (False: HEAD check before an unconditional
    put, for servers without conditional writes), ``connect_timeout``,
    ``read_timeout``, ``max_attempts``, ``page_size``, ``download_concurrency``
    and ``max_object_size``; docs/stores/s3.md tells each default.
    """

    def __init__(
        self,
        *,
        alias: str,
        bucket: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        object_prefix: str = "",
        path_style: bool = True,
        if_match: bool = True,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        max_attempts: int = 2,
        page_size: int = 1000,
        download_concurrency: int = 8,
        max_object_size: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(alias=alias, **options)
        # Settings often read these from the environment, where unset means "".
        access_key, secret_key = access_key or None, secret_key or None
        if not bucket:
            raise ImproperlyConfigured(f'DATASTREAM["STORES"][{alias!r}]["OPTIONS"] needs "bucket" for the S3 store.')
        if (access_key is None) != (secret_key is None):
            raise ImproperlyConfigured(
                f'DATASTREAM["STORES"][{alias!r}]["OPTIONS"]: give both "access_key" and "secret_key" or neither.'
            )
        self.bucket = bucket
        self.endpoint_url = endpoint_url or None
        self.region = region
        self.object_prefix = object_prefix
        self.if_match = bool(if_match)
        self.page_size = max(1, min(int(page_size), 1000))
        self.download_concurrency = max(1, int(download_concurrency))
        self._max_object_size = max_object_size
        self._access_key = access_key
        self._secret_key = secret_key
        self._config = Config(
            region_name=region,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # Few retries: an unreachable server must turn into UNAVAILABLE in
            # seconds, and the watcher retries on its own schedule anyway.
            # total_max_attempts counts the first try; botocore's max_attempts would not.
            retries={"total_max_attempts": max(1, int(max_attempts)), "mode": "standard"},
            # "auto" lets botocore use virtual-hosted buckets on AWS; path style
            # (endpoint/bucket/key) is what MinIO and most other servers expect.
            s3={"addressing_style": "path" if path_style else "auto"},
            # botocore >= 1.36 adds CRC checksums to every upload by default,
            # which several S3-compatible servers reject; send them only when
            # an operation requires one.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=max(10, self.download_concurrency),
        )
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._lock = threading.Lock()
        self._cache: dict[str, Cached] = {}
        self._seeded = False
        self._warned: dict[str, str] = {}
        # How many objects the last fetch() downloaded: the cost of a poll, for logs and tests.
        self.last_downloads = 0

    @property
    def max_object_size(self) -> int:
        """Objects larger than this are not downloaded (default: DATASTREAM["MAX_VALUE_BYTES"])."""
        if self._max_object_size is not None:
            return int(self._max_object_size)
        return int(datastream_settings.MAX_VALUE_BYTES)

    # Client

    def client(self) -> Any:
        """The boto3 S3 client, created on first use (building the store must not touch the network)."""
        with self._client_lock:
            if self._client is None:
                # A session per store: boto3's default session is not thread-safe.
                session = boto3.session.Session(
                    aws_access_key_id=self._access_key,
                    aws_secret_access_key=self._secret_key,
                    region_name=self.region,
                )
                self._client = session.client("s3", endpoint_url=self.endpoint_url, config=self._config)
            return self._client

    def close(self) -> None:
        """Close the client's connection pool."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # Keys and object keys

    def key_of(self, object_key: str) -> str:
        """The store key of an object: the store's PREFIX plus the object key without ``object_prefix``."""
        return self.prefix + object_key[len(self.object_prefix) :]

    def object_key_of(self, key: str) -> str:
        """The object key of a store key."""
        return self.object_prefix + key[len(self.prefix) :]

    # Reading

    def list_objects(self) -> Iterator[Listed]:
        """Every object under ``object_prefix``, one ListObjectsV2 page at a time."""
        paginator = self.client().get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=self.object_prefix, PaginationConfig={"PageSize": self.page_size}
        )
        for page in pages:
            for item in page.get("Contents", []):
                yield Listed(object_key=str(item["Key"]), etag=str(item["ETag"]), size=int(item.get("Size", 0)))

    def download(self, object_key: str) -> Cached | None:
        """GET one object; None if it was deleted since the listing."""
        try:
            response = self.client().get_object(Bucket=self.bucket, Key=object_key)
        except ClientError as exc:
            if error_code(exc) in _MISSING_CODES:
                return None
            raise
        body = response["Body"]
        try:
            # One byte over the limit is enough to know: the object may have grown since the listing.
            value = body.read(self.max_object_size + 1)
        finally:
            body.close()
        if len(value) > self.max_object_size:
            self._warn_once(object_key, str(response["ETag"]), f"larger than {self.max_object_size} bytes; skipped")
            return None
        metadata = {str(k).lower(): str(v) for k, v in (response.get("Metadata") or {}).items()}
        value_type = infer_value_type(object_key, value, metadata.get(VALUE_TYPE_METADATA))
        # The ETag of the GET, not of the listing: it is the version of exactly these bytes.
        snapshot = Snapshot(value_type, value, str(response["ETag"]))
        return Cached(snapshot, ObjectMeta(response.get("ContentType"), metadata))

    def download_all(self, object_keys: list[str]) -> list[Cached | None]:
        """download() each object, ``download_concurrency`` at a time (a first listing may fetch thousands)."""
        if len(object_keys) > 1 and self.download_concurrency > 1:
            with ThreadPoolExecutor(max_workers=min(self.download_concurrency, len(object_keys))) as pool:
                return list(pool.map(self.download, object_keys))
        return [self.download(object_key) for object_key in object_keys]

    def fetch(self) -> dict[str, Snapshot]:
        """List the bucket and download only the objects whose ETag changed since the last listing."""
        listing: dict[str, Listed] = {}
        for item in self.list_objects():
            if item.object_key.endswith("/"):
                continue  # a folder marker, as consoles create them
            key = self.key_of(item.object_key)
            try:
                validate_key(key)
            except InvalidKey as exc:
                self._warn_once(item.object_key, item.etag, f"key {key!r} skipped: {exc.message}")
                continue
            listing[key] = item
        with self._lock:
            cache = dict(self._cache)
        if not self._seeded:
            # After a restart the memory cache is empty, but the copy knows each
            # key's ETag: unchanged objects need no download.
            for row in MirroredEntry.objects.filter(store=self.alias).values("key", "value_type", "value", "etag"):
                listed = listing.get(row["key"])
                if listed is not None and listed.etag == row["etag"] and row["key"] not in cache:
                    cache[row["key"]] = Cached(Snapshot(row["value_type"], bytes(row["value"]), row["etag"]))
            self._seeded = True
        stale = [key for key, item in listing.items() if key not in cache or cache[key].snapshot.etag != item.etag]
        result: dict[str, Snapshot] = {}
        wanted = []
        for key in stale:
            item = listing[key]
            if item.size > self.max_object_size:
                self._warn_once(item.object_key, item.etag, f"larger than {self.max_object_size} bytes; skipped")
                continue
            wanted.append(key)
        downloads = dict(zip(wanted, self.download_all([listing[key].object_key for key in wanted]), strict=True))
        self.last_downloads = len(wanted)
        for key in listing:
            got = downloads.get(key)
            if got is not None:
                cache[key] = got
                result[key] = got.snapshot
            elif key in cache:
                # Unchanged, or too large / gone since the listing: keep serving
                # the last version we read, as for an invalid value.
                result[key] = cache[key].snapshot
        with self._lock:
            # A write() that finished during this listing may be overwritten by
            # the older version here; that only costs one download next time.
            self._cache = {key: cache[key] for key in result}
        return result

    def _warn_once(self, object_key: str, etag: str, message: str) -> None:
        if self._warned.get(object_key) != etag:
            self._warned[object_key] = etag
            logger.warning("store %s: object %r %s", self.alias, object_key, message)

    # Writing

    def head(self, object_key: str) -> tuple[str, ObjectMeta] | None:
        """The ETag and headers of an object; None if it does not exist."""
        try:
            response = self.client().head_object(Bucket=self.bucket, Key=object_key)
        except ClientError as exc:
            if error_code(exc) in _MISSING_CODES:
                return None
            raise
        metadata = {str(k).lower(): str(v) for k, v in (response.get("Metadata") or {}).items()}
        return str(response["ETag"]), ObjectMeta(response.get("ContentType"), metadata)

    def write(self, key: str, value: bytes, value_type: str, expected_etag: str) -> Snapshot:
        """PutObject conditional on ``expected_etag`` (If-Match, or a HEAD check first when ``if_match`` is off)."""
        object_key = self.object_key_of(key)
        with self._lock:
            cached = self._cache.get(key)
        meta = cached.meta if cached is not None and cached.snapshot.etag == expected_etag else None
        if meta is None or not self.if_match:
            # The headers are needed again (a put replaces them); without
            # If-Match this check is all the protection there is.
            found = self.head(object_key)
            if found is None:
                raise Aborted(f"key {key!r} was deleted from store {self.alias!r} meanwhile")
            if found[0] != expected_etag:
                raise Aborted(f"key {key!r} changed in store {self.alias!r} meanwhile; read it again and retry")
            meta = found[1]
        metadata = dict(meta.metadata)
        if infer_value_type(object_key, value, metadata.get(VALUE_TYPE_METADATA)) != value_type:
            # New bytes could read as another type (bytes that happen to be
            # UTF-8 in an object without extension); pin the key's type.
            metadata[VALUE_TYPE_METADATA] = value_type
        arguments: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": object_key,
            "Body": value,
            "ContentType": meta.content_type or CONTENT_TYPES.get(value_type, DEFAULT_CONTENT_TYPE),
            "Metadata": metadata,
        }
        if self.if_match:
            arguments["IfMatch"] = expected_etag
        try:
            response = self.client().put_object(**arguments)
        except ClientError as exc:
            if error_code(exc) in _LOST_RACE_CODES:
                raise Aborted(
                    f"key {key!r} changed in store {self.alias!r} meanwhile; read it again and retry"
                ) from exc
            raise
        snapshot = Snapshot(value_type, value, str(response["ETag"]))
        with self._lock:
            self._cache[key] = Cached(snapshot, ObjectMeta(arguments["ContentType"], metadata))
        return snapshot
