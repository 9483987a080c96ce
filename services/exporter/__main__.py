"""`python -m services.exporter`: serve ExporterService until SIGTERM."""

from __future__ import annotations

from ferry import grpcserver, logs
from ferry.config import read_or_exit
from services.exporter.config import ExporterConfig
from services.exporter.server import start


def main() -> None:
    cfg = read_or_exit("exporter", ExporterConfig.from_env)
    log = logs.setup("exporter", cfg.log.level)
    log.info("starting with %r", cfg)
    service = start(cfg)
    grpcserver.run_until_signalled(service.server, "exporter")


if __name__ == "__main__":
    main()
