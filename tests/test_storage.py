"""ObjectStore against a real SeaweedFS: streaming upload, ranged reads, abort on failure."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from ferry.errors import NotFound
from ferry.storage import ObjectStore


def test_stream_upload_is_whole_and_hashed(object_store: ObjectStore) -> None:
    chunks = [(b"line %d\n" % i) * 1000 for i in range(2000)]
    data = b"".join(chunks)
    result = object_store.upload_stream("a/data.jsonl", iter(chunks), part_size=5 * 1024 * 1024)
    assert result.size == len(data) > 10 * 1024 * 1024
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert object_store.stat("a/data.jsonl") == len(data)
    assert object_store.get_bytes("a/data.jsonl", 1000, 50) == data[1000:1050]
    assert b"".join(object_store.iter_chunks("a/data.jsonl", 777_777)) == data


def test_failed_producer_leaves_no_object(object_store: ObjectStore) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"x" * (6 * 1024 * 1024)
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError, match="conversion failed"):
        object_store.upload_stream("a/broken.jsonl", chunks(), part_size=5 * 1024 * 1024)
    assert object_store.stat("a/broken.jsonl") is None
    assert object_store.list_keys("a/") == []


def test_delete_prefix_and_missing_keys(object_store: ObjectStore) -> None:
    for i in range(3):
        object_store.put_bytes(f"d/1/{i}.txt", b"x")
    object_store.put_bytes("d/10/keep.txt", b"y")
    assert object_store.delete_prefix("d/1/") == 3
    assert object_store.list_keys("d/") == ["d/10/keep.txt"]
    with pytest.raises(NotFound):
        object_store.get_bytes("d/1/0.txt")


def test_presigned_urls_are_signed_for_the_public_endpoint(s3_env: dict[str, str], object_store: ObjectStore) -> None:
    import urllib.parse

    import httpx

    from ferry.config import ConfigError, S3Config

    object_store.put_bytes("exports/x/out.jsonl", b'{"a": 1}\n')
    inside = urllib.parse.urlsplit(object_store.presigned_get("exports/x/out.jsonl"))
    assert inside.netloc == s3_env["FERRY_S3_ENDPOINT"].split("://")[1]
    # The same store under another name (as an ingress would publish it): "localhost" instead of 127.0.0.1.
    port = inside.port
    public = ObjectStore(S3Config.from_env({**s3_env, "FERRY_S3_PUBLIC_ENDPOINT": f"http://localhost:{port}/"}))
    url = public.presigned_get("exports/x/out.jsonl", filename="out.jsonl")
    parts = urllib.parse.urlsplit(url)
    assert parts.netloc == f"localhost:{port}"
    got = httpx.get(url)
    assert got.status_code == 200 and got.content == b'{"a": 1}\n'
    assert 'filename="out.jsonl"' in got.headers["content-disposition"]
    # The signature is bound to the host it was made for: the same URL under the internal name is refused.
    assert httpx.get(url.replace(f"localhost:{port}", f"127.0.0.1:{port}")).status_code == 403
    for bad in ("files.example.com", "https://files.example.com/bucket"):
        with pytest.raises(ConfigError, match="FERRY_S3_PUBLIC_ENDPOINT"):
            S3Config.from_env({**s3_env, "FERRY_S3_PUBLIC_ENDPOINT": bad})


def test_multipart_calls_round_trip_and_name_what_failed(object_store: ObjectStore) -> None:
    from ferry.errors import FerryError
    from ferry.storage import PART_SIZE

    part1, part2 = b"a" * (5 * 1024 * 1024), b"b" * 1000
    upload_id = object_store.start_multipart("m/out.jsonl", "application/x-ndjson")
    etags = [(1, object_store.upload_part("m/out.jsonl", upload_id, 1, part1)),
             (2, object_store.upload_part("m/out.jsonl", upload_id, 2, part2))]
    assert object_store.stat("m/out.jsonl") is None  # nothing visible before the upload completes
    object_store.complete_multipart("m/out.jsonl", upload_id, etags)
    assert object_store.get_bytes("m/out.jsonl") == part1 + part2
    assert object_store.client.stat_object(object_store.bucket, "m/out.jsonl").content_type == "application/x-ndjson"
    # S3's XML errors surface as Ferry errors naming the call and the key.
    with pytest.raises(NotFound, match="upload part 1 of m/other.jsonl: NoSuchUpload"):
        object_store.upload_part("m/other.jsonl", "no-such-upload", 1, b"x")
    upload_id = object_store.start_multipart("m/bad.jsonl")
    with pytest.raises(FerryError, match="complete m/bad.jsonl"):
        object_store.complete_multipart("m/bad.jsonl", upload_id, [(1, "0" * 32)])
    object_store.abort_multipart("m/bad.jsonl", upload_id)
    assert object_store.list_keys("m/") == ["m/out.jsonl"]
    # put_bytes: one PUT up to a part, multipart above; both keep the content type.
    big = bytes(range(256)) * (PART_SIZE // 256 + 4096)
    for key, data in (("p/small.json", b'{"a": 1}'), ("p/big.bin", big)):
        result = object_store.put_bytes(key, data, content_type="application/json")
        assert (result.size, result.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        assert object_store.get_bytes(key) == data
        assert object_store.client.stat_object(object_store.bucket, key).content_type == "application/json"


def test_uploads_are_signed_in_the_query_with_an_unsigned_payload(object_store: ObjectStore,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Parts go out presigned (SigV4 in the URL, UNSIGNED-PAYLOAD): nobody hashes the body on plain http."""
    import logging

    chunks = [b"x" * (1024 * 1024)] * 12
    with caplog.at_level(logging.DEBUG, logger="urllib3.connectionpool"):
        object_store.upload_stream("u/data.bin", iter(chunks), part_size=5 * 1024 * 1024)
    puts = [r.getMessage() for r in caplog.records if '"PUT /' in r.getMessage()]
    assert len(puts) == 3 and all("partNumber=" in m and "X-Amz-Signature=" in m for m in puts), puts
    assert object_store.stat("u/data.bin") == 12 * 1024 * 1024


def test_ensure_bucket_waits_for_storage_then_gives_up_naming_the_bucket(s3_env: dict[str, str]) -> None:
    """Retried while storage is unreachable (a cut relay in front of the real server) for up to `wait` seconds."""
    import threading
    import time

    from ferry.config import S3Config
    from ferry.errors import Unavailable
    from tests.fixtures.netproxy import tcp_proxy

    host, port = s3_env["FERRY_S3_ENDPOINT"].split("://", 1)[1].split(":")
    with tcp_proxy(host, int(port)) as proxy:
        store = ObjectStore(S3Config.from_env({**s3_env, "FERRY_S3_ENDPOINT": f"http://{proxy.endpoint}"}))
        proxy.cut()
        t0 = time.monotonic()
        with pytest.raises(Unavailable, match=f"create bucket {store.bucket}"):
            store.ensure_bucket()  # no wait: one attempt
        per_attempt = proxy.refused  # connections one attempt makes (urllib3's own retries included)
        assert per_attempt > 0 and time.monotonic() - t0 < 5
        with pytest.raises(Unavailable, match=f"create bucket {store.bucket}"):
            store.ensure_bucket(wait=3.0)  # longer than one attempt (~1.4 s of urllib3 back-off)
        assert proxy.refused - per_attempt >= 2 * per_attempt  # the attempt was repeated
        threading.Timer(1.0, proxy.restore).start()
        store.ensure_bucket(wait=30)  # storage comes back within the wait: the bucket is made
        assert store.client.bucket_exists(store.bucket)


def test_open_multipart_uploads_are_listed_by_prefix_and_aborted(object_store: ObjectStore,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """ListMultipartUploads through ObjectStore (a signed bucket request), page by page."""
    from ferry import storage
    from ferry.storage import MultipartUpload

    assert object_store.list_multipart_uploads() == []
    keys = ["d/1/a b.jsonl", "d/1/ü.jsonl", "d/2/c.jsonl", "e/x.jsonl"]
    opened = {key: object_store.start_multipart(key) for key in keys}
    monkeypatch.setattr(storage, "_LIST_UPLOADS_PAGE", 2)  # three answers for four uploads
    listed = object_store.list_multipart_uploads()
    assert sorted(listed, key=lambda u: u.key) == [MultipartUpload(k, opened[k]) for k in sorted(keys)]
    assert {u.key for u in object_store.list_multipart_uploads("d/1/")} == {"d/1/a b.jsonl", "d/1/ü.jsonl"}
    assert object_store.list_multipart_uploads("f/") == []
    for upload in object_store.list_multipart_uploads("d/"):
        object_store.abort_multipart(upload.key, upload.upload_id)
    assert object_store.list_multipart_uploads() == [MultipartUpload("e/x.jsonl", opened["e/x.jsonl"])]
