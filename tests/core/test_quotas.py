"""Quota configuration, the token bucket and the key documents that carry the quotas."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from extproc.core.api_keys import KeyStatus, hash_api_key, parse_key_documents
from extproc.core.errors import InvalidArgument
from extproc.core.quotas import (
    BUILTIN,
    DEFAULT_TABLE,
    Quota,
    RateLimiter,
    TokenBucket,
    parse_quotas,
)
from extproc.edge.keyfiles import read_key_index, write_key_index

KEY = "e2b_" + "a" * 40


def test_namespaces_inherit_from_default_then_builtin() -> None:
    table = parse_quotas(json.dumps({
        "default": {"createsPerMinute": 30},
        "team-a": {"maxSandboxes": 5, "requestsPerSecond": 10},
    }))  # fmt: skip
    assert table.for_namespace("team-a") == Quota(5, 30, 10)
    assert table.for_namespace("elsewhere") == Quota(0, 30, BUILTIN.requests_per_second)


@pytest.mark.parametrize("text", [None, "", "  "])
def test_absent_means_defaults(text: str | None) -> None:
    assert parse_quotas(text) is DEFAULT_TABLE
    assert DEFAULT_TABLE.for_namespace("x") == BUILTIN


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{not json", "not JSON"),
        ("[1]", "expected a JSON object"),
        ('{"team-a": 5}', "quotas['team-a'] must be an object"),
        ('{"team-a": {"maxSandboxes": "5"}}', "maxSandboxes must be a non-negative integer"),
        ('{"team-a": {"maxSandboxes": true}}', "maxSandboxes must be a non-negative integer"),
        ('{"team-a": {"maxSandboxes": -1}}', "maxSandboxes must be a non-negative integer"),
        ('{"team-a": {"requestsPerSecond": 0}}', "requestsPerSecond must be at least 1"),
        ('{"default": {"maxSandbox": 5}}', "unknown field 'maxSandbox'"),
    ],
)
def test_bad_quotas_name_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(fragment)):
        parse_quotas(text)


def _documents(quotas: str) -> tuple[dict[str, object], dict[str, object]]:
    secret = {"stringData": {hash_api_key(KEY): KeyStatus.VALID.value}}
    config = {"data": {hash_api_key(KEY): "team-a", "quotas": quotas}}
    return secret, config


def test_bad_quotas_keep_the_keys_and_the_defaults() -> None:
    index = parse_key_documents(*_documents('{"team-a": {"maxSandboxes": "lots"}}'))
    entry = index.lookup(hash_api_key(KEY))
    assert entry is not None and entry.namespace == "team-a"
    assert index.quotas is DEFAULT_TABLE
    assert "e2b-api-key-config" in index.quotas_error and "maxSandboxes" in index.quotas_error


def test_key_files_keep_the_quotas_when_rewritten(tmp_path: Path) -> None:
    secret, config = _documents('{"team-a": {"maxSandboxes": 2}}')
    (tmp_path / "e2b-api-keys.json").write_text(json.dumps(secret))
    (tmp_path / "e2b-api-key-config.json").write_text(json.dumps(config))
    index = read_key_index(tmp_path)
    assert index.quotas.for_namespace("team-a").max_sandboxes == 2
    write_key_index(tmp_path, index)
    assert read_key_index(tmp_path).quotas == index.quotas


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=2.0, capacity=2.0, now=100.0)
    assert bucket.take(100.0) and bucket.take(100.0)
    assert not bucket.take(100.0)
    assert not bucket.take(100.4)  # 0.8 of a token
    assert bucket.take(100.5)
    assert bucket.take(110.0) and bucket.take(110.0) and not bucket.take(110.0)  # capped


def test_token_bucket_takes_a_cost_whole_or_not_at_all() -> None:
    bucket = TokenBucket(rate=100.0, capacity=250.0, now=0.0)
    assert bucket.take(0.0, 100) and bucket.take(0.0, 100)
    assert not bucket.take(0.0, 100)  # 50 left: a refusal spends nothing
    assert bucket.take(0.0, 50) and not bucket.take(0.0, 1)
    assert not bucket.take(0.5, 60)  # refilled to 50
    assert bucket.take(1.0, 100)  # and to 100
    assert bucket.take(1.0, 0)  # nothing to spend always passes


def test_rate_limiter_per_key_follows_rate_changes_and_forgets_idle_keys() -> None:
    limiter = RateLimiter(max_keys=2)
    assert limiter.allow("a", 1.0, 1.0, 0.0)
    assert not limiter.allow("a", 1.0, 1.0, 0.0)
    assert limiter.allow("b", 1.0, 1.0, 0.0)  # its own bucket
    assert limiter.allow("a", 10.0, 10.0, 0.5)  # the new rate applies to the kept tokens
    assert limiter.allow("c", 1.0, 1.0, 100.0)  # sweeps the refilled a and b
    assert len(limiter) == 1
