"""The rule both API key sources follow: swap a good index in whole, keep it on a bad one."""

from __future__ import annotations

import logging

import pytest

from extproc.core.api_keys import EMPTY_INDEX, KeyIndex, hash_api_key, parse_key_documents
from extproc.core.key_source import KeySource

KEY = "e2b_" + "b" * 40


def _index(quotas: str | None = None) -> KeyIndex:
    config = {"data": {"quotas": quotas}} if quotas is not None else None
    return parse_key_documents({"stringData": {hash_api_key(KEY): "valid"}}, config)


def test_publish_swaps_in_whole_and_says_which_is_first() -> None:
    source = KeySource()
    assert source.index is EMPTY_INDEX and not source.loaded.is_set()
    first, second = _index(), _index()
    assert source.publish(first) is True
    assert source.index is first and source.loaded.is_set()
    assert source.publish(second) is False
    assert source.index is second


def test_a_bad_document_keeps_the_index_and_is_logged_once_per_problem(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = KeySource()
    good = _index()
    source.publish(good)
    with caplog.at_level(logging.WARNING, logger="extproc.core.key_source"):
        for problem in ("bad hash", "bad hash", "bad status", "bad status"):
            source.keep_previous(problem)
        assert source.index is good
        source.publish(good)
        source.keep_previous("bad status")  # after a good one, the same problem is news
    assert [record.getMessage() for record in caplog.records] == [
        "keeping the previous API key index: bad hash",
        "keeping the previous API key index: bad status",
        "keeping the previous API key index: bad status",
    ]


def test_an_invalid_quotas_entry_is_logged_once_and_keys_still_load(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = KeySource()
    with caplog.at_level(logging.WARNING, logger="extproc.core.key_source"):
        for _ in range(3):
            source.publish(_index(quotas="{not json"))
    assert len(source.index) == 1
    assert len(caplog.records) == 1 and "quotas" in caplog.records[0].getMessage()
