"""Pure pieces: the error table, the MIME mapping, the output budget."""

from __future__ import annotations

import pytest

from extproc.core import errors
from extproc.interpreter.outputs import OutputBudget, result_line, translate
from extproc.interpreter.wire import DEFAULT_ERROR, ERROR_STATUS, error_status


@pytest.mark.parametrize(("kind", "status"), list(ERROR_STATUS.items()))
def test_error_table(kind: type[errors.DomainError], status: int) -> None:
    assert error_status(kind("what went wrong")) == (status, "what went wrong")


def test_unknown_error_is_500_without_details() -> None:
    assert error_status(RuntimeError("secret internals")) == DEFAULT_ERROR


def test_result_keys() -> None:
    line = result_line({"text/plain": "t", "image/png": "p", "x/y": 1}, is_main_result=False)
    assert line == {
        "type": "result",
        "is_main_result": False,
        "text": "t",
        "png": "p",
        "extra": {"x/y": 1},
    }


def test_budget_truncates_each_stream_once() -> None:
    budget = OutputBudget(limit=5)
    assert [line["text"] for line in budget.admit("stdout", "abc")] == ["abc"]
    cut = budget.admit("stdout", "defgh")
    assert cut[0]["text"] == "de" and "truncated" in cut[1]["text"]
    assert budget.admit("stdout", "more") == []
    assert [line["text"] for line in budget.admit("stderr", "err")] == ["err"]


def test_error_message_traceback_joined() -> None:
    msg = {
        "header": {"msg_type": "error"},
        "content": {"ename": "E", "evalue": "v", "traceback": ["\x1b[31ma", "b"]},
    }
    (line,) = translate(msg, OutputBudget(limit=10))
    assert line == {"type": "error", "name": "E", "value": "v", "traceback": "\x1b[31ma\nb"}
