"""gRPC channels and stubs to the three services, shared by every route."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc

from ferry.catalog.v1 import catalog_pb2_grpc
from ferry.exporter.v1 import exporter_pb2_grpc
from ferry.importer.v1 import importer_pb2_grpc


@dataclass
class Backend:
    name: str
    addr: str
    channel: grpc.Channel
    health: health_pb2_grpc.HealthStub


class Clients:
    def __init__(self, catalog_addr: str, importer_addr: str, exporter_addr: str) -> None:
        # round_robin spreads calls over every address a name resolves to (a headless Service's pods).
        self._opts = opts = [("grpc.max_receive_message_length", 64 * 1024 * 1024), ("grpc.enable_retries", 1),
                             ("grpc.lb_policy_name", "round_robin")]
        self._aio: tuple[asyncio.AbstractEventLoop, grpc.aio.Channel, Any] | None = None
        self.backends: dict[str, Backend] = {}
        for name, addr in (("catalog", catalog_addr), ("importer", importer_addr), ("exporter", exporter_addr)):
            ch = grpc.insecure_channel(addr, options=opts)
            self.backends[name] = Backend(name, addr, ch, health_pb2_grpc.HealthStub(ch))
        self.catalog = catalog_pb2_grpc.CatalogServiceStub(self.backends["catalog"].channel)
        self.importer = importer_pb2_grpc.ImporterServiceStub(self.backends["importer"].channel)
        self.exporter = exporter_pb2_grpc.ExporterServiceStub(self.backends["exporter"].channel)

    def catalog_aio(self) -> catalog_pb2_grpc.CatalogServiceStub:
        """The catalog over grpc.aio, for job watches: an open watch waits on the event loop, not in a thread.

        Made on first use inside the serving loop, since an aio channel belongs to the loop it was made in.
        """
        loop = asyncio.get_running_loop()
        if self._aio is None or self._aio[0] is not loop:
            channel = grpc.aio.insecure_channel(self.backends["catalog"].addr, options=self._opts)
            self._aio = (loop, channel, catalog_pb2_grpc.CatalogServiceStub(channel))
        return self._aio[2]  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        if self._aio is not None and self._aio[0] is asyncio.get_running_loop():
            await self._aio[1].close()
        self._aio = None
        self.close()

    def close(self) -> None:
        for b in self.backends.values():
            b.channel.close()
