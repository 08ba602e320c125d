"""The Kubernetes routing directory at 10 000 sandboxes: sync time, lookup p99 and memory.

A child process serves 10 000 agent-sandbox `Sandbox` CRs and their 10 000 Pods through kmock
(the tests' FakeApi). This process runs two informers over the official client (cluster-wide,
by label, pages of 500, a transform that keeps only what routing reads) and joins them into
the edge's `Directory` of `Route`s by handler events. It prints: the time to the first sync
of both, the lookup latency of `Directory.get` (each call timed alone with perf_counter_ns,
which adds its own ~30-60 ns), and memory (tracemalloc of this process's Python heap after
sync, over a baseline taken after imports and client setup; plus the directory alone).
Issue 5 targets: lookup p99 <= 5 us, memory <= 50 MiB.

The Sandbox and Pod label names here are this benchmark's own: the kubernetes lifecycle
backend has not fixed them yet.

    .venv/bin/python tests/bench/k8s_directory_bench.py [N] [--rss-only]
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import random
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from kubernetes.client import ApiClient, Configuration, CoreV1Api, CustomObjectsApi  # noqa: E402

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb  # noqa: E402
from extproc.edge.sandbox_directory import Directory, Route  # noqa: E402
from extproc.k8s.informing import Informer  # noqa: E402
from extproc.k8s.listwatch import KubeObject, WatchTarget  # noqa: E402
from extproc.k8s.settings import InformerSettings  # noqa: E402

GROUP, VERSION = "agents.x-k8s.io", "v1alpha1"
MANAGED = "app.kubernetes.io/managed-by=agentcube-e2b"
ID_LABEL = "e2b.agentcube.io/sandbox-id"
END_ANNOTATION = "e2b.agentcube.io/end-at"
SEED = b"bench-seed"


def sandbox_id(n: int) -> str:
    return f"i{n:07d}x{hashlib.sha256(str(n).encode()).hexdigest()[:12]}"


def objects(n: int) -> tuple[KubeObject, KubeObject]:
    """A Sandbox CR and its Pod, roughly as large as real ones (spec, env, managedFields)."""
    sid, tenant = sandbox_id(n), f"tenant-{n % 50}"
    labels = {ID_LABEL: sid, "app.kubernetes.io/managed-by": "agentcube-e2b", "e2b/tpl": "base"}
    container = {
        "name": "code-interpreter",
        "image": "ghcr.io/agentcube/e2b-sandbox:0.1.0",
        "env": [{"name": f"VAR_{i}", "value": "x" * 20} for i in range(8)],
        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
        "ports": [{"containerPort": 49983}, {"containerPort": 49999}],
    }
    managed = [{"manager": "kubelet", "operation": "Update", "fieldsV1": {"f:status": {}}}]
    sandbox = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Sandbox",
        "metadata": {
            "name": sid,
            "namespace": tenant,
            "labels": labels,
            "annotations": {END_ANNOTATION: "1900000000"},
            "uid": f"uid-{n}",
            "managedFields": managed,
        },
        "spec": {"podTemplate": {"spec": {"containers": [container]}}, "replicas": 1},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": sid, "namespace": tenant, "labels": labels, "managedFields": managed},
        "spec": {"containers": [container], "nodeName": "node-1"},
        "status": {
            "phase": "Running",
            "podIP": f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    return sandbox, pod


def keep(obj: KubeObject) -> KubeObject:
    """The informer transform: only what the join below reads."""
    metadata = obj["metadata"]
    kept: KubeObject = {
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata.get("namespace"),
            "resourceVersion": metadata.get("resourceVersion"),
            "labels": {ID_LABEL: (metadata.get("labels") or {}).get(ID_LABEL, "")},
            "annotations": {
                END_ANNOTATION: (metadata.get("annotations") or {}).get(END_ANNOTATION)
            },
        }
    }
    status = obj.get("status") or {}
    if "podIP" in status:
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or ()
        )
        kept["status"] = {"podIP": status["podIP"], "ready": ready}
    return kept


class DirectoryJoin:
    """Sandbox CRs and Pods -> Directory routes (the Pod gives the IP and readiness)."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.sandboxes: dict[str, KubeObject] = {}
        self.pods: dict[str, KubeObject] = {}

    def _route(self, sid: str) -> None:
        sandbox, pod = self.sandboxes.get(sid), self.pods.get(sid)
        if sandbox is None:
            self.directory.remove(sid)
            return
        status = (pod or {}).get("status") or {}
        ready = bool(status.get("ready"))
        end_at = sandbox["metadata"]["annotations"].get(END_ANNOTATION) or 0
        token = hmac.new(SEED, sid.encode(), hashlib.sha256).hexdigest()
        self.directory.put(
            Route(
                sandbox_id=sid,
                endpoint_host=status.get("podIP", "") if ready else "",
                tenant=sandbox["metadata"]["namespace"],
                state=pb.SANDBOX_STATE_RUNNING if ready else pb.SANDBOX_STATE_STARTING,
                envd_access_token=token,
                secure=True,
                end_at=float(end_at),
            )
        )

    def handler(self, into: dict[str, KubeObject]) -> Any:
        join = self

        class Handler:
            def on_add(self, obj: KubeObject) -> None:
                sid = obj["metadata"]["labels"][ID_LABEL]
                into[sid] = obj
                join._route(sid)

            def on_update(self, old: KubeObject, new: KubeObject) -> None:
                self.on_add(new)

            def on_delete(self, obj: KubeObject) -> None:
                sid = obj["metadata"]["labels"][ID_LABEL]
                into.pop(sid, None)
                join._route(sid)

        return Handler()


async def serve(n: int) -> None:
    import kmock

    from tests.support.kubeapi import FakeApi

    async with kmock.KubernetesScaffold() as handler:
        api = FakeApi(handler)
        api.install("pods")
        api.install("sandboxes", group=GROUP, version=VERSION)
        for i in range(n):
            sandbox, pod = objects(i)
            api.put("sandboxes", sandbox)
            api.put("pods", pod)
        api.history.clear()
        api.history.update({"pods": [], "sandboxes": []})
        await api.start()
        print(api.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await api.stop()


def rss_mib() -> float:
    """Current resident set size (not the peak)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


async def main(n: int, trace: bool) -> None:
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    port = int(child.stdout.readline())
    try:
        configuration = Configuration(host=f"http://127.0.0.1:{port}")
        client = ApiClient(configuration)
        core, custom = CoreV1Api(client), CustomObjectsApi(client)
        settings = InformerSettings()
        # Warm up: the client builds its pydantic validators and pools on first use.
        for call in (
            core.list_pod_for_all_namespaces,
            functools.partial(custom.list_cluster_custom_object, GROUP, VERSION, "sandboxes"),
        ):
            call(limit=1, _preload_content=False).release_conn()
        if trace:
            tracemalloc.start()
        base, _ = tracemalloc.get_traced_memory()
        rss_before = rss_mib()

        directory = Directory()
        join = DirectoryJoin(directory)
        sandboxes = Informer(
            WatchTarget(
                "sandboxes",
                functools.partial(custom.list_cluster_custom_object, GROUP, VERSION, "sandboxes"),
                label_selector=MANAGED,
                transform=keep,
            ),
            settings,
            [join.handler(join.sandboxes)],
        )
        pods = Informer(
            WatchTarget(
                "pods", core.list_pod_for_all_namespaces, label_selector=MANAGED, transform=keep
            ),
            settings,
            [join.handler(join.pods)],
        )
        started, cpu_started = time.perf_counter(), time.process_time()
        tasks = [asyncio.create_task(i.run()) for i in (sandboxes, pods)]
        await sandboxes.synced.wait()
        await pods.synced.wait()
        sync_s = time.perf_counter() - started
        sync_cpu_s = time.process_time() - cpu_started
        heap, peak = tracemalloc.get_traced_memory()

        # The directory alone: rebuild it from the stores under a fresh measurement.
        before, _ = tracemalloc.get_traced_memory()
        alone = Directory()
        DirectoryJoin.__init__(rebuilt := DirectoryJoin.__new__(DirectoryJoin), alone)
        rebuilt.sandboxes, rebuilt.pods = join.sandboxes, join.pods
        for sid in join.sandboxes:
            rebuilt._route(sid)
        directory_bytes = tracemalloc.get_traced_memory()[0] - before
        del alone, rebuilt
        tracemalloc.stop()

        assert len(directory) == n, len(directory)
        running = sum(1 for sid in join.sandboxes if (r := directory.get(sid)) and r.running)
        ids = list(join.sandboxes) * max(1, 200_000 // n)
        random.shuffle(ids)
        get, clock = directory.get, time.perf_counter_ns
        samples = []
        for sid in ids:
            t0 = clock()
            get(sid)
            samples.append(clock() - t0)
        empty = []
        for _ in range(len(ids) // 4):
            t0 = clock()
            empty.append(clock() - t0)
        samples.sort()
        empty.sort()
        t0 = time.perf_counter()
        for sid in ids:
            get(sid)
        mean_ns = (time.perf_counter() - t0) / len(ids) * 1e9

        def pct(values: list[int], q: float) -> int:
            return values[min(len(values) - 1, int(len(values) * q))]

        print(f"sandboxes: {n} (+{n} pods), routes: {len(directory)}, running: {running}")
        print(
            f"first sync of both informers (LIST, pages of {settings.page_size}): "
            f"{sync_s:.2f} s wall, {sync_cpu_s:.2f} s CPU in this process (the rest is the "
            "kmock server rendering 2 x 20 pages; tracemalloc also slows this process)"
        )
        print(
            f"Directory.get: p50 {pct(samples, 0.5)} ns, p99 {pct(samples, 0.99)} ns, "
            f"p99.9 {pct(samples, 0.999)} ns, max {samples[-1]} ns over {len(samples)} lookups "
            f"(timer alone: p50 {pct(empty, 0.5)} ns, p99 {pct(empty, 0.99)} ns); "
            f"untimed loop mean {mean_ns:.0f} ns"
        )
        if trace:
            print(
                f"memory (tracemalloc, both informer stores + join + directory): "
                f"{(heap - base) / 2**20:.1f} MiB (peak during sync "
                f"{(peak - base) / 2**20:.1f} MiB); directory alone "
                f"{directory_bytes / 2**20:.1f} MiB"
            )
        print(f"RSS {rss_mib():.0f} MiB (was {rss_before:.0f} MiB before the informers)")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        client.close()
    finally:
        child.stdin.close()
        child.wait(timeout=10)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        asyncio.run(serve(int(sys.argv[2])))
    else:
        # --rss-only: no tracemalloc (its own bookkeeping inflates RSS about twofold).
        args = [a for a in sys.argv[1:] if a != "--rss-only"]
        asyncio.run(main(int(args[0]) if args else 10_000, "--rss-only" not in sys.argv))
