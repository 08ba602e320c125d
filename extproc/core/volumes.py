"""Volumes: their ids, names and the bearer token of the volume content API.

A volume's content token is hex HMAC-SHA256(seed, "volume-content:" + volume id), prefixed
`vol_`: like an envd access token it is never stored and whoever holds the seed checks it
without a lookup, and the prefix in the message keeps it from ever equalling a sandbox's
envd token (both kinds of id are 20 characters of [a-z0-9]). It is a capability: it opens
the one volume it was minted for, to anyone holding it, until the volume is deleted (a new
volume of the same name has a new id, hence a new token). The platform API hands it out only
to the volume's tenant (`Volume.create`, `Volume.get_info`).

Envoy forwards a request to the content server only when its path is one of the API's and
its `Authorization` starts `Bearer vol_` (envoy_config/routes.py): looser than the patterns
below because Envoy's RE2 caps a pattern's size; the server checks these exactly.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from extproc.core.errors import InvalidArgument, NotFound
from extproc.core.ids import LENGTH, new_sandbox_id

# E2B's NewVolume.name pattern; the length cap is ours (E2B's spec gives none).
NAME_MAX = 128
NAME_PATTERN = r"[a-zA-Z0-9_-]+"
ID_PATTERN = rf"[a-z0-9]{{{LENGTH}}}"
TOKEN_PREFIX = "vol_"  # noqa: S105 (a prefix, not a secret)
# The content API's operations (../shared/specs/e2b-openapi-volumecontent.yml): groups are
# the volume id and the kind of operation. Envoy's route matches the shape alone.
CONTENT_PATH_PATTERN = rf"/volumecontent/({ID_PATTERN})/(path|dir|file)"
CONTENT_ROUTE_PATTERN = r"/volumecontent/[a-z0-9]+/(path|dir|file)"
_NAME = re.compile(NAME_PATTERN)
_ID = re.compile(ID_PATTERN)


def new_volume_id() -> str:
    """A fresh id from the OS CSPRNG, in the sandbox ids' alphabet (~103 bits)."""
    return new_sandbox_id()


def is_volume_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


def check_volume_name(name: str) -> str:
    if not _NAME.fullmatch(name) or len(name) > NAME_MAX:
        raise InvalidArgument(
            f"invalid volume name {name[:NAME_MAX]!r}: expected 1 to {NAME_MAX} characters "
            "of [a-zA-Z0-9_-]"
        )
    return name


def volume_not_found(value: str) -> NotFound:
    """What every id that names no volume of the caller gets: another tenant's volume is
    indistinguishable from a missing one (never 403)."""
    shown = value if is_volume_id(value) else repr(value[:64])
    return NotFound(f"volume {shown} not found")


def volume_token(seed: bytes, volume_id: str) -> str:
    message = ("volume-content:" + volume_id).encode("ascii")
    return TOKEN_PREFIX + hmac.new(seed, message, hashlib.sha256).hexdigest()


def check_volume_token(seed: bytes, volume_id: str, token: str) -> bool:
    return hmac.compare_digest(volume_token(seed, volume_id), token)
