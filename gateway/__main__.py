"""Run the gateway: `python -m gateway`."""

from __future__ import annotations

import uvicorn

from ferry import logs
from ferry.config import read_or_exit
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.limits import MAX_HEAD_BYTES


def main() -> None:
    cfg = read_or_exit("gateway", GatewayConfig.from_env)
    logs.setup("gateway", cfg.log.level)
    app = create_app(cfg)
    print(f"gateway listening on http://{cfg.host}:{cfg.port}", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", timeout_graceful_shutdown=10,
                h11_max_incomplete_event_size=MAX_HEAD_BYTES)


if __name__ == "__main__":
    main()
