"""Import jobs on a larger split: progress (REST and SSE), cancel, resume after a restart, dropped connections,
and previews that read only what they show. Uses a 60k-row Parquet repo in the Hub layout (3 files x 30 row
groups, ~25 MB) served by the stand-in hub, which counts the bytes it sends."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.catalog.v1 import catalog_pb2 as cpb
from tests.fixtures.hub import build_large_parquet_repo
from tests.fixtures.importer import ImporterStack
from tests.fixtures.netproxy import tcp_proxy

REPO = "ferry-test/large-sft"
ROWS = 60_000
MAPPING = {"prompt": "instruction", "completion": "output"}


@pytest.fixture(scope="module")
def large_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("large-repo")
    build_large_parquet_repo(root, rows=ROWS, file_rows=20_000, row_group_rows=1_000, repo_id=REPO)
    return root / REPO


@pytest.fixture
def stack(importer_server: ImporterStack, large_repo: Path) -> ImporterStack:
    importer_server.hub.add_repo(REPO, large_repo, downloads=5)
    return importer_server


def _split_bytes(repo_dir: Path) -> int:
    return sum(p.stat().st_size for p in (repo_dir / "data").glob("*.parquet"))


def _start(stack: ImporterStack, **extra: Any) -> str:
    body = {"dataset_name": REPO, "training_type": "SL", "split": "train", "field_mappings": MAPPING, **extra}
    r = stack.gw.client.post("/api/huggingface/import", json=body)
    assert r.status_code == 202, r.text
    return str(r.json()["import_id"])


def _job(stack: ImporterStack, job_id: str) -> cpb.Job:
    return stack.catalog.stub.GetJob(cpb.GetJobRequest(job_id=job_id)).job


def _wait_for_two_parts(stack: ImporterStack, import_id: str) -> None:
    """Until the job's checkpoint records two uploaded parts of the split it is writing."""
    deadline = time.monotonic() + 30
    while True:
        cp = _job(stack, import_id).checkpoint_json
        if len((json.loads(cp).get("current") or {}).get("parts", []) if cp else []) >= 2:
            return
        assert time.monotonic() < deadline, "no checkpoint with two parts in time"
        time.sleep(0.05)


def _row_ids(stack: ImporterStack, dataset_id: int) -> list[int]:
    data = stack.catalog.store.get_bytes(f"datasets/{dataset_id}/train.jsonl")
    ids = []
    for line in data.splitlines():
        row = json.loads(line)
        ids.append(int(re.search(r"#(\d+)$", row["prompt"]).group(1)))  # type: ignore[union-attr]
        assert row["completion"].endswith(f"#{ids[-1]}")
    return ids


def test_preview_reads_a_small_part_of_a_large_split(stack: ImporterStack, large_repo: Path) -> None:
    stack.hub.reset_counters()
    r = stack.gw.client.post("/api/huggingface/preview", json={
        "dataset_name": REPO, "split": "train", "num_samples": 5, "training_type": "SL"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["samples"]) == 5 and len(body["raw_samples"]) == 5
    assert body["total_samples"] == ROWS
    assert body["samples"][0]["prompt"] == body["raw_samples"][0]["instruction"]
    served = stack.hub.bytes_served(REPO)
    assert 0 < served < 0.05 * _split_bytes(large_repo), served
    # Only ranged requests: no request fetched a whole data file.
    for req in stack.hub.requests:
        if req["path"].endswith(".parquet") and req.get("status") in (200, 206):
            assert req.get("range"), req


def test_progress_is_reported_while_importing_and_streamed_as_events(stack: ImporterStack) -> None:
    stack.hub.throttle(12_000_000)
    import_id = _start(stack)
    seen: list[dict[str, Any]] = []
    with stack.gw.client.stream("GET", f"/api/huggingface/import-progress/{import_id}/events") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                if len(seen) == 3:
                    mid = stack.gw.client.get(f"/api/huggingface/import-progress/{import_id}").json()
    stack.hub.throttle(None)
    assert seen[-1]["status"] == "complete", seen[-1]
    statuses = [e["status"] for e in seen]
    assert "converting" in statuses
    running = [e for e in seen if e["status"] == "converting" and 0 < e["progress"] < 100]
    assert len(running) >= 3, statuses
    rows = [e["samples_processed"] for e in seen]
    assert rows == sorted(rows) and rows[-1] == ROWS
    downloaded = [e["bytes_downloaded"] for e in running]
    assert downloaded == sorted(downloaded) and downloaded[0] < downloaded[-1]
    assert all(e["total_samples"] == ROWS for e in running)
    assert mid["status"] in ("downloading", "converting") and mid["bytes_total"] > 0
    assert seen[-1]["dataset_id"] and seen[-1]["progress"] == 100
    # Events of a finished import: one terminal event, then the stream ends.
    with stack.gw.client.stream("GET", f"/api/huggingface/import-progress/{import_id}/events") as resp:
        events = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: ")]
    assert [e["status"] for e in events] == ["complete"]
    assert stack.gw.client.get("/api/huggingface/import-progress/no-such-import").status_code == 404


def test_cancel_leaves_no_dataset_and_no_objects(stack: ImporterStack) -> None:
    stack.hub.throttle(4_000_000)
    import_id = _start(stack)
    try:
        stack.wait(import_id, until=("converting",))
        deadline = time.monotonic() + 20
        while _job(stack, import_id).progress.bytes_done < 500_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        r = stack.gw.client.post(f"/api/huggingface/import/{import_id}/cancel")
        assert r.status_code == 200, r.text
        body = stack.wait(import_id)
    finally:
        stack.hub.throttle(None)
    assert body["status"] == "cancelled", body
    assert body["dataset_id"] is None
    assert stack.gw.client.get("/api/datasets").json()["datasets"] == []
    store = stack.catalog.store
    assert store.list_keys("datasets/") == [] and store.list_keys("staging/") == []
    assert store.list_multipart_uploads("datasets/") == []
    # A finished import cannot be cancelled again.
    assert stack.gw.client.post(f"/api/huggingface/import/{import_id}/cancel").status_code == 400


def test_import_resumes_after_a_restart_without_starting_over(stack: ImporterStack, large_repo: Path) -> None:
    stack.hub.throttle(6_000_000)
    stack.hub.reset_counters()
    import_id = _start(stack)
    try:
        _wait_for_two_parts(stack, import_id)
        stack.stop_importer()
    finally:
        stack.hub.throttle(None)
    before = stack.hub.bytes_served(REPO)
    stopped = _job(stack, import_id)
    assert stopped.phase == cpb.JOB_PHASE_CONVERTING
    cp = json.loads(stopped.checkpoint_json)
    position = cp["current"]["position"]
    done_rows = cp["current"]["rows"]
    assert 0 < done_rows < ROWS
    stack.hub.reset_counters()
    stack.start_importer()
    body = stack.wait(import_id, timeout=60)
    assert body["status"] == "complete", body
    job = _job(stack, import_id)
    assert job.attempt == 2
    after = stack.hub.bytes_served(REPO)
    total = _split_bytes(large_repo)
    # It went on from its checkpoint: the row groups before it were not downloaded again.
    assert after < total - 0.8 * total * done_rows / ROWS, (before, after, total, done_rows)
    first_file = sorted((large_repo / "data").glob("*.parquet"))[0].name
    if position["file"] > 0 or position["rg"] > 1:
        assert not any(r["path"].endswith(first_file) and (r.get("range") or "").startswith("bytes=4-")
                       for r in stack.hub.requests)
    # Exactly one dataset, with every row once, in order.
    listed = stack.gw.client.get("/api/datasets").json()["datasets"]
    assert [d["id"] for d in listed] == [body["dataset_id"]]
    assert _row_ids(stack, body["dataset_id"]) == list(range(ROWS))


def test_dropped_connection_resumes_from_the_byte_reached(stack: ImporterStack) -> None:
    files = sorted((stack.hub.repo_dir(REPO) / "data").glob("*.parquet"))
    # Each switch cuts the next transfer of the file that runs past 150 kB; the footer reads (validation, job)
    # use up the first two, the rest cut row-group downloads and their retries.
    for _ in range(5):
        stack.hub.drop_connection_once(files[1].name, after_bytes=150_000)
    import_id = _start(stack, max_samples=45_000)
    body = stack.wait(import_id, timeout=60)
    assert body["status"] == "complete", body
    assert _row_ids(stack, body["dataset_id"]) == list(range(45_000))
    ranges = [r.get("range") or "" for r in stack.hub.requests if r["path"].endswith(files[1].name)]
    # The retry asked for the rest of the cut row group only, from the byte the first attempt reached.
    starts = [int(m.group(1)) for m in (re.match(r"bytes=(\d+)-", x) for x in ranges) if m]
    assert any(b - a == 150_000 for a in starts for b in starts), ranges


def test_a_hub_that_keeps_dropping_fails_the_import_by_the_deadline_and_the_retries_show(
        stack: ImporterStack) -> None:
    stack.stop_importer()
    stack.start_importer(FERRY_IMPORT_DOWNLOAD_DEADLINE_SECONDS="3")
    second = sorted((stack.hub.repo_dir(REPO) / "data").glob("*.parquet"))[1]
    # The first file downloads slowly (~4 s), so every connection to the second one, from the job's first read of
    # it on, delivers 1,000 bytes and drops.
    stack.hub.throttle(2_000_000)
    try:
        import_id = _start(stack)
        stack.hub.drop_every_connection(second.name, after_bytes=1000)
        messages: list[str] = []
        body: dict[str, Any] = {}
        give_up = time.monotonic() + 90
        while time.monotonic() < give_up:
            body = stack.gw.client.get(f"/api/huggingface/import-progress/{import_id}").json()
            if body["status"] in ("complete", "error", "cancelled"):
                break
            messages.append(body["message"])
            time.sleep(0.05)
    finally:
        stack.hub.drop_every_connection(None)
        stack.hub.throttle(None)
    # While it reconnected, the message said so: the file, the retry and the byte it resumed at.
    retrying = [m for m in messages if "connection dropped" in m]
    assert retrying, messages
    shown = [re.search(rf"downloading data/{re.escape(second.name)}: connection dropped, retry (\d+) "
                       rf"\(resumed at byte ([\d,]+)\)", m) for m in retrying]
    assert all(shown), retrying
    assert len({m.group(1) for m in shown if m}) >= 2, retrying  # the count went up as it happened
    # Then the import failed with the deadline's error (not resumed by the job: that would restart the deadline).
    assert body["status"] == "error", body
    error = body["error"]
    assert re.search(rf"^the Hub kept dropping the connection: download of {REPO}/data/{re.escape(second.name)} "
                     rf"gave up at byte [\d,]+ of [\d,]+ after \d+ reconnects \(still incomplete \d+s after its "
                     rf"first drop: FERRY_IMPORT_DOWNLOAD_DEADLINE_SECONDS=3\); last cause: .+", error), error
    assert "connection dropped" not in body["message"], body
    assert _job(stack, import_id).attempt == 1
    # Nothing of it was kept.
    assert stack.gw.client.get("/api/datasets").json()["datasets"] == []
    assert stack.catalog.store.list_multipart_uploads() == []


def test_an_import_reconnecting_to_a_dropping_hub_can_be_cancelled(stack: ImporterStack) -> None:
    second = sorted((stack.hub.repo_dir(REPO) / "data").glob("*.parquet"))[1]
    stack.hub.throttle(2_000_000)
    try:
        import_id = _start(stack)
        stack.hub.drop_every_connection(second.name, after_bytes=1000)
        # The default deadline (600 s) is far off: the import keeps reconnecting until cancelled.
        give_up = time.monotonic() + 60
        while "connection dropped" not in _job(stack, import_id).message:
            assert time.monotonic() < give_up, _job(stack, import_id)
            time.sleep(0.05)
        r = stack.gw.client.post(f"/api/huggingface/import/{import_id}/cancel")
        assert r.status_code == 200, r.text
        body = stack.wait(import_id, timeout=60)
    finally:
        stack.hub.drop_every_connection(None)
        stack.hub.throttle(None)
    assert body["status"] == "cancelled", body
    assert "connection dropped" not in body["message"], body
    assert stack.gw.client.get("/api/datasets").json()["datasets"] == []


@pytest.fixture(scope="module")
def jsonl_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two uncompressed JSONL files (~14 MB each) in the Hub's data/ layout."""
    root = tmp_path_factory.mktemp("jsonl-repo")
    filler = "Lorem ipsum dolor sit amet, «consectetur» adipiscing elit, \"sed\" do eiusmod.\n" * 6
    (root / "data").mkdir()
    for k in range(2):
        with (root / "data" / f"train-{k:05d}-of-00002.jsonl").open("w") as fh:
            for i in range(k * 30_000, (k + 1) * 30_000):
                fh.write(json.dumps({"instruction": f"Task {filler[: 40 + i % 50]} #{i}",
                                     "output": f"{filler} #{i}"}, ensure_ascii=False) + "\n")
    return root


def test_jsonl_import_resumes_from_its_byte_offset(importer_server: ImporterStack, jsonl_repo: Path) -> None:
    stack = importer_server
    repo = "ferry-test/jsonl-sft"
    stack.hub.add_repo(repo, jsonl_repo)
    total = sum(p.stat().st_size for p in (jsonl_repo / "data").glob("*.jsonl"))
    stack.hub.throttle(5_000_000)
    r = stack.gw.client.post("/api/huggingface/import", json={
        "dataset_name": repo, "training_type": "SL", "field_mappings": MAPPING})
    assert r.status_code == 202, r.text
    import_id = r.json()["import_id"]
    try:
        _wait_for_two_parts(stack, import_id)
        stack.stop_importer()
    finally:
        stack.hub.throttle(None)
    cp = json.loads(_job(stack, import_id).checkpoint_json)["current"]
    assert cp["position"]["byte"] > 0  # uncompressed JSON lines resume at a byte offset
    stack.hub.reset_counters()
    stack.start_importer()
    body = stack.wait(import_id, timeout=60)
    assert body["status"] == "complete", body
    assert stack.hub.bytes_served(repo) < total - 0.8 * cp["position"]["byte"]
    assert _row_ids(stack, body["dataset_id"]) == list(range(60_000))


def test_a_storage_outage_mid_import_pauses_and_resumes_from_the_checkpoint(stack: ImporterStack) -> None:
    host, port = stack.env["FERRY_S3_ENDPOINT"].split("://", 1)[1].rsplit(":", 1)
    with tcp_proxy(host, int(port)) as proxy:
        # The importer reaches the store through a relay the test can cut; the catalog and the hub stay up.
        stack.stop_importer()
        stack.start_importer(FERRY_S3_ENDPOINT=f"http://{proxy.endpoint}")
        stack.hub.throttle(6_000_000)
        try:
            import_id = _start(stack)
            _wait_for_two_parts(stack, import_id)
            proxy.cut()  # the store goes away for 5 s, longer than the client's own retries
            messages = set()
            until = time.monotonic() + 5
            while time.monotonic() < until:
                job = _job(stack, import_id)
                assert job.phase in (cpb.JOB_PHASE_DOWNLOADING, cpb.JOB_PHASE_CONVERTING), (job.phase, job.error)
                messages.add(job.message)
                time.sleep(0.05)
            proxy.restore()
        finally:
            stack.hub.throttle(None)
        body = stack.wait(import_id, timeout=90)
    assert body["status"] == "complete", body
    assert proxy.refused > 0, "the outage never met the importer"
    assert any("object storage" in m and "resuming from the last checkpoint" in m for m in messages), messages
    job = _job(stack, import_id)
    assert job.attempt == 1  # the same worker carried on: no restart, no other replica
    # Every row exactly once, in order, in one dataset, and no upload left open.
    listed = stack.gw.client.get("/api/datasets").json()["datasets"]
    assert [d["id"] for d in listed] == [body["dataset_id"]]
    assert _row_ids(stack, body["dataset_id"]) == list(range(ROWS))
    store = stack.catalog.store
    assert store.list_multipart_uploads() == []


def _start_gated(stack: ImporterStack, repo: str) -> str:
    r = stack.gw.client.post("/api/huggingface/import", headers={"X-HF-Token": stack.hub.token}, json={
        "dataset_name": repo, "training_type": "SL", "split": "train", "field_mappings": MAPPING})
    assert r.status_code == 202, r.text
    return str(r.json()["import_id"])


def _stop_after_two_parts(stack: ImporterStack, import_id: str) -> None:
    _wait_for_two_parts(stack, import_id)
    stack.stop_importer()


def test_a_gated_import_resumes_elsewhere_with_the_requests_own_sealed_token(stack: ImporterStack,
                                                                              large_repo: Path) -> None:
    from ferry.tokens import new_key

    gated = "ferry-test/large-gated"
    stack.hub.add_repo(gated, large_repo, gated="manual")
    # No HF_TOKEN anywhere: only the request's own token opens the repo.
    assert "HF_TOKEN" not in stack.env
    stack.stop_importer()
    stack.start_importer(FERRY_TOKEN_KEY=new_key())
    stack.hub.throttle(6_000_000)
    try:
        import_id = _start_gated(stack, gated)
        _stop_after_two_parts(stack, import_id)
    finally:
        stack.hub.throttle(None)
    job = _job(stack, import_id)
    # The job record holds the token sealed, never in clear.
    assert stack.hub.token not in str(job)
    assert json.loads(job.request_json)["sealed_token"].startswith("v1.")
    # Another importer (new worker, nothing in memory) with the same key resumes it and finishes.
    stack.start_importer()
    body = stack.wait(import_id, timeout=60)
    assert body["status"] == "complete", body
    assert _job(stack, import_id).attempt == 2
    assert _row_ids(stack, body["dataset_id"]) == list(range(ROWS))

    # With another key the sealed token cannot be opened: the resumed job has no token and the Hub refuses it.
    stack.hub.throttle(6_000_000)
    try:
        second = _start_gated(stack, gated)
        _stop_after_two_parts(stack, second)
    finally:
        stack.hub.throttle(None)
    stack.start_importer(FERRY_TOKEN_KEY=new_key())
    body = stack.wait(second, timeout=60)
    assert body["status"] == "error" and "token" in body["error"], body


def test_event_stream_keeps_alive_and_frees_its_watch_when_the_client_leaves(
        stack: ImporterStack, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway import sse

    # Progress changes at most 4 times a second; a keep-alive is due after 50 ms of quiet.
    monkeypatch.setattr(sse, "KEEPALIVE_SECONDS", 0.05)
    jobs = stack.catalog.server.core.jobs
    import_id = _start(stack)
    stack.hub.throttle(200_000)  # a slow download: the job runs for a while
    try:
        before = jobs._watchers
        seen: list[str] = []
        with stack.gw.client.stream("GET", f"/api/huggingface/import-progress/{import_id}/events") as resp:
            for line in resp.iter_lines():
                seen.append(line)
                if seen.count(": keep-alive") >= 2:
                    break
            # Events first, then comments that keep the quiet connection open.
            assert seen[0].startswith("data: ") and seen.count(": keep-alive") == 2
            assert jobs._watchers == before + 1
        # The client left: the next keep-alive write fails and the watch behind it is released.
        deadline = time.monotonic() + 10
        while jobs._watchers > before:
            assert time.monotonic() < deadline, "the catalog watch outlived its SSE client"
            time.sleep(0.05)
    finally:
        stack.hub.throttle(None)
    assert stack.gw.client.post(f"/api/huggingface/import/{import_id}/cancel").status_code in (200, 202)


def test_many_open_event_streams_hold_no_service_threads(stack: ImporterStack) -> None:
    """40 browsers following one import: more streams than the catalog (32) and the importer (16) have gRPC
    threads. The streams are watches at the catalog on its event loop, so every one opens and the services
    keep answering meanwhile; when the clients leave, every watch is released."""
    jobs = stack.catalog.server.core.jobs
    before = jobs._watchers
    import_id = _start(stack)
    stack.hub.throttle(200_000)  # a slow download: the job runs while the streams are open
    opened: list[str] = []
    release = threading.Event()

    def follow() -> None:
        with httpx.Client(base_url=stack.gw.url, timeout=60) as client:
            with client.stream("GET", f"/api/huggingface/import-progress/{import_id}/events") as resp:
                lines = resp.iter_lines()  # kept: a dropped line iterator would close the stream
                for line in lines:
                    if line.startswith("data: "):
                        opened.append(line)
                        break
                release.wait(60)

    followers = [threading.Thread(target=follow) for _ in range(40)]
    try:
        for t in followers:
            t.start()
        deadline = time.monotonic() + 30
        while len(opened) < 40:
            assert time.monotonic() < deadline, f"only {len(opened)} of 40 event streams opened"
            time.sleep(0.05)
        assert jobs._watchers == before + 40
        # Meanwhile the importer and the catalog answer as ever.
        assert stack.gw.client.get(f"/api/huggingface/import-progress/{import_id}").status_code == 200
        assert stack.gw.client.get("/api/datasets").status_code == 200
        other = _start(stack)
        assert other != import_id
    finally:
        release.set()
        for t in followers:
            t.join(30)
        stack.hub.throttle(None)
    deadline = time.monotonic() + 10
    while jobs._watchers > before:
        assert time.monotonic() < deadline, "watches outlived their clients"
        time.sleep(0.05)
    for job_id in (import_id, other):
        stack.gw.client.post(f"/api/huggingface/import/{job_id}/cancel")
