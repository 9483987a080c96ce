"""Sealed per-request tokens: only the same key and the same job open them."""

from __future__ import annotations

import pytest

from ferry.config import ConfigError
from ferry.tokens import new_key, parse_key
from services.importer.config import ImporterConfig
from services.importer.tokens import TokenSealer

TOKEN = "hf_" + "x" * 34


def test_a_sealed_token_opens_only_with_the_same_key_and_job() -> None:
    key = new_key()
    sealer = TokenSealer(parse_key(key))
    sealed = sealer.seal(TOKEN, "job-1")
    assert TOKEN not in sealed and sealed.startswith("v1.")
    assert sealer.seal(TOKEN, "job-1") != sealed  # a fresh nonce each time
    assert TokenSealer(parse_key(key)).open(sealed, "job-1") == TOKEN
    assert sealer.open(sealed, "job-2") is None  # copied into another job: opens nowhere
    assert TokenSealer(parse_key(new_key())).open(sealed, "job-1") is None
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    assert sealer.open(tampered, "job-1") is None
    assert sealer.open("v2.whatever", "job-1") is None and sealer.open("v1.%%%", "job-1") is None


@pytest.mark.parametrize("bad", ["short", "x" * 44, new_key()[:-8]])
def test_a_malformed_key_fails_at_start(bad: str) -> None:
    with pytest.raises(ConfigError, match="FERRY_TOKEN_KEY"):
        ImporterConfig.from_env({"FERRY_TOKEN_KEY": bad}, with_s3=False)
    cfg = ImporterConfig.from_env({"FERRY_TOKEN_KEY": new_key()}, with_s3=False)
    assert "FERRY_TOKEN_KEY" not in repr(cfg) and str(cfg.token_key) not in repr(cfg)
