"""Run the catalog: `python -m services.catalog`."""

from __future__ import annotations

import sys

from ferry import grpcserver, logs
from ferry.config import read_or_exit
from services.catalog.config import CatalogConfig
from services.catalog.server import StorageUnavailable, start


def main() -> int:
    cfg = read_or_exit("catalog", CatalogConfig.from_env)
    log = logs.setup("catalog", cfg.log.level)
    try:
        server = start(cfg)
    except StorageUnavailable as exc:
        print(f"catalog: cannot start: {exc}", file=sys.stderr)
        return 1
    log.info("catalog database %s, bucket %s, heartbeat timeout %.0fs, %d attempts per job (back-off %.0fs)",
             cfg.db_path, cfg.s3.bucket, cfg.heartbeat_timeout, cfg.max_attempts, cfg.retry_backoff)
    try:
        grpcserver.run_until_signalled(server.server, "catalog")
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
