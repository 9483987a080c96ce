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
