"""Schemathesis against the real gateway's own /openapi.json: no undocumented answer, no 5xx but a documented 503.

The gateway runs in uvicorn with the real catalog behind it; the importer and exporter are closed ports, so
their routes answer 503 UNAVAILABLE (documented; anything else from them would be the gateway's own answer).
Every operation is exercised, with valid (positive) and invalid (negative) requests; seeded and bounded.
"""

from __future__ import annotations

from typing import Any

import hypothesis
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import status_code_conformance

from tests.fixtures.catalog import RunningCatalog
from tests.fixtures.gateway import start_gateway

EXAMPLES_PER_OPERATION = 25
SEED = 20260101


def _check(case: Any, response: Any, backend_down: bool) -> None:
    status = response.status_code
    label = f"{case.operation.label}: {status} {response.text[:300]!r}"
    case.validate_response(response, checks=[status_code_conformance])  # every answer's status is documented
    if status == 503:
        assert backend_down, f"503 from a route whose backend is up: {label}"
        body = response.json()
        assert body.get("code") == "UNAVAILABLE" or "services" in body, label
    else:
        assert status < 500, label
    ctype = response.headers.get("content-type") or [""]  # schemathesis keeps every value of a header
    if status >= 400 and str(ctype[0]).startswith("application/json"):
        body = response.json()
        assert isinstance(body.get("detail"), str) and body["detail"], label


def _fuzz(op: Any, base_url: str, backend_down: bool, calls: list[str]) -> None:
    """EXAMPLES_PER_OPERATION requests to `op`, valid and invalid, each answer checked."""
    strategy = st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE))

    @settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @hypothesis.seed(SEED)
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, timeout=30)
        calls.append(op.label)
        _check(case, response, backend_down)

    run()


def test_fuzz_every_operation(catalog_server: RunningCatalog) -> None:
    with start_gateway(catalog_addr=catalog_server.addr) as gw:
        schema = schemathesis.openapi.from_url(f"{gw.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 25, [op.label for op in operations]
        failures: list[str] = []
        calls: list[str] = []
        for op in operations:
            tags = set(op.definition.raw.get("tags", []))
            try:
                _fuzz(op, gw.url, bool(tags & {"importer", "exporter", "health"}), calls)
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collected: one run reports every failure
                failures.append(f"{op.label}: {type(exc).__name__}: {str(exc)[:1500]}")
        assert not failures, "\n\n".join(failures)
        # Every operation was really exercised (nothing filtered away or skipped).
        counts = {op.label: calls.count(op.label) for op in operations}
        assert all(n >= 1 for n in counts.values()), counts  # /healthz has one possible request; others many
        assert sum(counts.values()) >= 20 * len(operations), counts
