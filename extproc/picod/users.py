"""Which OS account a request runs as, and how its paths resolve.

E2B names users, not uids: the SDK sends `Authorization: Basic base64(user:)` (behind the
gateway the edge moves that choice into USER_HEADER, because `Authorization` then carries
the gateway's JWT). E2B's templates always have an account `user` with home `/home/user`;
a host or container running picod may not. So the default user's name maps onto picod's
own account with the configured home when the OS has no such account, and an account that
does exist is only usable when picod can actually become it (it runs as root) or already
is it.
"""

from __future__ import annotations

import base64
import binascii
import os
import pwd
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from extproc.core.errors import InvalidArgument, PermissionDenied, Unauthenticated
from extproc.picod.settings import USER_HEADER


class UserDefaults(Protocol):
    """What user resolution needs: PicodSettings and Environment both provide it."""

    @property
    def default_user(self) -> str: ...

    @property
    def home(self) -> Path: ...


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: Path

    def resolve_path(self, path: str) -> Path:
        """An absolute path stays; `~` and relative paths resolve against the home."""
        if not path:
            raise InvalidArgument("path must not be empty")
        if "\0" in path:
            raise InvalidArgument("path must not contain NUL bytes")
        if path == "~" or path.startswith("~/"):
            path = str(self.home) + path[1:]
        elif not path.startswith("/"):
            path = f"{self.home}/{path}"
        return Path(os.path.normpath(path))


def requested_user(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The user a request asks for, or None for the default user.

    `headers` are ASGI headers (lower-case names). USER_HEADER wins over Basic auth: behind
    the gateway only the edge can set it, and `Authorization` is the gateway's Bearer JWT.
    """
    basic: bytes | None = None
    user_header = USER_HEADER.encode()
    for name, value in headers:
        if name == user_header:
            return value.decode("latin-1") or None
        if name == b"authorization" and value[:6].lower() == b"basic ":
            basic = value[6:].strip()
    if basic is None:
        return None
    try:
        decoded = base64.b64decode(basic, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as e:
        raise InvalidArgument("malformed Basic authorization header") from e
    user, sep, _password = decoded.partition(":")
    if not sep:
        raise InvalidArgument("malformed Basic authorization header: expected 'user:'")
    return user or None


class HeaderLookup(Protocol):
    """Request headers by lower-case name, every value in order (connectrpc's Headers)."""

    def getall(self, key: str) -> Sequence[str]: ...


def requested_user_in(headers: HeaderLookup) -> str | None:
    """`requested_user` for an RPC's headers: only the two headers it reads are encoded."""
    return requested_user(
        (name.encode(), value.encode("latin-1"))
        for name in (USER_HEADER, "authorization")
        for value in headers.getall(name)
    )


def resolve_user(defaults: UserDefaults, name: str | None) -> User:
    """The account `name` (None: the default user) runs as; see the module docstring."""
    wanted = name or defaults.default_user
    is_default = wanted == defaults.default_user
    try:
        entry = pwd.getpwnam(wanted)
    except KeyError:
        entry = None
    except UnicodeEncodeError as e:
        raise InvalidArgument(f"invalid user name {wanted!r}") from e
    euid = os.geteuid()
    if entry is None or (is_default and euid not in (0, entry.pw_uid)):
        # The default user is whoever picod can be: without root it cannot switch anyway.
        if is_default:
            return User(wanted, euid, os.getegid(), defaults.home)
        raise Unauthenticated(f"invalid user: no account named {wanted!r} in this sandbox")
    home = defaults.home if is_default else Path(entry.pw_dir)
    if euid == 0 or entry.pw_uid == euid:
        return User(wanted, entry.pw_uid, entry.pw_gid, home)
    raise PermissionDenied(
        f"cannot act as user {wanted!r}: this sandbox's daemon does not run as root"
    )
