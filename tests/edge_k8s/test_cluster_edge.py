"""The edge in Kubernetes mode: keys and routes from informers, decided by the real Check."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import grpc
import jwt
import pytest
from envoy.service.auth.v3 import external_auth_pb2 as auth
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extproc.core.api_keys import hash_api_key
from extproc.core.signed_urls import Operation, sign
from extproc.edge.server import KUBERNETES_SERVICE, Edge
from extproc.k8s.object_proof import PROOF_ANNOTATION, proof_of
from support.kubeapi import FakeApi

from .conftest import (
    DOMAIN,
    KEY_A,
    KEY_B,
    KEY_REVOKED,
    MISS_WAIT_S,
    PROOF_KEY,
    WAIT_S,
    check_request,
    edge_settings,
    secret,
    seed_keys,
)

TOKEN = "envd-token-of-sbx1"
SBX_NS = "team-a"


def sandbox(
    sandbox_id: str,
    namespace: str = SBX_NS,
    token: str | None = TOKEN,
    end_at: datetime | None = None,
    *,
    name: str | None = None,
    proof: str | None = "",
    **annotations: str,
) -> dict[str, Any]:
    """A Sandbox as the lifecycle writes it: `proof` "" is the right one, None none, and any
    other string that string. `annotations` are added (underscores read as dashes after the
    `e2b.agentcube.io/` prefix unless the key has a '/')."""
    name = name or f"e2b-{sandbox_id}"
    end = end_at or datetime.now(UTC) + timedelta(hours=1)
    extra = {key if "/" in key else "e2b.agentcube.io/" + key.replace("_", "-"): value
             for key, value in annotations.items()}  # fmt: skip
    annotations = {"e2b.agentcube.io/end-at": end.strftime("%Y-%m-%dT%H:%M:%SZ"), **extra}
    if token is not None:
        digest = hashlib.sha256(token.encode()).hexdigest()
        annotations["e2b.agentcube.io/access-token-sha256"] = digest
    if proof is not None:
        annotations[PROOF_ANNOTATION] = proof or proof_of(PROOF_KEY, namespace, name, sandbox_id)
    return {
        "apiVersion": "agents.x-k8s.io/v1alpha1",
        "kind": "Sandbox",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "e2b.agentcube.io/sandbox-id": sandbox_id,
                "e2b.agentcube.io/template": "code-interpreter-v1",
                "app.kubernetes.io/managed-by": "agentcube-e2b",
            },
            "annotations": annotations,
            "managedFields": [{"manager": "x"}],
        },
        "spec": {"podTemplate": {"spec": {"containers": [{"name": "picod"}]}}},
    }


def pod(
    sandbox_id: str,
    ip: str,
    ready: bool = True,
    namespace: str = SBX_NS,
    name: str | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name or f"e2b-{sandbox_id}",
            "namespace": namespace,
            "labels": {"e2b.agentcube.io/sandbox-id": sandbox_id},
        },
        "spec": {"containers": [{"name": "picod", "image": "sandbox:1"}]},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


async def check(edge: Edge, request: auth.CheckRequest) -> auth.CheckResponse:
    response: auth.CheckResponse = await edge.authz.Check(request, None)
    return response


def denial(response: auth.CheckResponse) -> tuple[int, dict[str, Any]]:
    assert response.WhichOneof("http_response") == "denied_response"
    return response.denied_response.status.code, json.loads(response.denied_response.body)


def tenant(response: auth.CheckResponse) -> str:
    assert response.status.code == 0, response
    return str(response.dynamic_metadata.fields["tenant"].string_value)


def upstream(response: auth.CheckResponse) -> str:
    assert response.status.code == 0, response
    return str(response.dynamic_metadata.fields["upstream_host"].string_value)


def envd(sandbox_id: str, token: str | None = TOKEN, port: int = 49983) -> auth.CheckRequest:
    headers = {"x-access-token": token} if token is not None else {}
    return check_request("sandbox", f"{port}-{sandbox_id}.{DOMAIN}", "/process.Process/Start",
                         headers)  # fmt: skip


async def until(edge: Edge, plural: str, rv: int) -> None:
    """Wait until the edge's informer for `plural` has applied resourceVersion `rv`."""
    informer = {i.target.name.split("/")[0]: i for i in edge.informers}[
        {"secrets": "secret", "configmaps": "configmap"}.get(plural, plural)
    ]
    async with asyncio.timeout(WAIT_S):
        await informer.wait_for(lambda i: int(i.status.resource_version or 0) >= rv)


# --- keys ---------------------------------------------------------------------------------


async def test_keys_from_the_secret_and_configmap_decide_platform_checks(edge: Edge) -> None:
    assert tenant(await check(edge, check_request("platform", headers={"x-api-key": KEY_A}))) == (
        "team-a"
    )
    assert tenant(await check(edge, check_request("platform", headers={"x-api-key": KEY_B}))) == (
        "default"
    )
    revoked = await check(edge, check_request("platform", headers={"x-api-key": KEY_REVOKED}))
    assert denial(revoked) == (401, {"code": 401, "message": "API key has been revoked"})
    unknown = await check(edge, check_request("platform", headers={"x-api-key": "e2b_" + "f" * 40}))
    assert denial(unknown)[0] == 401


async def test_a_key_revoked_in_the_secret_is_refused_within_a_second(
    edge: Edge, api: FakeApi
) -> None:
    request = check_request("platform", headers={"x-api-key": KEY_A})
    assert tenant(await check(edge, request)) == "team-a"
    rv = api.put(
        "secrets",
        secret(**{hash_api_key(KEY_A): "revoked", hash_api_key(KEY_B): "valid"}),
    )
    async with asyncio.timeout(WAIT_S):
        while (await check(edge, request)).status.code == 0:
            await edge.keys.secret.wait_for(lambda i: int(i.status.resource_version) >= rv)
    elapsed = time.perf_counter() - api.served_at[rv]
    print(f"revocation: watch event served -> Check refuses in {elapsed * 1e3:.2f} ms")
    assert elapsed < 1.0
    assert denial(await check(edge, request))[0] == 401
    assert tenant(await check(edge, check_request("platform", headers={"x-api-key": KEY_B})))


# --- the directory ------------------------------------------------------------------------


async def test_a_sandbox_with_a_ready_pod_routes_to_the_pod_ip_with_a_jwt(
    edge: Edge, api: FakeApi, identity_dir: Path
) -> None:
    api.put("sandboxes", sandbox("sbx1"))
    rv = api.put("pods", pod("sbx1", "10.1.2.3"))
    await until(edge, "pods", rv)

    response = await check(edge, envd("sbx1"))
    assert tenant(response) == SBX_NS
    fields = response.dynamic_metadata.fields
    assert fields["upstream_host"].string_value == "10.1.2.3:49983"
    assert fields["sandbox_id"].string_value == "sbx1"
    (header,) = [h.header for h in response.ok_response.headers if h.header.key == "authorization"]
    claims = jwt.decode(
        header.value.removeprefix("Bearer "),
        (identity_dir / "public.pem").read_bytes(),
        algorithms=["RS256"],
        issuer="agentcube-router",
    )
    assert claims["session_id"] == "sbx1"
    # Another port of the sandbox needs no envd token.
    other = await check(edge, envd("sbx1", token=None, port=8888))
    assert other.dynamic_metadata.fields["upstream_host"].string_value == "10.1.2.3:8888"
    # Only the facts the join reads are cached (no spec, no managedFields, no proof: the
    # verdict on it).
    cached = edge.informers[2].store[f"{SBX_NS}/e2b-sbx1"]
    assert list(cached) == ["metadata", "proven"] and cached["proven"] is True
    assert sorted(cached["metadata"]) == [
        "annotations", "labels", "name", "namespace", "resourceVersion"
    ]  # fmt: skip
    assert sorted(cached["metadata"]["annotations"]) == [
        "e2b.agentcube.io/access-token-sha256", "e2b.agentcube.io/end-at"
    ]  # fmt: skip


@pytest.mark.parametrize("token", ["wrong", None, ""])
async def test_a_wrong_access_token_gets_envds_401(
    edge: Edge, api: FakeApi, token: str | None
) -> None:
    api.put("sandboxes", sandbox("sbx1"))
    await until(edge, "pods", api.put("pods", pod("sbx1", "10.1.2.3")))
    status, body = denial(await check(edge, envd("sbx1", token=token)))
    assert status == 401
    assert body["message"].startswith("unauthorized access")


def files(sandbox_id: str, query: str, method: str = "GET") -> auth.CheckRequest:
    request = check_request("sandbox", f"49983-{sandbox_id}.{DOMAIN}", "/files?" + query)
    request.attributes.request.http.method = method
    return request


def signed(path: str, operation: Operation, expiration: int | None, **extra: str) -> str:
    params = {"path": path, "signature": sign(path, operation, "", TOKEN, expiration), **extra}
    if expiration is not None:
        params["signature_expiration"] = str(expiration)
    return urlencode(params)


async def test_signed_file_urls_go_to_picod_which_holds_the_token(edge: Edge, api: FakeApi) -> None:
    api.put("sandboxes", sandbox("sbx1"))
    await until(edge, "pods", api.put("pods", pod("sbx1", "10.1.2.3")))
    future = int(time.time()) + 60
    for method, query in (
        ("GET", signed("a.txt", "read", None)),
        ("GET", signed("a.txt", "read", future)),
        ("POST", signed("/home/user/b", "write", future)),
        # The edge cannot tell a forged signature from a good one without the token: picod
        # verifies it (tests/picod cover that); the edge only lets it through.
        ("GET", signed("a.txt", "write", None)),
    ):
        response = await check(edge, files("sbx1", query, method))
        assert response.status.code == 0, (method, query)
        assert response.dynamic_metadata.fields["upstream_host"].string_value == ("10.1.2.3:49983")
        headers = {h.header.key for h in response.ok_response.headers}
        assert "authorization" in headers  # picod also gets the gateway's JWT


@pytest.mark.parametrize(
    ("method", "query", "status", "message"),
    [
        ("GET", "path=a.txt", 401,
         "unauthorized access, please provide a valid access token or a valid signature"),
        ("GET", "path=a.txt&signature=", 401,
         "unauthorized access, please provide a valid access token or a valid signature"),
        ("GET", signed("a.txt", "read", 1_000), 401,
         "unauthorized access, signature is already expired"),
        ("GET", signed("a.txt", "read", None, signature_expiration="soon"), 401,
         "unauthorized access, invalid signature expiration"),
        ("GET", "path=a.txt&signature=v1_short", 401, "unauthorized access, invalid signature"),
        ("GET", signed("a.txt", "read", None).replace("v1_", "v2_"), 401,
         "unauthorized access, invalid signature"),
        ("GET", signed("a.txt", "read", None) + "&path=b.txt", 400,
         "the path query parameter is given more than once"),
        ("GET", signed("a.txt", "read", None) + "&signature=v1_x", 400,
         "the signature query parameter is given more than once"),
        ("DELETE", signed("a.txt", "read", None), 401,
         "unauthorized access, please provide a valid access token"),
    ],
)  # fmt: skip
async def test_signed_file_urls_are_checked_for_what_is_public(
    edge: Edge, api: FakeApi, method: str, query: str, status: int, message: str
) -> None:
    api.put("sandboxes", sandbox("sbx1"))
    await until(edge, "pods", api.put("pods", pod("sbx1", "10.1.2.3")))
    got_status, body = denial(await check(edge, files("sbx1", query, method)))
    assert (got_status, body["message"]) == (status, message)


async def test_a_sandbox_without_a_ready_pod_is_not_found(edge: Edge, api: FakeApi) -> None:
    api.put("sandboxes", sandbox("sbx2"))
    await until(edge, "pods", api.put("pods", pod("sbx2", "10.1.2.4", ready=False)))
    started = time.perf_counter()
    status, body = denial(await check(edge, envd("sbx2")))
    assert (status, body["message"]) == (502, "The sandbox was not found")
    assert time.perf_counter() - started >= MISS_WAIT_S * 0.9  # it waited for the watch

    # Becoming Ready during a miss's wait answers that very Check.
    pending = asyncio.create_task(check(edge, envd("sbx2")))
    await asyncio.sleep(0)
    api.put("pods", pod("sbx2", "10.1.2.4"))
    assert tenant(await pending) == SBX_NS


async def test_a_deleted_sandbox_is_not_found_at_once(edge: Edge, api: FakeApi) -> None:
    api.put("sandboxes", sandbox("sbx3"))
    await until(edge, "pods", api.put("pods", pod("sbx3", "10.1.2.5")))
    assert tenant(await check(edge, envd("sbx3"))) == SBX_NS

    await until(edge, "sandboxes", api.delete("sandboxes", SBX_NS, "e2b-sbx3"))
    started = time.perf_counter()
    status, body = denial(await check(edge, envd("sbx3")))
    assert (status, body["sandboxId"]) == (502, "sbx3")
    assert time.perf_counter() - started < MISS_WAIT_S  # remembered as gone: no wait


async def test_an_expired_end_at_is_not_found(edge: Edge, api: FakeApi) -> None:
    past = datetime.now(UTC) - timedelta(seconds=5)
    api.put("sandboxes", sandbox("sbx4", end_at=past))
    await until(edge, "pods", api.put("pods", pod("sbx4", "10.1.2.6")))
    assert denial(await check(edge, envd("sbx4")))[0] == 502


async def test_pods_are_joined_by_name_within_the_namespace(edge: Edge, api: FakeApi) -> None:
    # A pod with the id's label in another namespace does not make the sandbox routable.
    api.put("sandboxes", sandbox("sbx5"))
    await until(edge, "pods", api.put("pods", pod("sbx5", "10.9.9.9", namespace="team-b")))
    assert denial(await check(edge, envd("sbx5")))[0] == 502
    # Nor does one in the same namespace under another name.
    await until(edge, "pods", api.put("pods", pod("sbx5", "10.9.9.8", name="impostor")))
    assert denial(await check(edge, envd("sbx5")))[0] == 502
    await until(edge, "pods", api.put("pods", pod("sbx5", "10.1.2.7")))
    assert upstream(await check(edge, envd("sbx5"))) == "10.1.2.7:49983"


async def test_the_pod_is_the_one_agent_sandbox_names(edge: Edge, api: FakeApi) -> None:
    # A claimed warm-pool Sandbox: its own name, and its pod named in the annotation.
    claimed = sandbox("sbx6", name="pool-ab12c", **{"agents.x-k8s.io/pod-name": "pool-ab12c-0"})
    api.put("sandboxes", claimed)
    await until(edge, "pods", api.put("pods", pod("sbx6", "10.1.3.1", name="pool-ab12c")))
    assert denial(await check(edge, envd("sbx6")))[0] == 502
    await until(edge, "pods", api.put("pods", pod("sbx6", "10.1.3.2", name="pool-ab12c-0")))
    assert upstream(await check(edge, envd("sbx6"))) == "10.1.3.2:49983"
    # The pod going away unroutes it; coming back routes it again.
    await until(edge, "pods", api.delete("pods", SBX_NS, "pool-ab12c-0"))
    assert denial(await check(edge, envd("sbx6")))[0] == 502


def copied_proof(sandbox_id: str = "sbx5") -> str:
    return proof_of(PROOF_KEY, SBX_NS, f"e2b-{sandbox_id}", sandbox_id)


@pytest.mark.parametrize(
    ("namespace", "name", "proof"),
    [
        ("team-b", "e2b-sbx5", None),  # another tenant, the id label only
        ("team-b", "e2b-sbx5", "copied"),  # ... and the victim's proof annotation
        (SBX_NS, "evil", "copied"),  # the victim's own namespace, another name
        ("team-b", "e2b-sbx5", "forged"),  # a proof made with another key
        ("team-b", "e2b-sbx5", "garbage\u00e9"),
    ],
)
async def test_a_sandbox_with_a_copied_id_label_changes_nothing(
    edge: Edge, api: FakeApi, namespace: str, name: str, proof: str | None
) -> None:
    if proof == "copied":
        proof = copied_proof()
    elif proof == "forged":
        proof = proof_of(b"k" * 32, namespace, name, "sbx5")
    # The attacker's Sandbox and a Ready pod named after it, with the victim's id label, both
    # before and after the victim's.
    api.put("sandboxes", sandbox("sbx5", namespace, token="attacker", name=name, proof=proof))
    api.put("pods", pod("sbx5", "10.6.6.6", namespace=namespace, name=name))
    api.put("sandboxes", sandbox("sbx5"))
    await until(edge, "pods", api.put("pods", pod("sbx5", "10.1.2.7")))
    assert upstream(await check(edge, envd("sbx5"))) == "10.1.2.7:49983"
    assert tenant(await check(edge, envd("sbx5"))) == SBX_NS
    assert denial(await check(edge, envd("sbx5", token="attacker")))[0] == 401
    # Changed again later: still nothing.
    rv = api.put("sandboxes", sandbox("sbx5", namespace, token="attacker", name=name,
                                      proof=proof, touched="yes"))  # fmt: skip
    await until(edge, "sandboxes", rv)
    assert upstream(await check(edge, envd("sbx5"))) == "10.1.2.7:49983"
    # And when the victim is gone, the attacker does not inherit the id.
    await until(edge, "sandboxes", api.delete("sandboxes", SBX_NS, "e2b-sbx5"))
    assert denial(await check(edge, envd("sbx5", token="attacker")))[0] == 502


async def test_two_proven_sandboxes_for_one_id_route_nowhere(edge: Edge, api: FakeApi) -> None:
    # Only the lifecycle can write proofs, so this is our own bug: refuse rather than guess.
    api.put("sandboxes", sandbox("sbx5"))
    await until(edge, "pods", api.put("pods", pod("sbx5", "10.1.2.7")))
    assert upstream(await check(edge, envd("sbx5"))) == "10.1.2.7:49983"
    rv = api.put("sandboxes", sandbox("sbx5", name="e2b-sbx5-twin"))
    await until(edge, "sandboxes", rv)
    assert denial(await check(edge, envd("sbx5")))[0] == 502
    await until(edge, "sandboxes", api.delete("sandboxes", SBX_NS, "e2b-sbx5-twin"))
    assert upstream(await check(edge, envd("sbx5"))) == "10.1.2.7:49983"


async def test_a_sandbox_whose_proof_is_edited_away_stops_routing(edge: Edge, api: FakeApi) -> None:
    api.put("sandboxes", sandbox("sbx5"))
    await until(edge, "pods", api.put("pods", pod("sbx5", "10.1.2.7")))
    assert upstream(await check(edge, envd("sbx5"))) == "10.1.2.7:49983"
    await until(edge, "sandboxes", api.put("sandboxes", sandbox("sbx5", proof=None)))
    assert denial(await check(edge, envd("sbx5")))[0] == 502
    await until(edge, "sandboxes", api.put("sandboxes", sandbox("sbx5")))
    assert upstream(await check(edge, envd("sbx5"))) == "10.1.2.7:49983"


async def test_the_edge_does_not_start_without_the_proof_key(
    tmp_path: Path, api: FakeApi, kubeconfig: Path, identity_dir: Path
) -> None:
    seed_keys(api)
    state = tmp_path / "state"
    shutil.copytree(identity_dir, state / "identity")
    edge = Edge(edge_settings(state, kubeconfig, "127.0.0.1:1"))
    try:
        with pytest.raises(ValueError, match=r"e2b-object-proof-key .*lifecycle service"):
            await edge.start()
    finally:
        await edge.stop(0)


async def test_an_unknown_id_waits_once_then_is_remembered(edge: Edge) -> None:
    first = await asyncio.gather(*(check(edge, envd("nosuch")) for _ in range(5)))
    assert {denial(r)[0] for r in first} == {502}
    started = time.perf_counter()
    assert denial(await check(edge, envd("nosuch")))[0] == 502
    assert time.perf_counter() - started < MISS_WAIT_S


# --- the API server goes away --------------------------------------------------------------


def scrape(edge: Edge) -> str:
    url = f"http://127.0.0.1:{edge.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


async def health(edge: Edge, service: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        return int(reply.status)


async def test_with_the_api_down_the_cache_keeps_serving_and_says_so(
    edge: Edge, api: FakeApi
) -> None:
    api.put("sandboxes", sandbox("sbx6"))
    await until(edge, "pods", api.put("pods", pod("sbx6", "10.1.2.8")))
    serving = health_pb2.HealthCheckResponse.SERVING
    async with asyncio.timeout(WAIT_S):
        while await health(edge, KUBERNETES_SERVICE) != serving:
            await asyncio.sleep(0.01)
    assert 'agentcube_e2b_edge_informer_connected{informer="pods"} 1.0' in await asyncio.to_thread(
        scrape, edge
    )

    await api.stop()
    async with asyncio.timeout(WAIT_S):
        for informer in edge.informers:
            await informer.wait_for(lambda i: not i.status.connected)
        while await health(edge, KUBERNETES_SERVICE) == serving:
            await asyncio.sleep(0.01)

    # Fail static: the Envoy-facing services stay SERVING and decide from the caches.
    assert await health(edge, "") == serving
    assert await health(edge, "envoy.service.auth.v3.Authorization") == serving
    assert tenant(await check(edge, check_request("platform", headers={"x-api-key": KEY_A})))
    assert tenant(await check(edge, envd("sbx6"))) == SBX_NS
    # An id the cache does not know cannot be waited for: 503, not a false "not found".
    status, _ = denial(await check(edge, envd("unseen")))
    assert status == 503

    metrics = await asyncio.to_thread(scrape, edge)
    for name in ("secret/e2b-api-keys", "configmap/e2b-api-key-config", "sandboxes", "pods"):
        assert f'agentcube_e2b_edge_informer_connected{{informer="{name}"}} 0.0' in metrics
        assert f'agentcube_e2b_edge_informer_last_sync_timestamp_seconds{{informer="{name}"}}' in (
            metrics
        )
        assert f'agentcube_e2b_edge_informer_relists_total{{informer="{name}"}} 0.0' in metrics
        assert 'agentcube_e2b_edge_informer_last_error_info{error="' in metrics

    await api.start()  # same port: the informers resume and health says so
    async with asyncio.timeout(WAIT_S):
        while await health(edge, KUBERNETES_SERVICE) != serving:
            await asyncio.sleep(0.01)
