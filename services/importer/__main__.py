"""Run the importer: `python -m services.importer`."""

from __future__ import annotations

from ferry import logs
from ferry.config import read_or_exit
from ferry.grpcserver import run_until_signalled
from services.importer.config import ImporterConfig
from services.importer.server import start


def main() -> None:
    cfg = read_or_exit("importer", ImporterConfig.from_env)
    log = logs.setup("importer", cfg.log.level)
    log.info("starting with %r", cfg)
    importer = start(cfg)
    run_until_signalled(importer.server, "importer")


if __name__ == "__main__":
    main()
