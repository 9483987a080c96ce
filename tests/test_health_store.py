"""/healthz reports the object store: the catalog checks the bucket and publishes it as a gRPC health service.

Real SeaweedFS behind a TCP relay that is cut (an outage) and restored; real catalog and gateway.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from services.catalog.config import CatalogConfig
from services.catalog.server import start
from tests.fixtures.gateway import start_gateway
from tests.fixtures.netproxy import tcp_proxy


def _store_status(client: httpx.Client, want: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = client.get("/healthz").json()
        if body["services"]["store"] == want:
            return body
        time.sleep(0.1)
    raise AssertionError(f"store never became {want}: {body}")


def test_healthz_says_when_the_store_is_down(s3_env: dict[str, str], tmp_path: Path) -> None:
    host, port = s3_env["FERRY_S3_ENDPOINT"].removeprefix("http://").rsplit(":", 1)
    with tcp_proxy(host, int(port)) as proxy:
        env = {**s3_env, "FERRY_S3_ENDPOINT": f"http://{proxy.endpoint}", "FERRY_DATA_DIR": str(tmp_path),
               "FERRY_STORE_PROBE_SECONDS": "0.2", "FERRY_SHUTDOWN_GRACE_SECONDS": "1"}
        catalog = start(CatalogConfig.from_env(env), host="127.0.0.1", port=0, storage_timeout=20.0)
        try:
            with start_gateway(catalog_addr=f"127.0.0.1:{catalog.port}") as gw:
                up = _store_status(gw.client, "SERVING")
                assert up["services"]["catalog"] == "SERVING"
                proxy.cut()
                down = _store_status(gw.client, "NOT_SERVING")
                assert "store" in str(down["detail"])
                assert gw.client.get("/healthz").status_code == 503
                proxy.restore()
                _store_status(gw.client, "SERVING")
        finally:
            catalog.stop(grace=1.0)
