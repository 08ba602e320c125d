"""Fixtures: the fake API (tests/support/kubeapi.py) serving one agent-sandbox release's CRDs
plus AgentCube's and the built-in kinds, and the official client pointed at it.

The client is synchronous, so every call runs in a worker thread while the fake serves on
the test's loop. A call returns a `Reply` whether it succeeded or not: the tests assert on
statuses, Status bodies and Warning headers alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes.client import ApiClient, Configuration, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from kubernetes.watch import watch as client_watch

from support.crds import load_crds
from support.kubeapi import FakeApi, Obj, served

NS = "team-a"
SANDBOX_GROUP = "agents.x-k8s.io"
EXTENSIONS = "extensions.agents.x-k8s.io"
AGENTCUBE = "runtime.agentcube.volcano.sh"
MERGE = "application/merge-patch+json"
WAIT_S = 5.0
# How the official client splits a watch stream into events (untyped, hence Any).
read_lines: Any = client_watch.iter_resp_lines
_WARNING = re.compile(r'299 - "((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str]

    @property
    def warnings(self) -> list[str]:
        """The texts of the Warning header, unescaped."""
        header = self.headers.get("Warning") or ""
        return [re.sub(r"\\(.)", r"\1", text) for text in _WARNING.findall(header)]

    @property
    def causes(self) -> list[tuple[str, str]]:
        """(field, reason) of a 422 Status."""
        causes = self.body.get("details", {}).get("causes", [])
        return [(cause["field"], cause["reason"]) for cause in causes]


@dataclass
class Cluster:
    api: FakeApi
    client: Any  # an ApiClient; the official client is untyped

    async def custom(self, method: str, *args: Any, **kwargs: Any) -> Reply:
        """CustomObjectsApi.<method>_with_http_info(*args, **kwargs)."""
        return await self._call(CustomObjectsApi(self.client), method, *args, **kwargs)

    async def core(self, method: str, *args: Any, **kwargs: Any) -> Reply:
        """CoreV1Api.<method>_with_http_info(*args, **kwargs)."""
        return await self._call(CoreV1Api(self.client), method, *args, **kwargs)

    async def create(self, group: str, version: str, plural: str, body: Obj, **kw: Any) -> Reply:
        return await self.custom(
            "create_namespaced_custom_object", group, version, NS, plural, body, **kw
        )

    async def get(self, group: str, version: str, plural: str, name: str) -> Reply:
        return await self.custom("get_namespaced_custom_object", group, version, NS, plural, name)

    async def patch(
        self, group: str, version: str, plural: str, name: str, patch: Any, **kw: Any
    ) -> Reply:
        kw.setdefault("_content_type", MERGE)
        method = "patch_namespaced_custom_object" + ("_status" if kw.pop("status", False) else "")
        return await self.custom(method, group, version, NS, plural, name, patch, **kw)

    async def delete(self, group: str, version: str, plural: str, name: str, **kw: Any) -> Reply:
        return await self.custom(
            "delete_namespaced_custom_object", group, version, NS, plural, name, **kw
        )

    async def raw(self, method: str, path: str, body: Any = None, **headers: str) -> Reply:
        """Any request through ApiClient.call_api: discovery, and bodies the typed core API
        would refuse to send (a Secret with `spec`, a Pod without containers)."""
        if body is not None:
            headers.setdefault("Content-Type", "application/json")

        def blocking() -> Reply:
            url = self.client.configuration.host + path
            response = self.client.call_api(method, url, header_params=headers, body=body)
            response.read()
            return Reply(response.status, json.loads(response.data), dict(response.getheaders()))

        return await asyncio.to_thread(blocking)

    async def watch(
        self,
        group: str,
        version: str,
        plural: str,
        since: int,
        count: int,
        live: Callable[[], object] | None = None,
    ) -> list[Obj]:
        """The first `count` events of a watch from resourceVersion `since`; `live` runs on
        the loop once the watch is registered (to produce events it must see as they come)."""
        custom = CustomObjectsApi(self.client)

        def blocking() -> list[Obj]:
            response: Any = custom.list_namespaced_custom_object(
                group,
                version,
                NS,
                plural,
                watch=True,
                resource_version=str(since),
                _preload_content=False,
            )
            events: list[Obj] = []
            try:
                for line in read_lines(response):
                    events.append(json.loads(line))
                    if len(events) == count:
                        break
            finally:
                response.close()
            return events

        reading = asyncio.ensure_future(asyncio.to_thread(blocking))
        if live is not None:
            async with asyncio.timeout(WAIT_S):
                while not self.api.watchers and not reading.done():
                    await asyncio.sleep(0.01)
            live()
        async with asyncio.timeout(WAIT_S):
            events = await reading
        self.api.end_watches(plural)
        return events

    async def _call(self, api: Any, method: str, *args: Any, **kwargs: Any) -> Reply:
        def blocking() -> Reply:
            try:
                data, status, headers = getattr(api, f"{method}_with_http_info")(*args, **kwargs)
            except ApiException as error:
                return Reply(error.status, json.loads(error.body or "{}"), error.headers or {})
            body = self.client.sanitize_for_serialization(data)
            return Reply(status, body, headers or {})

        return await asyncio.to_thread(blocking)


def pod_template(**container: Any) -> Obj:
    return {
        "metadata": {"labels": {"app": "sandbox"}},
        "spec": {"containers": [{"name": "main", "image": "sandbox:1", **container}]},
    }


def sandbox(name: str, version: str = "v1alpha1", **spec: Any) -> Obj:
    return {
        "apiVersion": f"{SANDBOX_GROUP}/{version}",
        "kind": "Sandbox",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"podTemplate": pod_template(), **spec},
    }


def claim(name: str, version: str = "v1alpha1", **spec: Any) -> Obj:
    return {
        "apiVersion": f"{EXTENSIONS}/{version}",
        "kind": "SandboxClaim",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def code_interpreter(name: str, **spec: Any) -> Obj:
    return {
        "apiVersion": f"{AGENTCUBE}/v1alpha1",
        "kind": "CodeInterpreter",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"template": {"image": "sandbox:1"}, **spec},
    }


Make = Callable[[str], Awaitable[Cluster]]


@pytest.fixture
async def make_cluster() -> AsyncIterator[Make]:
    """`await make_cluster("agent-sandbox-v0.5.6")`: a served fake with that release."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(release: str) -> Cluster:
            def setup(api: FakeApi) -> None:
                api.install("secrets", "configmaps", "pods", writable=True)
                for crd in load_crds(release, "agentcube"):
                    api.install_crd(crd)

            api = await stack.enter_async_context(served(setup))
            configuration = Configuration(host=api.url)
            configuration.retries = 0
            client = ApiClient(configuration)
            stack.callback(client.close)
            return Cluster(api, client)

        yield make


@pytest.fixture
async def v046(make_cluster: Make) -> Cluster:
    return await make_cluster("agent-sandbox-v0.4.6")


@pytest.fixture
async def v056(make_cluster: Make) -> Cluster:
    return await make_cluster("agent-sandbox-v0.5.6")
