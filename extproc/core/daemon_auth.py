"""The auth of a daemon inside a sandbox (picod, the code interpreter): its settings, its
flags, and the credentials a request presents to it.

Both daemons take the same two credentials (the gateway's RS256 JWT, whose `session_id`
must be the sandbox served, and envd's access token) from the same flags, and refuse to
serve with neither unless `--no-auth` says so explicitly. What each route requires is the
daemon's own (picod/auth.py, interpreter/auth.py).

Standard library only: picod imports this at start-up, on every sandbox's create path.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from extproc.core.flags import EnvDefaults


@dataclass(frozen=True)
class DaemonAuthSettings:
    """The auth half of a daemon's settings (the daemon's settings extend it)."""

    # This sandbox's id; a gateway JWT whose session_id differs is refused. None: unbound,
    # the daemon learns it from picod's `/init` (each daemon's binding.py says how); with a
    # JWT key, nothing but /health answers until then.
    sandbox_id: str | None = None
    # PEM of the gateway's RSA public key (RS256). None: JWT auth off.
    jwt_public_key: str | None = None
    # E2B's envd access token (X-Access-Token). None: not required (picod adopts one that
    # `/init` sets), and not accepted as a credential.
    access_token: str | None = None
    # Explicitly serve without any auth (local debugging only).
    no_auth: bool = False


def add_auth_flags(
    parser: argparse.ArgumentParser, env: EnvDefaults, *, key_help: str, access_help: str
) -> None:
    """--sandbox-id, --jwt-public-key, --access-token and --no-auth, defaulting to `env`."""
    parser.add_argument(
        "--sandbox-id", default=env.text("SANDBOX_ID"), help="refuse JWTs for other sandboxes"
    )
    parser.add_argument(
        "--jwt-public-key", default=env.text("JWT_PUBLIC_KEY"), metavar="FILE", help=key_help
    )
    parser.add_argument("--access-token", default=env.text("ACCESS_TOKEN"), help=access_help)
    parser.add_argument(
        "--no-auth",
        action="store_true",
        default=env.flag("NO_AUTH"),
        help="serve without any auth (local debugging only)",
    )


def auth_settings(args: argparse.Namespace, key_pem: str | None = None) -> DaemonAuthSettings:
    """The auth flags, checked: the JWT key is read from `--jwt-public-key` (else `key_pem`,
    e.g. from an environment variable) and parsed. ValueError names the flag at fault, or
    says that no credential is configured and `--no-auth` was not given."""
    if args.jwt_public_key:
        try:
            key_pem = Path(args.jwt_public_key).read_text(encoding="utf-8")
        except OSError as e:
            raise ValueError(f"--jwt-public-key: cannot read {args.jwt_public_key}: {e}") from e
    if key_pem:
        from extproc.core.gateway_jwt import load_public_key  # cryptography: only when used

        load_public_key(key_pem)
    access_token = args.access_token or None
    if not (key_pem or access_token or args.no_auth):
        raise ValueError(
            "no auth configured: pass --jwt-public-key and/or --access-token, "
            "or --no-auth to serve without auth"
        )
    return DaemonAuthSettings(
        sandbox_id=args.sandbox_id or None,
        jwt_public_key=key_pem or None,
        access_token=access_token,
        no_auth=bool(args.no_auth) and not (key_pem or access_token),
    )


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request presents, as sent: the gateway's JWT (`Authorization: Bearer`) and
    envd's access token (`X-Access-Token`); the last of each counts."""

    bearer: bytes | None
    access_token: bytes | None


def credentials(headers: list[tuple[bytes, bytes]]) -> Credentials:
    bearer = token = None
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            bearer = value[7:]
        elif name == b"x-access-token":
            token = value
    return Credentials(bearer, token)
