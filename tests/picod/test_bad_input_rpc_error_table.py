"""Every row of the domain/OS error -> Connect code table, and the explicit default."""

from __future__ import annotations

import errno

import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError

from extproc.core import errors
from extproc.picod import rpc_errors

ROWS: list[tuple[BaseException, Code]] = [
    *((kind("boom"), code) for kind, code in rpc_errors.DOMAIN_CODES.items()),
    *((kind(errno.EIO, "os says", "/p"), code) for kind, code in rpc_errors.OS_ERROR_CODES.items()),
    *((OSError(num, "os says", "/p"), code) for num, code in rpc_errors.ERRNO_CODES.items()),
]


@pytest.mark.parametrize(("exc", "code"), ROWS, ids=lambda v: type(v).__name__)
def test_row(exc: BaseException, code: Code) -> None:
    mapped = rpc_errors.to_connect_error(exc)
    assert mapped.code == code
    assert "boom" in mapped.message or mapped.message == "os says: /p"


def test_every_domain_error_has_a_row() -> None:
    # Only the shared vocabulary: other surfaces (imported in the same test run) may subclass
    # DomainError for their own adapters.
    subclasses = errors.DomainError.__subclasses__()
    shared = {kind for kind in subclasses if kind.__module__ == errors.__name__}
    assert shared == set(rpc_errors.DOMAIN_CODES)


def test_unknown_errors_become_generic_internal(caplog: pytest.LogCaptureFixture) -> None:
    mapped = rpc_errors.to_connect_error(RuntimeError("secret detail"))
    assert (mapped.code, mapped.message) == (Code.INTERNAL, "internal error")
    assert "secret detail" not in mapped.message
    assert OSError(errno.EIO, "io").errno == errno.EIO
    assert rpc_errors.to_connect_error(OSError(errno.EIO, "io")).code == Code.INTERNAL


def test_connect_errors_pass_through() -> None:
    original = ConnectError(Code.ABORTED, "x")
    assert rpc_errors.to_connect_error(original) is original
