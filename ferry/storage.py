"""Object storage through the `minio` client, with the streaming pieces Ferry needs.

Uploads are multipart and fed from a bounded queue by a producer thread, so
conversion overlaps with the network and memory stays at a few parts whatever
the object's size. A multipart object only becomes visible when completed, and a
failed producer aborts the upload: nothing half-written is ever visible.

Writes go through `ObjectStore._send`, not minio's put_object: minio-py has no public multipart calls (create,
upload part, complete, abort are its private `_` methods), and over plain http its public calls hash every body
with SHA-256 for the signature (the server then hashes it again), a large share of an upload's CPU. So each write
is signed with minio's public `get_presigned_url` (SigV4 in the query string, payload UNSIGNED-PAYLOAD, valid on
http and https alike) and sent on the client's own urllib3 pool; the listing of open multipart uploads, a request
on the bucket rather than an object (which get_presigned_url cannot sign), goes the same way through the presigner
get_presigned_url itself calls, minio.signer.presign_v4. Reads, object listings, copies, deletes and the presigned
downloads given to users use minio's public API as they are.
"""

from __future__ import annotations

import base64
import hashlib
import queue
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import urllib3
from minio import Minio
from minio.credentials import Credentials
from minio.deleteobjects import DeleteObject
from minio.error import S3Error, ServerError
from minio.signer import presign_v4
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from ferry.config import S3Config
from ferry.errors import FerryError, NotFound, Unavailable

PART_SIZE = 16 * 1024 * 1024
_MIN_PART = 5 * 1024 * 1024
_IN_FLIGHT = 2
# Bodies below this size also carry a Content-MD5 on plain http (control requests, tiny objects); over https
# every body does, as minio-py does it. Larger bodies on http rely on TCP, as they did when minio signed them
# UNSIGNED-PAYLOAD.
MD5_BELOW = 64 * 1024
# How long the URL signed for one of our own requests is valid: it is sent at once and never leaves the process.
_REQUEST_TTL = timedelta(minutes=15)
# Uploads per ListMultipartUploads answer (S3's maximum).
_LIST_UPLOADS_PAGE = 1000


@dataclass(frozen=True)
class UploadResult:
    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class MultipartUpload:
    """A multipart upload in progress (see ObjectStore.list_multipart_uploads)."""

    key: str
    upload_id: str


class _PartUploader:
    """Multipart upload fed from a queue of chunks, each part joined once and sent as is.

    Parts are the queued chunks joined once they reach `part_size` (S3 needs >= 5 MiB for all
    but the last part, not equal sizes), so each byte is copied once on the way to the socket;
    minio's put_object over a file-like stream copied every part several times. Up to
    `_IN_FLIGHT` parts upload at once. An object that fits in one part is a plain PUT.
    """

    def __init__(self, store: ObjectStore, key: str, content_type: str) -> None:
        self.store = store
        self.key = key
        self.content_type = content_type
        self.upload_id: str | None = None

    def run(self, q: queue.Queue[bytes | BaseException | None], part_size: int) -> None:
        from concurrent.futures import Future, ThreadPoolExecutor

        store = self.store
        pending: list[tuple[int, Future[str]]] = []
        parts: list[tuple[int, str]] = []
        pool: ThreadPoolExecutor | None = None
        number = 0
        eof = False
        try:
            while not eof:
                buf: list[bytes] = []
                buffered = 0
                while buffered < part_size:
                    item = q.get()
                    if item is None:
                        eof = True
                        break
                    if isinstance(item, BaseException):
                        raise item
                    buf.append(item)
                    buffered += len(item)
                data = buf[0] if len(buf) == 1 else b"".join(buf)
                del buf
                if eof and number == 0:
                    store._put(self.key, data, self.content_type)
                    return
                if not data:
                    break
                if self.upload_id is None:
                    self.upload_id = store.start_multipart(self.key, self.content_type)
                    pool = ThreadPoolExecutor(_IN_FLIGHT, thread_name_prefix=f"part:{self.key}")
                assert pool is not None
                while len(pending) >= _IN_FLIGHT:
                    done_number, fut = pending.pop(0)
                    parts.append((done_number, fut.result()))
                number += 1
                pending.append((number, pool.submit(store.upload_part, self.key, self.upload_id, number, data)))
                del data
            for done_number, fut in pending:
                parts.append((done_number, fut.result()))
            pending.clear()
            store.complete_multipart(self.key, cast(str, self.upload_id), parts)
            self.upload_id = None
        finally:
            if pool is not None:
                for _, fut in pending:
                    fut.cancel()
                pool.shutdown(wait=True)

    def abort(self) -> None:
        if self.upload_id is not None:
            try:
                self.store.abort_multipart(self.key, self.upload_id)
            except Exception:  # noqa: BLE001 - best effort; the original error matters more
                pass
            self.upload_id = None


class _ChunkProducer:
    """The thread that pulls `chunks` into the upload queue, hashing and counting them on the way.

    It ends the queue with None, or with the exception `chunks` raised (also kept in `failure`).
    """

    def __init__(self, key: str, chunks: Iterable[bytes], q: queue.Queue[bytes | BaseException | None],
                 on_bytes: Callable[[int], None] | None) -> None:
        self.chunks = chunks
        self.q = q
        self.on_bytes = on_bytes
        self.digest = hashlib.sha256()
        self.size = 0
        self.failure: list[BaseException] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._produce, name=f"upload:{key}", daemon=True)

    def _produce(self) -> None:
        q = self.q
        try:
            for chunk in self.chunks:
                if self._stop.is_set():
                    return
                if not chunk:
                    continue
                self.digest.update(chunk)
                self.size += len(chunk)
                q.put(chunk)
                if self.on_bytes is not None:
                    self.on_bytes(len(chunk))
            q.put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self.failure.append(exc)
            q.put(exc)

    def stop(self) -> None:
        """Ask the thread to stop taking chunks and unblock it so it can end."""
        self._stop.set()
        _drain(self.q, self.thread)


def _wrap(exc: Exception, what: str) -> FerryError:
    if isinstance(exc, FerryError):
        return exc
    if isinstance(exc, S3Error):
        if exc.code in ("NoSuchKey", "NoSuchBucket", "NoSuchUpload"):
            return NotFound(f"{what}: {exc.code}")
        return Unavailable(f"object storage failed ({what}): {exc.code} {exc.message}")
    if isinstance(exc, ServerError):
        return Unavailable(f"object storage failed ({what}): HTTP {exc.status_code}")
    return Unavailable(f"object storage is unreachable ({what}): {type(exc).__name__}")


class ObjectStore:
    """The bucket Ferry keeps its artifacts in."""

    def __init__(self, cfg: S3Config) -> None:
        self.bucket = cfg.bucket
        self._cfg = cfg
        self._public: Minio | None = None
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5.0, read=60.0),
            maxsize=16,
            retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        self.client = Minio(
            cfg.endpoint,
            access_key=str(cfg.access_key),
            secret_key=str(cfg.secret_key),
            secure=cfg.secure,
            region=cfg.region,
            http_client=self._http,
        )

    def ensure_bucket(self, wait: float = 0.0) -> None:
        """Create the bucket if missing, retrying for up to `wait` seconds while storage starts.

        Every 0.3 s; once `wait` has passed the last attempt's FerryError is raised as it is."""
        for attempt in Retrying(stop=stop_after_delay(wait), wait=wait_fixed(0.3),
                                retry=retry_if_exception_type(FerryError), reraise=True):
            with attempt:
                self._create_bucket()

    def _create_bucket(self) -> None:
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise _wrap(exc, f"create bucket {self.bucket}") from exc
        except Exception as exc:
            raise _wrap(exc, f"create bucket {self.bucket}") from exc

    # -- writes ---------------------------------------------------------------

    def _send(self, method: str, key: str, query: dict[str, str], body: bytes | None = None,
              headers: dict[str, str] | None = None) -> urllib3.BaseHTTPResponse:
        """One S3 request on `key`, signed by minio's public presigner; S3Error (or ServerError) when refused.

        Only the host is signed and the payload is UNSIGNED-PAYLOAD, so a body is sent as it is, hashed by
        nobody on http (see the module docstring); the URL is valid for _REQUEST_TTL.
        """
        url = self.client.get_presigned_url(method, self.bucket, key, expires=_REQUEST_TTL,
                                            extra_query_params=dict(query))
        return self._request(method, url, key, body, headers)

    def _send_bucket(self, method: str, query: dict[str, str]) -> urllib3.BaseHTTPResponse:
        """One S3 request on the bucket itself (ListMultipartUploads), signed like _send's.

        get_presigned_url signs object URLs only, so the bucket's URL goes through the SigV4 presigner it
        calls (minio.signer.presign_v4), with the configured region and keys."""
        cfg = self._cfg
        url = urlsplit(f"{'https' if cfg.secure else 'http'}://{cfg.endpoint}/{self.bucket}")
        signed = presign_v4(method=method, url=url._replace(query=urlencode(query, quote_via=quote)),
                            region=cfg.region, credentials=Credentials(str(cfg.access_key), str(cfg.secret_key)),
                            date=datetime.now(UTC), expires=int(_REQUEST_TTL.total_seconds()))
        return self._request(method, urlunsplit(signed), self.bucket)

    def _request(self, method: str, url: str, what: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> urllib3.BaseHTTPResponse:
        """Send a signed URL on the client's pool; S3Error (or ServerError naming `what`) when refused."""
        sent = dict(headers or {})
        if body is not None and (self._cfg.secure or len(body) < MD5_BELOW):
            sent["Content-MD5"] = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
        resp = self._http.request(method, url, body=body, headers=sent)
        if resp.status < 300 and not (method == "POST" and _xml_root(resp.data) == "Error"):
            return resp
        # S3 answers errors in XML (CompleteMultipartUpload may do so with a 200 once the upload has started).
        if _xml_root(resp.data) == "Error":
            raise S3Error.fromxml(resp)
        raise ServerError(f"object storage answered HTTP {resp.status} to {method} {what}", resp.status)

    def _put(self, key: str, data: bytes, content_type: str) -> None:
        """One PutObject of `data` (at most 5 GiB: S3's limit for a single PUT)."""
        self._send("PUT", key, {}, data, {"Content-Type": content_type})

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> UploadResult:
        """Store `data` under `key`: one PUT up to PART_SIZE, else a multipart upload of PART_SIZE parts."""
        if len(data) > PART_SIZE:
            parts = (data[i: i + PART_SIZE] for i in range(0, len(data), PART_SIZE))
            return self.upload_stream(key, parts, content_type=content_type, queue_chunks=_IN_FLIGHT)
        try:
            self._put(key, data, content_type)
        except Exception as exc:
            raise _wrap(exc, f"put {key}") from exc
        return UploadResult(key, len(data), hashlib.sha256(data).hexdigest())

    def upload_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        content_type: str = "application/octet-stream",
        part_size: int = PART_SIZE,
        on_bytes: Callable[[int], None] | None = None,
        queue_chunks: int = 8,
    ) -> UploadResult:
        """Upload an object of unknown length from `chunks`, produced in a worker thread.

        The producer (usually a conversion) runs ahead of the upload by at most
        `queue_chunks` chunks. Any exception from `chunks` aborts the multipart
        upload and is re-raised here unchanged.
        """
        if part_size < _MIN_PART:
            raise ValueError("part_size must be at least 5 MiB (S3's minimum for all but the last part)")
        q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=queue_chunks)
        producer = _ChunkProducer(key, chunks, q, on_bytes)
        producer.thread.start()
        uploader = _PartUploader(self, key, content_type)
        try:
            uploader.run(q, part_size)
        except BaseException as exc:
            producer.stop()
            uploader.abort()
            if producer.failure:
                raise producer.failure[0] from None
            raise _wrap(exc, f"upload {key}") if isinstance(exc, Exception) else exc from exc
        producer.thread.join()
        return UploadResult(key, producer.size, producer.digest.hexdigest())

    # -- multipart, for writers that checkpoint between parts (the importer's resumable uploads) ----------

    def start_multipart(self, key: str, content_type: str = "application/octet-stream") -> str:
        """Open a multipart upload; nothing is visible under `key` until complete_multipart()."""
        try:
            resp = self._send("POST", key, {"uploads": ""}, headers={"Content-Type": content_type})
            upload_id = _xml_text(resp.data, "UploadId")
            if not upload_id:
                raise ServerError("CreateMultipartUpload answered without an UploadId", resp.status)
            return upload_id
        except Exception as exc:
            raise _wrap(exc, f"start the upload of {key}") from exc

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        """Upload part `number` (1-based); returns its ETag for complete_multipart()."""
        try:
            resp = self._send("PUT", key, {"partNumber": str(number), "uploadId": upload_id}, data)
            return str(resp.headers.get("ETag", "")).replace('"', "")
        except Exception as exc:
            raise _wrap(exc, f"upload part {number} of {key}") from exc

    def complete_multipart(self, key: str, upload_id: str, etags: list[tuple[int, str]]) -> None:
        root = ET.Element("CompleteMultipartUpload")
        for number, etag in etags:
            part = ET.SubElement(root, "Part")
            ET.SubElement(part, "PartNumber").text = str(number)
            ET.SubElement(part, "ETag").text = f'"{etag}"'
        try:
            self._send("POST", key, {"uploadId": upload_id}, ET.tostring(root), {"Content-Type": "application/xml"})
        except Exception as exc:
            raise _wrap(exc, f"complete {key}") from exc

    def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            self._send("DELETE", key, {"uploadId": upload_id})
        except Exception as exc:
            raise _wrap(exc, f"abort the upload of {key}") from exc

    def list_multipart_uploads(self, prefix: str = "") -> list[MultipartUpload]:
        """Multipart uploads under `prefix` that were started and neither completed nor aborted."""
        out: list[MultipartUpload] = []
        first = {"uploads": "", "prefix": prefix, "max-uploads": str(_LIST_UPLOADS_PAGE)}
        query = first
        try:
            while True:
                root = ET.fromstring(self._send_bucket("GET", query).data)
                out += [MultipartUpload(_child_text(u, "Key"), _child_text(u, "UploadId"))
                        for u in root if _local(u.tag) == "Upload"]
                # The next page starts after these markers (SeaweedFS gives the upload id's only).
                markers = {param: value for param, value in (
                    ("key-marker", _child_text(root, "NextKeyMarker")),
                    ("upload-id-marker", _child_text(root, "NextUploadIdMarker"))) if value}
                if _child_text(root, "IsTruncated") != "true" or not markers:
                    return out
                query = {**first, **markers}
        except Exception as exc:
            raise _wrap(exc, f"list the uploads under {prefix!r}") from exc

    def copy(self, src: str, dst: str) -> None:
        from minio.commonconfig import CopySource

        try:
            self.client.copy_object(self.bucket, dst, CopySource(self.bucket, src))
        except Exception as exc:
            raise _wrap(exc, f"copy {src}") from exc

    # -- reads ----------------------------------------------------------------

    def stat(self, key: str) -> int | None:
        """Size of the object, or None when it does not exist."""
        try:
            return int(self.client.stat_object(self.bucket, key).size or 0)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return None
            raise _wrap(exc, f"stat {key}") from exc
        except Exception as exc:
            raise _wrap(exc, f"stat {key}") from exc

    def get_bytes(self, key: str, offset: int = 0, length: int = 0) -> bytes:
        """The whole object, or `length` bytes from `offset` by a ranged GET."""
        resp = None
        try:
            resp = self.client.get_object(self.bucket, key, offset=offset, length=length)
            return bytes(resp.read())
        except Exception as exc:
            raise _wrap(exc, f"get {key}") from exc
        finally:
            if resp is not None:
                resp.close()
                resp.release_conn()

    def iter_chunks(self, key: str, chunk_size: int = 1024 * 1024, offset: int = 0) -> Iterator[bytes]:
        """Stream an object in chunks; the connection is released even if the caller stops early."""
        try:
            resp = self.client.get_object(self.bucket, key, offset=offset)
        except Exception as exc:
            raise _wrap(exc, f"get {key}") from exc
        try:
            while True:
                try:
                    chunk = resp.read(chunk_size)
                except Exception as exc:
                    raise _wrap(exc, f"read {key}") from exc
                if not chunk:
                    return
                yield chunk
        finally:
            resp.close()
            resp.release_conn()

    def open(self, key: str) -> Any:
        """A raw response to read like a file; callers must close() and release_conn().

        When wrapping it in io.BufferedReader set `auto_close=False` on it, or the
        last read fails on a closed stream.
        """
        try:
            resp = self.client.get_object(self.bucket, key)
        except Exception as exc:
            raise _wrap(exc, f"get {key}") from exc
        resp.auto_close = False  # type: ignore[attr-defined]
        return resp

    def list_keys(self, prefix: str) -> list[str]:
        try:
            return [o.object_name for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
                    if o.object_name]
        except Exception as exc:
            raise _wrap(exc, f"list {prefix}") from exc

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix`; returns how many were removed."""
        if not prefix or not prefix.endswith("/"):
            raise ValueError("delete_prefix needs a folder prefix ending in '/'")
        keys = self.list_keys(prefix)
        if not keys:
            return 0
        try:
            errors = list(self.client.remove_objects(self.bucket, (DeleteObject(k) for k in keys)))
        except Exception as exc:
            raise _wrap(exc, f"delete {prefix}") from exc
        if errors:
            raise Unavailable(f"object storage failed to delete {len(errors)} objects under {prefix}")
        return len(keys)

    def delete(self, key: str) -> None:
        try:
            self.client.remove_object(self.bucket, key)
        except Exception as exc:
            raise _wrap(exc, f"delete {key}") from exc

    def _signer(self) -> Minio:
        """The client that signs URLs for users: one for the public endpoint when there is one.

        Presigning is local computation (the region is configured, so minio asks the server nothing); the
        signature covers the Host, so a URL signed for the in-cluster name would fail from outside."""
        cfg = self._cfg
        if not cfg.public_endpoint:
            return self.client
        if self._public is None:
            scheme, host = cfg.public_endpoint.split("://", 1)
            self._public = Minio(host, access_key=str(cfg.access_key), secret_key=str(cfg.secret_key),
                                 secure=scheme == "https", region=cfg.region)
        return self._public

    def presigned_get(self, key: str, expires_seconds: int = 3600, filename: str | None = None) -> str:
        headers: dict[str, str | list[str] | tuple[str]] | None = (
            {"response-content-disposition": f'attachment; filename="{filename}"'} if filename else None
        )
        try:
            return str(self._signer().presigned_get_object(
                self.bucket, key, expires=timedelta(seconds=expires_seconds), response_headers=headers
            ))
        except Exception as exc:
            raise _wrap(exc, f"presign {key}") from exc


def _xml_root(data: bytes) -> str:
    """The local name of an XML document's root element ("" when `data` is not XML)."""
    if not data.lstrip().startswith(b"<"):
        return ""
    try:
        return ET.fromstring(data).tag.rsplit("}", 1)[-1]
    except ET.ParseError:
        return ""


def _local(tag: str) -> str:
    """An XML tag without its namespace."""
    return tag.rsplit("}", 1)[-1]


def _child_text(el: ET.Element, name: str) -> str:
    """The text of `el`'s first child called `name` (any namespace), "" when there is none."""
    return next((c.text or "" for c in el if _local(c.tag) == name), "")


def _xml_text(data: bytes, name: str) -> str:
    """The text of the first element called `name` (any namespace) in an S3 XML answer."""
    for el in ET.fromstring(data).iter():
        if el.tag.rsplit("}", 1)[-1] == name:
            return el.text or ""
    return ""


def _drain(q: queue.Queue[Any], producer: threading.Thread) -> None:
    """Unblock a producer stuck on a full queue so its thread can end."""
    while producer.is_alive():
        try:
            q.get(timeout=0.05)
        except queue.Empty:
            pass
