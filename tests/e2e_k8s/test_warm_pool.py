"""Creates served from AgentCube's warm pool, through the SDK: a claim that adopts the pool's
ready sandbox, and claims that find the pool empty, where agent-sandbox makes a Sandbox named
after the claim and names it in the claim before its pod exists."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from e2b import Sandbox
from kubernetes.client import ApiClient

from e2e_k8s.conftest import POOLED, TENANT, Gateway, wait_until
from e2e_k8s.objects_api import CLAIMS, SANDBOXES, bound_sandbox, get_object

CREATES = 4  # against a pool of one: the first adopts, the ones racing it find it empty
WAIT_S = 15.0


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_warm_creates_adopt_a_ready_pod_or_wait_for_one(gateway: Gateway, kube: ApiClient) -> None:
    with ThreadPoolExecutor(CREATES) as pool:
        sandboxes = list(pool.map(lambda _: Sandbox.create(POOLED, timeout=120), range(CREATES)))
    try:
        bound = {sbx.sandbox_id: bound_sandbox(kube, TENANT, sbx.sandbox_id) for sbx in sandboxes}
        named_after_claim = [i for i, name in bound.items() if name == f"e2b-{i}"]
        adopted = [i for i, name in bound.items() if name.startswith(f"{POOLED}-")]
        assert adopted, bound  # a pool sandbox (created before any claim) was adopted
        assert named_after_claim, bound  # the empty-pool path: a Sandbox made for the claim
        for sbx in sandboxes:
            result = sbx.commands.run("echo $((6 * 7))")
            assert (result.exit_code, result.stdout) == (0, "42\n")
        first = sandboxes[0]
        first.set_timeout(200)
        info = Sandbox.get_info(first.sandbox_id)
        claim = get_object(kube, CLAIMS, TENANT, f"e2b-{first.sandbox_id}")
        assert claim is not None
        lifecycle = claim["spec"]["lifecycle"]
        # A claim bound to a warm sandbox expires through its own lifecycle (v0.4.6).
        assert abs(_time(lifecycle["shutdownTime"]) - info.end_at.timestamp()) < 1.0
        assert lifecycle["shutdownPolicy"] == "Delete"
    finally:
        for sbx in sandboxes:
            sbx.kill()
    for sandbox_id, name in bound.items():
        wait_until(lambda name=name: get_object(kube, SANDBOXES, TENANT, name) is None, WAIT_S)
        assert get_object(kube, CLAIMS, TENANT, f"e2b-{sandbox_id}") is None
