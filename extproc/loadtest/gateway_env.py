"""The gateway under test, as the E2B SDK finds it: the `E2B_*` environment.

The SDK's defaults point at E2B's cloud, so a setting that is missing here is refused rather
than defaulted: a load test must never fall through to `api.e2b.app`. `E2B_DEBUG` is refused
too: with it the SDK skips the gateway and talks to an envd on localhost, so Envoy would see
none of the load.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from extproc.loadtest.settings import LoadtestError


@dataclass(frozen=True)
class GatewayEnv:
    """Where the SDK sends platform calls and sandbox traffic; never a key."""

    api_url: str
    sandbox_url: str | None
    domain: str


def gateway_env(environ: Mapping[str, str] = os.environ) -> GatewayEnv:
    """The `E2B_*` variables checked; LoadtestError naming the one that is wrong."""
    if not environ.get("E2B_API_KEY"):
        raise LoadtestError(
            "E2B_API_KEY is not set: export the key `up` printed, or create one with "
            "`agentcube-e2b keys create`"
        )
    if environ.get("E2B_DEBUG", "false").lower() == "true":
        raise LoadtestError(
            "E2B_DEBUG is set: the SDK would talk to an envd on localhost directly, bypassing "
            "the gateway; unset it to load-test a gateway"
        )
    domain = environ.get("E2B_DOMAIN", "")
    if not domain and not environ.get("E2B_API_URL"):
        raise LoadtestError(
            "neither E2B_DOMAIN nor E2B_API_URL is set: the SDK would load-test E2B's cloud "
            "(e2b.app); set them to your gateway (`up` prints them)"
        )
    domain = domain or "e2b.app"
    api_url = environ.get("E2B_API_URL") or f"https://api.{domain}"
    return GatewayEnv(api_url, environ.get("E2B_SANDBOX_URL") or None, domain)


async def check_gateway(gateway: GatewayEnv) -> None:
    """One platform call (list one sandbox) with the SDK: the gateway answers and takes the
    key. LoadtestError otherwise."""
    from e2b import AsyncSandbox
    from e2b.exceptions import AuthenticationException

    try:
        await AsyncSandbox.list(limit=1).next_items()
    except AuthenticationException as error:
        raise LoadtestError(
            f"the gateway at {gateway.api_url} refused E2B_API_KEY: {one_line(error)}"
        ) from None
    except Exception as error:  # the SDK's transports raise httpx's and its own errors
        raise LoadtestError(
            f"cannot use the gateway at {gateway.api_url}: {one_line(error)}"
        ) from None


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def sdk_version() -> str:
    from importlib.metadata import version

    return version("e2b")
