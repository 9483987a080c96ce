"""Logging set-up shared by every process, with secrets scrubbed from messages."""

from __future__ import annotations

import logging
import re

from ferry.config import LogConfig

# HF tokens, bearer headers and AWS-style keys: scrubbed even if a message slips one in.
_SECRET_PATTERNS = [
    re.compile(r"hf_[A-Za-z0-9]{30,}"),  # real tokens are hf_ + 34 characters; words like hf_endpoint pass
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]+"),
    re.compile(r"(?i)((?:x-api-key|x-hf-token|authorization|secret_key|access_key|token)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
]


def scrub(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + "***", text)
        else:
            text = pattern.sub("***", text)
    return text


class _ScrubFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = scrub(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


def setup(service: str, level: str | None = None) -> logging.Logger:
    """Log to stderr at `level`; a service passes its config's `log.level`, others get FERRY_LOG_LEVEL's."""
    level = level or LogConfig.from_env().level
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_ScrubFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Client libraries log request URLs and headers at DEBUG; keep them quiet.
    for noisy in ("urllib3", "httpx", "httpcore", "huggingface_hub", "filelock", "fsspec"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return logging.getLogger(service)
