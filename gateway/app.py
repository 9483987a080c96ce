"""FastAPI app: the documented REST paths, each a translation to one gRPC call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from fastapi import APIRouter, Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from grpc_health.v1 import health_pb2
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from ferry.grpcserver import STORE_HEALTH
from gateway.auth import check_api_key
from gateway.clients import Clients
from gateway.config import GatewayConfig
from gateway.errors import error_docs, http_error_handler, rpc_error_handler, validation_error_handler
from gateway.limits import BodyLimit, check_json_body
from gateway.routes import catalog, exporter, importer


class Health(BaseModel):
    status: str
    services: dict[str, str]
    detail: str | None = None


def create_app(config: GatewayConfig, clients: Clients | None = None) -> FastAPI:
    owned = clients is None
    clients = clients or Clients(config.catalog_addr, config.importer_addr, config.exporter_addr)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            await clients.aclose()

    app = FastAPI(
        title="Ferry",
        version="0.1.0",
        description="Move fine-tuning datasets between the HuggingFace Hub and training formats.",
        lifespan=lifespan,
    )
    app.state.config = config
    app.state.clients = clients
    app.state.wait_limiters = {}
    _add_error_handlers_and_middleware(app, config)
    _add_health(app, clients)
    # Every /api route can answer these; routes with a body add 413/415 (gateway/routes/*).
    api = APIRouter(dependencies=[Depends(check_api_key), Depends(check_json_body)],
                    responses=error_docs(400, 401, 404, 409, 422, 429, 503, 504))
    for routes in (catalog, importer, exporter):
        api.include_router(routes.router)
    app.include_router(api)
    return app


def _add_error_handlers_and_middleware(app: FastAPI, config: GatewayConfig) -> None:
    app.add_exception_handler(grpc.RpcError, rpc_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
    # Innermost of the middlewares, so a 413 still carries the CORS headers.
    app.add_middleware(BodyLimit)
    # Collection paths answer with and without a trailing slash, never with a redirect: browsers refuse a
    # redirect in answer to a preflighted request (Thinker lists `/api/datasets/`).
    app.router.redirect_slashes = False
    app.add_middleware(StripTrailingSlash)
    if config.cors_origins:
        wildcard = config.cors_origins == ("*",)
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_credentials=not wildcard,  # a wildcard origin never comes with credentials
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["*"],  # X-API-Key, X-HF-Token, Authorization, Content-Type, and clients' own
            expose_headers=["Content-Disposition", "Content-Length", "X-Checksum-SHA256"],
            max_age=600,
        )



def _add_health(app: FastAPI, clients: Clients) -> None:
    @app.get("/healthz", tags=["health"], responses={
        200: {"model": Health, "description": "Every backend is SERVING"},
        503: {"model": Health, "description": "Some backend is not SERVING: `detail` names it"}})
    def healthz() -> JSONResponse:
        """200 when every backend reports SERVING; 503 naming those that do not (for people and monitors)."""
        status = backend_status(clients)
        down = [n for n, s in status.items() if s != "SERVING"]
        body = {"status": "ok" if not down else "unavailable", "services": status}
        if down:
            body["detail"] = f"unavailable: {', '.join(down)}"
        return JSONResponse(status_code=503 if down else 200, content=body)

    @app.get("/readyz", tags=["health"], response_model=Health)
    def readyz() -> Health:
        """The readiness probe: 200 while this gateway serves requests, whatever its backends say.

        Every gateway pod shares the same backends, so taking pods out of the Service when one backend is
        down would only turn the routes that still work (search and import while the exporter is down) into
        the Ingress's 503s; each route answers 503 for the backend it needs instead, and /healthz reports.
        """
        return Health(status="ok", services={})


def backend_status(clients: Clients, timeout: float = 2.0) -> dict[str, str]:
    """Each backend's grpc.health.v1 status, and the object store's as the catalog last found it (`store`),
    asked of all at once (the slowest bounds the wait, not the sum)."""
    asks = {name: (b, "") for name, b in clients.backends.items()}
    asks["store"] = (clients.backends["catalog"], STORE_HEALTH)
    calls = {name: b.health.Check.future(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
             for name, (b, service) in asks.items()}
    status: dict[str, str] = {}
    for name, call in calls.items():
        try:
            status[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(call.result().status)
        except grpc.RpcError as exc:
            status[name] = f"UNREACHABLE ({exc.code().name})"
    return status


class StripTrailingSlash:
    """ASGI middleware: `/api/datasets/` is routed as `/api/datasets` (one route, no 307)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.startswith("/api/") and path.endswith("/"):
            scope = dict(scope, path=path.rstrip("/") or "/",
                         raw_path=scope.get("raw_path", b"").rstrip(b"/") or b"/")
        await self.app(scope, receive, send)
