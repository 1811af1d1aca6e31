"""Plate crops to an S3-compatible object store (MinIO), uploaded in the background.

Why this shape: the event must leave the edge box at once, with the address of its image,
while the upload may wait for the object store for minutes (a link down, MinIO restarting).
So :meth:`CropStore.put` writes the JPEG into a local **cache folder** (atomically, so a crash
never leaves half a file), returns the URL the object *will* have, and queues the upload. A
background thread uploads queued files oldest first, deletes each cached file only after the
store accepted it, and retries failures with exponential backoff (``retry_initial_s`` doubling up
to ``retry_max_s``). On start, files left in the cache by an earlier run (a crash, a restart
during an outage) are queued again, so nothing is lost across restarts.

Object keys: ``plates/YYYY/MM/DD/<event_id>.jpg`` (``vehicles/...``, ``frames/...`` for the
other images), the date being the event's capture date in UTC. Uploading the same key twice
writes the same bytes, so retries are harmless.

URLs (``url_style``):

- ``s3`` (default): ``s3://<bucket>/<key>``: names the object independently of the endpoint,
  credentials or a proxy in front; readers (the query API, ``fetch``) use their own client.
- ``http``: ``<public_base_url or endpoint URL>/<bucket>/<key>`` (path style), directly
  fetchable by a browser when the bucket allows anonymous reads (``public_read: true`` sets
  such a policy for the image prefixes).

Eventual consistency: the URL is in the event before the object exists; a reader may briefly
get "not found" while the upload is queued (longer during an object-store outage).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

__all__ = ["CropStore", "object_key", "parse_url", "split_endpoint", "make_client", "fetch", "KINDS"]

log = logging.getLogger(__name__)

#: image kind -> key prefix
KINDS = {"plate": "plates", "vehicle": "vehicles", "frame": "frames"}
UrlStyle = Literal["s3", "http"]


def object_key(event_id: str, captured_at_ms: int | None, kind: str = "plate") -> str:
    """``plates/2024/05/01/<event_id>.jpg``: capture date in UTC (today when unknown)."""
    moment = (datetime.fromtimestamp(captured_at_ms / 1000.0, timezone.utc) if captured_at_ms is not None
              else datetime.now(timezone.utc))
    return f"{KINDS[kind]}/{moment:%Y/%m/%d}/{event_id}.jpg"


def parse_url(url: str) -> tuple[str, str]:
    """``(bucket, key)`` of an ``s3://bucket/key`` or path-style ``http(s)://host/bucket/key`` URL."""
    parts = urlparse(url)
    if parts.scheme == "s3":
        return parts.netloc, parts.path.lstrip("/")
    if parts.scheme in ("http", "https"):
        bucket, _, key = parts.path.lstrip("/").partition("/")
        if bucket and key:
            return bucket, key
    raise ValueError(f"not an object URL: {url!r} (expected s3://bucket/key or http(s)://host/bucket/key)")


def split_endpoint(endpoint: str, secure: bool = False) -> tuple[str, bool]:
    """``host:port`` and https-or-not from ``host:port`` or an ``http(s)://host:port`` URL."""
    parts = urlparse(endpoint)
    if parts.scheme in ("http", "https") and parts.netloc:
        return parts.netloc, parts.scheme == "https"
    return endpoint, secure


def make_client(endpoint: str, access_key: str, secret_key: str, *, secure: bool = False,
                region: str | None = None, timeout_s: float = 10.0) -> Any:
    """A ``minio.Minio`` client that fails fast (short timeouts, no urllib3 retries: the
    uploader retries with its own backoff, and a hanging request would stall the queue).
    ``endpoint`` is ``host:port`` or an ``http(s)://host:port`` URL."""
    import urllib3
    from minio import Minio

    endpoint, secure = split_endpoint(endpoint, secure)
    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=min(5.0, timeout_s), read=timeout_s),
                               retries=urllib3.Retry(total=0, redirect=0), maxsize=4)
    return Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region,
                 http_client=http)


def fetch(client: Any, url: str) -> bytes:
    """The bytes of the object an event's image URL points at."""
    bucket, key = parse_url(url)
    resp = client.get_object(bucket, key)
    try:
        return resp.read()
    finally:
        resp.close()
        resp.release_conn()


class CropStore:
    """Asynchronous uploader of JPEG crops with a local cache (see the module docstring).

    ``put`` is called from the stage's thread and never touches the network; everything that
    does runs in the uploader thread. ``max_cache_bytes`` bounds the cache: when full, the
    oldest cached crops are dropped (counted in ``dropped``) so the newest survive.
    """

    def __init__(self, *, endpoint: str, access_key: str, secret_key: str, bucket: str,
                 cache_dir: str | os.PathLike[str], secure: bool = False, region: str | None = None,
                 url_style: UrlStyle = "s3", public_base_url: str | None = None, public_read: bool = False,
                 max_cache_bytes: int = 1024 * 1024 * 1024, retry_initial_s: float = 1.0,
                 retry_max_s: float = 60.0, timeout_s: float = 10.0, fsync: bool = False,
                 logger: logging.Logger | None = None) -> None:
        self.endpoint, self.secure = split_endpoint(endpoint, secure)
        self.bucket = bucket
        self.url_style = url_style
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.public_read = public_read
        self.cache_dir = Path(cache_dir)
        self.max_cache_bytes = max_cache_bytes
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.fsync = fsync
        self.log = logger or log
        self.client = make_client(endpoint, access_key, secret_key, secure=secure, region=region, timeout_s=timeout_s)
        self.stats = {"uploaded": 0, "upload_errors": 0, "dropped": 0, "queued": 0}
        self._pending: deque[str] = deque()  # keys, oldest first
        self._sizes: dict[str, int] = {}
        self._cond = threading.Condition()
        self._stop = False
        self._bucket_ready = False
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    # -- stage side --------------------------------------------------------------------------------

    def start(self) -> None:
        """Queue what an earlier run left in the cache, then start the uploader thread."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        left = [p for p in self.cache_dir.rglob("*.jpg") if not p.name.startswith(".")]
        left.sort(key=lambda p: p.stat().st_mtime)
        with self._cond:
            for path in left:
                key = path.relative_to(self.cache_dir).as_posix()
                self._pending.append(key)
                self._sizes[key] = path.stat().st_size
        for stray in self.cache_dir.rglob(".*.tmp"):
            stray.unlink(missing_ok=True)
        for folder in sorted((p for p in self.cache_dir.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            try:
                folder.rmdir()  # empty date folders of uploaded crops; the thread is not running yet
            except OSError:
                pass
        if left:
            self.log.info("crop cache %s: %d images left by an earlier run, uploading them", self.cache_dir, len(left))
        self._thread = threading.Thread(target=self._run, name="crop-upload", daemon=True)
        self._thread.start()

    def url(self, key: str) -> str:
        if self.url_style == "http":
            base = self.public_base_url or f"{'https' if self.secure else 'http'}://{self.endpoint}/{self.bucket}"
            return f"{base}/{key}"
        return f"s3://{self.bucket}/{key}"

    def put(self, key: str, data: bytes) -> str:
        """Cache ``data`` under ``key``, queue its upload, return its URL. Local disk only."""
        from ..stages.publish_files import write_atomic

        path = self.cache_dir / key
        write_atomic(path, bytes(data), fsync=self.fsync)
        with self._cond:
            if key not in self._sizes:
                self._pending.append(key)
            self._sizes[key] = len(data)
            self.stats["queued"] += 1
            self._trim()
            self._cond.notify()
        return self.url(key)

    def _trim(self) -> None:
        while self._pending and sum(self._sizes.values()) > self.max_cache_bytes:
            key = self._pending.popleft()
            self._sizes.pop(key, None)
            (self.cache_dir / key).unlink(missing_ok=True)
            self.stats["dropped"] += 1
            self.log.warning("crop cache %s is full (%d bytes): dropped %s", self.cache_dir, self.max_cache_bytes, key)

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    @property
    def cache_bytes(self) -> int:
        with self._cond:
            return sum(self._sizes.values())

    def close(self, timeout_s: float = 10.0) -> None:
        """Give queued uploads up to ``timeout_s`` (while the store answers), then stop; what is
        left stays in the cache for the next start."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending and self.last_error is None and time.monotonic() < deadline:
                self._cond.wait(0.1)
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(max(0.1, deadline - time.monotonic()) + 5.0)

    # -- uploader thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = self.retry_initial_s
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                key = self._pending[0]
            try:
                self._upload(key)
            except Exception as exc:  # network, S3 errors: all retried
                with self._cond:
                    self.stats["upload_errors"] += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    self.log.warning("crop upload of %s failed (retry in %.1f s): %s", key, backoff, self.last_error)
                    self._cond.wait(backoff)  # woken early only by close()
                backoff = min(backoff * 2, self.retry_max_s)
                continue
            backoff = self.retry_initial_s
            with self._cond:
                if self._pending and self._pending[0] == key:
                    self._pending.popleft()
                self._sizes.pop(key, None)
                self.stats["uploaded"] += 1
                self.last_error = None
                self._cond.notify_all()

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        if not self.client.bucket_exists(self.bucket):
            try:
                self.client.make_bucket(self.bucket)
            except Exception as exc:  # created meanwhile by another uploader
                if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
                    raise
        if self.public_read:
            resources = [f"arn:aws:s3:::{self.bucket}/{prefix}/*" for prefix in KINDS.values()]
            policy = {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": ["*"]}, "Action": ["s3:GetObject"], "Resource": resources}]}
            self.client.set_bucket_policy(self.bucket, json.dumps(policy))
        self._bucket_ready = True

    def _upload(self, key: str) -> None:
        path = self.cache_dir / key
        if not path.exists():  # dropped from a full cache meanwhile
            return
        self._ensure_bucket()
        self.client.fput_object(self.bucket, key, str(path), content_type="image/jpeg")
        path.unlink(missing_ok=True)  # empty date folders are tidied at the next start
