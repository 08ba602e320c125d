"""The sandbox's env vars, from envd's `GET /envs` in the same sandbox.

E2B's interpreter asks envd rather than reading its own environment: the env vars given at
sandbox create arrive through envd's /init, possibly after this server (and its warm
kernel) started. So they are fetched when a kernel first runs user code, with the caller's
credentials forwarded as envd checks them: its X-Access-Token, and the gateway's JWT
(`Authorization: Bearer`), which the edge signs for this sandbox and adds on every port it
routes, and which picod requires when it has the gateway's key (Kubernetes mode). Neither is
ever logged. envd being unreachable or refusing is not fatal: code runs without the env
vars, and it is logged once, not on every execution.
"""

from __future__ import annotations

import logging

import httpx

log = logging.getLogger(__name__)

FETCH_TIMEOUT_SECONDS = 2.0


class SandboxEnvs:
    def __init__(self, envd_url: str | None) -> None:
        self._url = envd_url.rstrip("/") + "/envs" if envd_url else None
        self._client: httpx.AsyncClient | None = None
        self._warned = False

    async def fetch(self, access_token: str | None, bearer: str | None = None) -> dict[str, str]:
        """The env vars; `bearer` is the gateway JWT the caller's request carried, if any."""
        if self._url is None:
            return {}
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS)
        headers = {"X-Access-Token": access_token} if access_token else {}
        if bearer:
            headers["Authorization"] = "Bearer " + bearer
        try:
            response = await self._client.get(self._url, headers=headers)
            if response.is_error:
                # The status only: the response and the request around it stay out of logs.
                raise ValueError(f"GET /envs answered {response.status_code}")
            body = response.json()
            if not isinstance(body, dict):
                raise ValueError("GET /envs did not answer a JSON object")
        except (httpx.HTTPError, ValueError) as e:
            if not self._warned:
                self._warned = True
                reason = e if isinstance(e, ValueError) else type(e).__name__
                log.warning(
                    "running code without the sandbox env vars: envd %s: %s", self._url, reason
                )
            return {}
        return {str(k): str(v) for k, v in body.items()}

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
