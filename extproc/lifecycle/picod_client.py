"""The lifecycle service's calls to a Kubernetes sandbox's picod, on the pod IP.

picod in an AgentCube pod checks the router's JWT on everything but /health, so each call
carries one signed like the edge's (claims `iss`, `iat`, `exp`, `session_id`) and, once the
sandbox has one, the envd access token as well:
- `health`: picod answers, the last step of a Create or Resume;
- `bind`: envd's `POST /init`, which gives a warm-pool pod (started before its sandbox
  existed) its sandbox id (the JWT's session_id), access token and envVars;
- `metrics`: picod's GET /metrics, the series of samples it keeps of itself;
- `poster`: the calls that apply a built template's user, workdir, start and ready commands
  (template_start.py), the user named in picod's user header (believed on a verified JWT
  only), since `Authorization` carries the JWT.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization

from extproc.core.errors import Unavailable
from extproc.core.request_context import REQUEST_ID_HEADER, current_request_id
from extproc.lifecycle.template_start import CALL_S, PicodPost
from extproc.picod.settings import USER_HEADER

ISSUER = "agentcube-router"  # AgentCube's router's; its picods accept nothing else in kind
LIFETIME_S = 60


class PicodClient:
    def __init__(self, *, scheme: str, port: int, timeout_s: float = 5.0) -> None:
        self._scheme = scheme
        self._port = port
        self._key: Any = None
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), trust_env=False)

    def use_identity(self, private_pem: bytes) -> None:
        self._key = serialization.load_pem_private_key(private_pem, password=None)

    async def close(self) -> None:
        await self._http.aclose()

    def _url(self, host: str, path: str) -> str:
        return f"{self._scheme}://{host}:{self._port}{path}"

    def _headers(self, sandbox_id: str, token: str) -> dict[str, str]:
        headers = {"X-Access-Token": token} if token else {}
        if self._key is not None:
            now = int(time.time())
            signed = jwt.encode(
                {"iss": ISSUER, "iat": now, "exp": now + LIFETIME_S, "session_id": sandbox_id},
                self._key,
                algorithm="RS256",
            )
            headers["Authorization"] = f"Bearer {signed}"
        request_id = current_request_id()
        if request_id:  # picod logs what the call causes under the platform request's id
            headers[REQUEST_ID_HEADER] = request_id
        return headers

    async def wait_healthy(self, host: str) -> None:
        """Return once picod at `host` answers /health; the caller bounds the wait."""
        delay = 0.05
        while True:
            with contextlib.suppress(httpx.HTTPError):
                response = await self._http.get(self._url(host, "/health"))
                if response.is_success:
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def bind(self, host: str, sandbox_id: str, token: str, env_vars: dict[str, str]) -> None:
        """Bind the pod at `host` to `sandbox_id` (idempotent: picod accepts the same binding
        again). Retries while picod is still starting; the caller bounds the wait."""
        body = {"accessToken": token, "envVars": env_vars}
        delay = 0.05
        while True:
            try:
                response = await self._http.post(
                    self._url(host, "/init"), json=body, headers=self._headers(sandbox_id, token)
                )
            except httpx.HTTPError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if response.is_success:
                return
            # A refusal is final: the pod is bound to another sandbox or trusts another key.
            raise Unavailable(
                f"sandbox {sandbox_id}: picod refused the binding (HTTP {response.status_code})"
            )

    def poster(self, host: str, sandbox_id: str, token: str) -> PicodPost:
        """POSTs to the picod at `host` of `sandbox_id` (template_start.PicodPost)."""

        async def post(
            path: str, headers: dict[str, str], body: bytes, user: str
        ) -> tuple[int, bytes]:
            sent = {**headers, **self._headers(sandbox_id, token)}
            if user:
                sent[USER_HEADER] = user
            try:
                response = await self._http.post(
                    self._url(host, path), content=body, headers=sent, timeout=CALL_S
                )
            except httpx.HTTPError as error:
                raise Unavailable(f"sandbox {sandbox_id}: picod {path} failed: {error}") from None
            return response.status_code, response.content

        return post

    async def metrics(
        self, host: str, sandbox_id: str, token: str, start: int | None = None,
        end: int | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """The samples picod at `host` kept of itself with start <= ts <= end (whole unix
        seconds; None: unbounded), oldest first. An older picod ignores the query and answers
        the one sample it takes now: that is a series of one, which the caller still filters."""
        params = {"series": "1"}
        params.update({k: str(v) for k, v in (("start", start), ("end", end)) if v is not None})
        try:
            response = await self._http.get(
                self._url(host, "/metrics"), params=params, headers=self._headers(sandbox_id, token)
            )
            response.raise_for_status()
            doc = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise Unavailable(f"sandbox {sandbox_id}: picod /metrics failed") from error
        samples = doc.get("samples", [doc]) if isinstance(doc, dict) else None
        if not isinstance(samples, list) or not all(isinstance(s, dict) for s in samples):
            raise Unavailable(f"sandbox {sandbox_id}: picod /metrics answered no samples")
        return samples
