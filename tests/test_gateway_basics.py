"""Gateway skeleton: health names the backends that are down, auth, OpenAPI."""

from __future__ import annotations

from tests.fixtures.gateway import start_gateway


def test_healthz_names_unreachable_backends() -> None:
    with start_gateway() as gw:
        resp = gw.client.get("/healthz")
        assert resp.status_code == 503
        body = resp.json()
        assert set(body["services"]) == {"catalog", "importer", "exporter", "store"}
        assert "catalog" in body["detail"] and "importer" in body["detail"]


def test_openapi_and_docs_are_served() -> None:
    with start_gateway() as gw:
        assert gw.client.get("/openapi.json").json()["info"]["title"] == "Ferry"
        assert gw.client.get("/docs").status_code == 200


def test_api_key_required_when_configured() -> None:
    with start_gateway(api_keys=["k-one", "k-two"]) as gw:
        assert gw.client.get("/api/datasets").status_code == 401
        assert gw.client.get("/api/datasets", headers={"X-API-Key": "wrong"}).status_code == 401
        # A valid key passes auth; the (unreachable) catalog then answers 503.
        assert gw.client.get("/api/datasets", headers={"X-API-Key": "k-two"}).status_code == 503
        assert gw.client.get("/api/datasets", headers={"Authorization": "Bearer k-one"}).status_code == 503
        # Health is not behind auth.
        assert gw.client.get("/healthz").status_code == 503


def test_readyz_stays_ready_while_backends_are_down() -> None:
    """The readiness probe: one backend down must not take the gateway (and the routes that work) away."""
    with start_gateway() as gw:
        assert gw.client.get("/healthz").status_code == 503
        resp = gw.client.get("/readyz")
        assert resp.status_code == 200 and resp.json()["status"] == "ok"
