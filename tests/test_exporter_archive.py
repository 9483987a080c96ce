"""DownloadArchive: every file of a complete export as one streamed zip.

The writer's unit tests use an in-memory store; the rest run real SeaweedFS, catalog and
exporter gRPC servers and compare each zip entry with what DownloadFile serves.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import struct
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import grpc
import pytest

from ferry.catalog.v1 import catalog_pb2 as cpb
from ferry.errors import Cancelled, DataLoss
from ferry.exporter.v1 import exporter_pb2 as pb
from services.exporter import archive
from services.exporter.archive import Member, entry_path, zip_stream
from services.exporter.formats import check_request
from tests.fixtures.catalog import put_dataset
from tests.fixtures.exporter import SAMPLE_ROWS

MiB = 1024 * 1024


class MemoryStore:
    """Objects in a dict; records every ranged read."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.reads: list[tuple[str, int, int]] = []

    def stat(self, key: str) -> int | None:
        return len(self.objects[key]) if key in self.objects else None

    def get_bytes(self, key: str, offset: int = 0, length: int = 0) -> bytes:
        self.reads.append((key, offset, length))
        return self.objects[key][offset:offset + length]


def _member(name: str, data: bytes, folder: str = "out") -> Member:
    return Member(name, entry_path(folder, name), name, len(data), hashlib.sha256(data).hexdigest())


def _text(n: int, seed: int = 7) -> bytes:
    """Text that deflate cannot shrink much (hex of random bytes)."""
    return random.Random(seed).randbytes(n // 2).hex().encode()


# -- the writer, in memory ----------------------------------------------------------------


def test_writer_streams_a_multi_mib_file_in_many_chunks() -> None:
    big, small = _text(6 * MiB), b'{"a": 1}\n'
    store = MemoryStore({"big.jsonl": big, "empty.txt": b"", "out/small.json": small})
    # A name already inside the folder (as the huggingface files are) is not nested again.
    members = [_member("big.jsonl", big), _member("empty.txt", b""), _member("out/small.json", small)]
    chunks = []
    read_at_first_chunk = -1
    for chunk in zip_stream(store, members, chunk_bytes=64 * 1024, read_bytes=MiB, date_time=(2026, 1, 2, 3, 4, 6)):
        if read_at_first_chunk < 0:
            read_at_first_chunk = sum(length for _, _, length in store.reads)
        chunks.append(chunk)
    # Streaming: many bounded chunks, the first out after one read, never the whole file read at once.
    assert len(chunks) > 40
    assert {len(c) for c in chunks[:-1]} == {64 * 1024} and 0 < len(chunks[-1]) <= 64 * 1024
    assert read_at_first_chunk == MiB
    assert max(length for _, _, length in store.reads) == MiB
    assert [(o, n) for k, o, n in store.reads if k == "big.jsonl"] == [(i * MiB, MiB) for i in range(6)]
    zf = zipfile.ZipFile(io.BytesIO(b"".join(chunks)))
    assert zf.testzip() is None
    assert zf.namelist() == ["out/big.jsonl", "out/empty.txt", "out/small.json"]
    assert zf.read("out/big.jsonl") == big and zf.read("out/empty.txt") == b"" and zf.read("out/small.json") == small
    for info in zf.infolist():
        assert info.compress_type == zipfile.ZIP_DEFLATED
        assert info.flag_bits & 0x08  # sizes and CRC in a data descriptor: written without seeking back
        assert info.date_time == (2026, 1, 2, 3, 4, 6) and info.external_attr >> 16 == 0o644
    assert zf.getinfo("out/big.jsonl").compress_size < len(big)


def test_writer_forces_zip64_from_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "ZIP64_ENTRY_BYTES", 1000)
    big, small = _text(4000), b"tiny"
    store = MemoryStore({"big": big, "small": small})
    data = b"".join(zip_stream(store, [_member("big", big), _member("small", small)]))
    zf = zipfile.ZipFile(io.BytesIO(data))
    assert zf.testzip() is None and zf.read("out/big") == big

    def local_extra(info: zipfile.ZipInfo) -> bytes:
        name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
        start = info.header_offset + 30 + name_len
        return data[start:start + extra_len]

    assert local_extra(zf.getinfo("out/big"))[:2] == b"\x01\x00"  # the ZIP64 extra field
    assert local_extra(zf.getinfo("out/small")) == b""


def test_writer_stops_reading_when_closed_or_the_client_leaves() -> None:
    data = _text(2 * MiB)
    store = MemoryStore({"f": data})
    gen = zip_stream(store, [_member("f", data)], chunk_bytes=1024, read_bytes=256 * 1024)
    next(gen)
    gen.close()
    assert len(store.reads) == 1  # closed after the first read: no more reads

    active = iter([True, True, False])
    store.reads.clear()
    with pytest.raises(Cancelled):
        list(zip_stream(store, [_member("f", data)], read_bytes=256 * 1024, is_active=lambda: next(active)))
    assert len(store.reads) == 2


@pytest.mark.parametrize("stored, words", [
    (b"x" * 3000, ["'bad.jsonl'", "sha256"]),
    (b"x" * 2999, ["'bad.jsonl'", "2999 bytes", "3000"]),
    (None, ["'bad.jsonl'", "missing"]),
])
def test_writer_refuses_a_file_that_does_not_match_its_record(stored: bytes | None, words: list[str]) -> None:
    good, recorded = b"good file\n", _text(3000)
    store = MemoryStore({"good.txt": good})
    if stored is not None:
        store.objects["bad.jsonl"] = stored
    out = []
    with pytest.raises(DataLoss) as err:
        for chunk in zip_stream(store, [_member("good.txt", good), _member("bad.jsonl", recorded)], chunk_bytes=1024):
            out.append(chunk)
    for w in words:
        assert w in err.value.message
    with pytest.raises(zipfile.BadZipFile):  # no central directory: nothing looks like a complete archive
        zipfile.ZipFile(io.BytesIO(b"".join(out)))


# -- over gRPC, against real servers --------------------------------------------------------


def _export(exporter: Any, dataset_id: int, fmt: str, name: str, **kw: Any) -> pb.Export:
    resp = exporter.stub.StartExport(pb.StartExportRequest(dataset_id=dataset_id, format=fmt, output_filename=name,
                                                           **kw))
    deadline = time.monotonic() + 120
    while True:
        export: pb.Export = exporter.stub.GetExport(pb.GetExportRequest(export_id=resp.export.job.id)).export
        if export.job.phase in (cpb.JOB_PHASE_COMPLETE, cpb.JOB_PHASE_ERROR, cpb.JOB_PHASE_CANCELLED):
            break
        assert time.monotonic() < deadline, export
        time.sleep(0.05)
    assert export.job.phase == cpb.JOB_PHASE_COMPLETE, export
    return export


def _archive(exporter: Any, export_id: str, chunk_bytes: int = 0) -> tuple[pb.ArchiveHeader, bytes, int]:
    msgs = list(exporter.stub.DownloadArchive(pb.DownloadArchiveRequest(export_id=export_id, chunk_bytes=chunk_bytes),
                                              timeout=60))
    assert msgs[0].WhichOneof("payload") == "archive"
    assert all(m.WhichOneof("payload") == "data" for m in msgs[1:])
    return msgs[0].archive, b"".join(m.data for m in msgs[1:]), len(msgs) - 1


def _file(exporter: Any, export_id: str, name: str) -> bytes:
    msgs = list(exporter.stub.DownloadFile(pb.DownloadFileRequest(export_id=export_id, name=name), timeout=60))
    return b"".join(m.data for m in msgs[1:])


def _check_archive(exporter: Any, export: pb.Export, chunk_bytes: int = 0) -> tuple[zipfile.ZipFile, int]:
    """Header and entries against the export's files and DownloadFile; the zip and its message count."""
    name = export.output_filename
    header, data, messages = _archive(exporter, export.job.id, chunk_bytes)
    assert header.name == f"{name}.zip"
    assert [(f.name, f.size, f.sha256) for f in header.files] == [(f.name, f.size, f.sha256) for f in export.job.files]
    assert header.file_count == len(export.job.files) and header.uncompressed_size == sum(f.size for f in export.job.files)
    zf = zipfile.ZipFile(io.BytesIO(data))
    assert zf.testzip() is None
    assert zf.namelist() == [entry_path(name, f.name) for f in export.job.files]
    assert all(n.startswith(f"{name}/") for n in zf.namelist())
    for f in export.job.files:
        got = zf.read(entry_path(name, f.name))
        assert got == _file(exporter, export.job.id, f.name)
        assert hashlib.sha256(got).hexdigest() == f.sha256 and len(got) == f.size
    return zf, messages


def _numbered(n: int, tag: str) -> list[dict[str, Any]]:
    return [{"prompt": f"{tag} question {i}", "completion": f"{tag} answer {i} ✓ " + "words " * (i % 17)}
            for i in range(n)]


def test_huggingface_archive_matches_the_files_and_loads(catalog_server: Any, exporter_server: Any,
                                                         tmp_path: Path) -> None:
    import datasets

    splits = {"train": _numbered(300, "tr") + SAMPLE_ROWS["SL"], "test": _numbered(40, "te")}
    ds = put_dataset(catalog_server, splits, training_type=cpb.TRAINING_TYPE_SL)
    export = _export(exporter_server, ds.id, "huggingface", "my_dataset")
    assert {f.name for f in export.job.files} == {"my_dataset/train.jsonl", "my_dataset/test.jsonl",
                                              "my_dataset/dataset_info.json", "my_dataset/README.md",
                                              "my_dataset/push_to_hub.py"}
    zf, messages = _check_archive(exporter_server, export, chunk_bytes=1024)
    assert messages > 5  # streamed in many messages
    zf.extractall(tmp_path / "unzipped")
    folder = tmp_path / "unzipped" / "my_dataset"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "dataset_info.json", "push_to_hub.py",
                                                        "test.jsonl", "train.jsonl"]
    loaded = datasets.load_dataset("json", data_files={s: str(folder / f"{s}.jsonl") for s in splits},
                                   cache_dir=str(tmp_path / "hf-cache"))
    assert {k: len(v) for k, v in loaded.items()} == {k: len(v) for k, v in splits.items()}
    assert loaded["train"]["prompt"] == [r["prompt"] for r in splits["train"]]
    assert json.loads((folder / "dataset_info.json").read_text())["splits"]["test"]["num_examples"] == 40


def test_openai_split_archive_holds_every_file(catalog_server: Any, exporter_server: Any) -> None:
    ds = put_dataset(catalog_server, {"train": _numbered(50, "q")}, training_type=cpb.TRAINING_TYPE_SL)
    export = _export(exporter_server, ds.id, "openai", "tuned", train_split=0.8)
    assert [f.name for f in export.job.files] == ["tuned_train.jsonl", "tuned_validation.jsonl",
                                              "tuned.validation.json", "tuned.validation.txt"]
    zf, _ = _check_archive(exporter_server, export)
    assert zf.namelist() == ["tuned/tuned_train.jsonl", "tuned/tuned_validation.jsonl",
                             "tuned/tuned.validation.json", "tuned/tuned.validation.txt"]
    assert len(zf.read("tuned/tuned_train.jsonl").splitlines()) == 40


def test_archive_errors(catalog_server: Any, exporter_server: Any) -> None:
    stub = exporter_server.stub

    def error(export_id: str, chunk_bytes: int = 0) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as err:
            list(stub.DownloadArchive(pb.DownloadArchiveRequest(export_id=export_id, chunk_bytes=chunk_bytes),
                                      timeout=30))
        return err.value

    missing = "0123456789abcdef0123456789abcdef"
    err = error(missing)
    assert err.code() == grpc.StatusCode.NOT_FOUND and missing in err.details()
    err = error("")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "export_id" in err.details()
    for bad in (-1, 1023, 4 * MiB):
        err = error(missing, bad)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "chunk_bytes" in err.details()
    # A queued export (this exporter does not poll, so nothing runs it), then the same one cancelled.
    ds = put_dataset(catalog_server, {"train": SAMPLE_ROWS["SL"]}, training_type=cpb.TRAINING_TYPE_SL)
    req = check_request(ds.id, "csv", "later", None, None, {})
    job = catalog_server.stub.CreateJob(cpb.CreateJobRequest(
        kind=cpb.JOB_KIND_EXPORT, request_json=json.dumps(req.to_json()), dataset_id=ds.id)).job
    err = error(job.id)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "queued" in err.details() and job.id in err.details()
    assert stub.CancelExport(pb.CancelExportRequest(export_id=job.id)).export.job.phase == cpb.JOB_PHASE_CANCELLED
    err = error(job.id)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "cancelled" in err.details()


def test_tampered_file_ends_the_archive_with_data_loss(catalog_server: Any, exporter_server: Any) -> None:
    ds = put_dataset(catalog_server, {"train": _numbered(60, "q")}, training_type=cpb.TRAINING_TYPE_SL)
    export = _export(exporter_server, ds.id, "langchain", "lc", train_split=0.8)
    assert [f.name for f in export.job.files] == ["lc_train.jsonl", "lc_validation.jsonl"]
    victim = export.job.files[1]
    original = catalog_server.store.get_bytes(victim.object_key)

    def data_loss() -> str:
        got: list[pb.DownloadArchiveResponse] = []
        with pytest.raises(grpc.RpcError) as err:
            for msg in exporter_server.stub.DownloadArchive(pb.DownloadArchiveRequest(export_id=export.job.id,
                                                                                      chunk_bytes=1024), timeout=30):
                got.append(msg)
        assert err.value.code() == grpc.StatusCode.DATA_LOSS, err.value
        assert got and got[0].WhichOneof("payload") == "archive"
        with pytest.raises(zipfile.BadZipFile):  # what did arrive is no archive
            zipfile.ZipFile(io.BytesIO(b"".join(m.data for m in got[1:])))
        details: str = err.value.details()
        assert "'lc_validation.jsonl'" in details and "lc_train" not in details
        return details

    catalog_server.store.put_bytes(victim.object_key, bytes(b ^ 0x20 for b in original))  # same length
    assert "sha256" in data_loss()
    catalog_server.store.put_bytes(victim.object_key, original[:-1])
    assert f"{victim.size - 1} bytes" in data_loss()
    catalog_server.store.put_bytes(victim.object_key, original)
    _check_archive(exporter_server, export)  # restored: the archive is whole again


def test_cancelled_download_stops_reading_the_store(catalog_server: Any, exporter_server: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "READ_BYTES", 64 * 1024)
    rows = [{"prompt": _text(2000, seed=i).decode(), "completion": "ok"} for i in range(500)]  # ~1 MB
    ds = put_dataset(catalog_server, {"train": rows}, training_type=cpb.TRAINING_TYPE_SL)
    export = _export(exporter_server, ds.id, "csv", "big")
    ranges = -(-export.job.files[0].size // (64 * 1024))
    assert ranges > 10
    core = exporter_server.core
    store, reads, release, closed = core.store, [], threading.Event(), threading.Event()

    class SlowStore:
        """The second read waits for the test, so the client cancels while the archive is mid-way."""

        def stat(self, key: str) -> int | None:
            return store.stat(key)

        def get_bytes(self, key: str, offset: int = 0, length: int = 0) -> bytes:
            reads.append(offset)
            if len(reads) == 2:
                release.wait(30)
            return store.get_bytes(key, offset, length)

    real_archive = core.archive

    def watched_archive(*args: Any) -> Any:
        info, chunks = real_archive(*args)

        def gen() -> Any:
            try:
                yield from chunks
            finally:
                chunks.close()
                closed.set()
        return info, gen()

    monkeypatch.setattr(core, "store", SlowStore())
    monkeypatch.setattr(core, "archive", watched_archive)
    call = exporter_server.stub.DownloadArchive(pb.DownloadArchiveRequest(export_id=export.job.id,
                                                                          chunk_bytes=1024), timeout=30)
    assert next(call).WhichOneof("payload") == "archive"
    assert next(call).WhichOneof("payload") == "data"
    call.cancel()
    release.set()
    assert closed.wait(15), "the archive generator was not closed after the client cancelled"
    assert len(reads) <= 3 < ranges  # stopped at once, not read to the end
