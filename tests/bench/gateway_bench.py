"""Gateway benchmarks; print numbers, assert nothing: .venv/bin/python tests/bench/gateway_bench.py

Starts `agentcube-e2b up` on a free port with a temporary state directory (`--edge-processes`
and `--envoy-concurrency` are passed through; `up`'s defaults otherwise), then measures:
1. small sandbox requests (picod GET /health) through the full gateway vs the same Envoy config
   with ext_authz disabled on a route to the same picod (h2load; target ratio >= 0.5);
2. a 256 MiB /files download through the gateway vs straight to picod (target ratio >= 0.8);
3. SDK `commands.run("true")` p50 through the gateway (target <= 8 ms);
4. `Sandbox.create()` p50 with a warm pool (target <= 60 ms).
Envoy, the edge, picod and the load generator share this machine's cores: compare ratios.
`--rounds N` repeats 1 and 2 back to back, each round measuring both sides, and prints the load
average before each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import grpc
import httpx
from _measure import (
    envoy_argv,
    exported,
    free_port,
    lifecycle_metadata,
    lifecycle_target,
    run_dir,
    start_up,
)

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2, lifecycle_pb2_grpc
from extproc.envoy_config.bootstrap import bootstrap
from extproc.envoy_config.clusters import socket_address
from extproc.envoy_config.settings import EnvoySettings, HostPort, UnixSocket
from extproc.lifecycle.networking import enter_netns, hub_netns_path
from extproc.up import admin_client


def baseline_config(settings: EnvoySettings, picod: HostPort, domain: str) -> str:
    """The gateway's own bootstrap plus one vhost, `baseline.<domain>`, that goes straight to
    picod with ext_authz and ext_proc disabled: same listener, filters and upstream options."""
    import yaml
    from betterproto2 import Casing
    from envoy_data_plane.envoy.config.cluster.v3 import Cluster, ClusterDiscoveryType
    from envoy_data_plane.envoy.config.endpoint.v3 import (
        ClusterLoadAssignment,
        Endpoint,
        LbEndpoint,
        LocalityLbEndpoints,
    )
    from envoy_data_plane.envoy.config.route.v3 import (
        Route,
        RouteAction,
        RouteMatch,
        VirtualHost,
    )
    from envoy_data_plane.envoy.extensions.filters.http.ext_authz.v3 import ExtAuthzPerRoute
    from envoy_data_plane.envoy.extensions.filters.http.ext_proc.v3 import ExtProcPerRoute
    from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
        HttpConnectionManager,
    )
    from envoy_data_plane.google.protobuf import Any

    document = bootstrap(settings)
    assert document.static_resources is not None
    sandbox = document.static_resources.clusters[1]
    direct = Cluster(
        name="baseline",
        type=ClusterDiscoveryType.STATIC,
        connect_timeout=timedelta(seconds=2),
        load_assignment=ClusterLoadAssignment(
            cluster_name="baseline",
            endpoints=[
                LocalityLbEndpoints(
                    lb_endpoints=[LbEndpoint(endpoint=Endpoint(address=socket_address(picod)))]
                )
            ],
        ),
        typed_extension_protocol_options=sandbox.typed_extension_protocol_options,
        circuit_breakers=sandbox.circuit_breakers,
        # Sandboxes are reachable from the lifecycle service's hub namespace only.
        upstream_bind_config=sandbox.upstream_bind_config,
    )
    document.static_resources.clusters.append(direct)
    listener = document.static_resources.listeners[0]
    packed = listener.filter_chains[0].filters[0].typed_config
    assert packed is not None
    hcm = HttpConnectionManager.parse(packed.value)
    assert hcm.route_config is not None
    hcm.route_config.virtual_hosts.insert(
        0,
        VirtualHost(
            name="baseline",
            domains=[f"baseline.{domain}"],
            routes=[
                Route(
                    match=RouteMatch(prefix="/"),
                    route=RouteAction(cluster="baseline", timeout=timedelta(0)),
                    typed_per_filter_config={
                        "envoy.filters.http.ext_authz": Any.pack(ExtAuthzPerRoute(disabled=True)),
                        "envoy.filters.http.ext_proc": Any.pack(ExtProcPerRoute(disabled=True)),
                    },
                )
            ],
        ),
    )
    hcm.access_log = []  # neither side logs during the load test
    listener.filter_chains[0].filters[0].typed_config = Any.pack(hcm)
    return yaml.safe_dump(document.to_dict(casing=Casing.SNAKE), sort_keys=False)


def h2load(url: str, authority: str, token: str, requests: int) -> float:
    out = subprocess.run(
        [
            "h2load",
            "-n",
            str(requests),
            "-c",
            "8",
            "-m",
            "16",
            "-H",
            f":authority: {authority}",
            "-H",
            f"x-access-token: {token}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    status = re.search(r"status codes: (\d+) 2xx", out)
    if match is None or status is None or int(status.group(1)) != requests:
        raise SystemExit(f"h2load did not succeed:\n{out}")
    return float(match.group(1))


def download_mib_s(url: str, headers: dict[str, str]) -> float:
    best = 0.0
    with httpx.Client(timeout=120) as client:
        for _ in range(3):
            start = time.perf_counter()
            size = 0
            with client.stream("GET", url, headers=headers) as response:
                response.raise_for_status()
                for chunk in response.iter_raw(1 << 20):
                    size += len(chunk)
            best = max(best, size / (1 << 20) / (time.perf_counter() - start))
    return best


def picod_jwt(private_pem: Path, sandbox_id: str) -> str:
    """What the edge would send picod (docs/contracts: Edge <-> picod)."""
    import jwt

    now = int(time.time())
    claims = {"iss": "agentcube-router", "iat": now, "exp": now + 300, "session_id": sandbox_id}
    return "Bearer " + jwt.encode(claims, private_pem.read_bytes(), algorithm="RS256")


async def picod_address(state: Path, sandbox_id: str) -> HostPort:
    """Asked of `up`'s lifecycle service with its caller token, across tenants."""
    async with grpc.aio.insecure_channel(lifecycle_target(state)) as channel:
        stub = lifecycle_pb2_grpc.SandboxServiceStub(channel)
        reply = await stub.GetSandbox(
            lifecycle_pb2.GetSandboxRequest(sandbox_id=sandbox_id),
            metadata=lifecycle_metadata(state, all_tenants=True),
        )
    return HostPort(reply.sandbox.endpoint_host, 49983)


async def wait_admin_ready(settings: EnvoySettings) -> None:
    async with admin_client(settings.admin) as client:
        for _ in range(200):
            try:
                if (await client.get("/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=1, help="repeat 1 and 2 this many times")
    parser.add_argument("--edge-processes", type=int, help="`up --edge-processes`")
    parser.add_argument("--envoy-concurrency", type=int, help="`up --envoy-concurrency`")
    parser.add_argument(
        "--only", choices=("throughput", "all"), default="all", help="throughput: 1 and 2 only"
    )
    args = parser.parse_args()
    up_env = dict(os.environ)
    if args.edge_processes is not None:
        up_env["AGENTCUBE_E2B_UP_EDGE_PROCESSES"] = str(args.edge_processes)
    if args.envoy_concurrency is not None:
        up_env["AGENTCUBE_E2B_UP_ENVOY_CONCURRENCY"] = str(args.envoy_concurrency)
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        process, printed = start_up(state, Path(tmp) / "up.log", env=up_env, listen=free_port())
        env = exported(printed)
        os.environ.update(env)
        from e2b import Sandbox

        baseline_envoy = None
        try:
            sbx = Sandbox.create(timeout=600)
            token = sbx._envd_access_token or ""
            domain = env["E2B_DOMAIN"]
            picod = asyncio.run(picod_address(state, sbx.sandbox_id))
            edges = sorted(run_dir(state).glob("edge*.sock"))
            settings = EnvoySettings(
                listen=HostPort("127.0.0.1", free_port()),
                admin=UnixSocket(Path(tmp) / "baseline-admin.sock"),
                domain=domain,
                edges=tuple(UnixSocket(path) for path in edges),
                sandbox_netns=hub_netns_path(state / "lifecycle"),
            )
            config = Path(tmp) / "baseline.yaml"
            config.write_text(baseline_config(settings, picod, domain))
            baseline_envoy = subprocess.Popen(
                envoy_argv(config, concurrency=2, log_level="error"), stdout=subprocess.DEVNULL
            )
            asyncio.run(wait_admin_ready(settings))
            hub = hub_netns_path(state / "lifecycle")
            in_hub = ThreadPoolExecutor(1, initializer=enter_netns, initargs=(hub,))

            host = f"49983-{sbx.sandbox_id}.{domain}"
            gateway_url = f"{env['E2B_API_URL']}/health"
            base_url = f"http://{settings.listen}/health"
            sbx.commands.run("head -c 268435456 /dev/zero > big.bin", timeout=120)
            path = "/files?path=big.bin"
            jwt = picod_jwt(Path(tmp) / "state" / "identity" / "private.pem", sbx.sandbox_id)
            h2load(gateway_url, host, token, 2000)  # warm-up
            h2load(base_url, f"baseline.{domain}", token, 2000)
            for _ in range(args.rounds):
                print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
                # 1. small requests
                through = h2load(gateway_url, host, token, args.requests)
                direct = h2load(base_url, f"baseline.{domain}", token, args.requests)
                print(
                    f"small requests: gateway {through:,.0f} req/s, ext_authz disabled "
                    f"{direct:,.0f} req/s, ratio {through / direct:.2f} (target >= 0.5)",
                    flush=True,
                )

                # 2. 256 MiB download
                via = download_mib_s(
                    f"{env['E2B_API_URL']}{path}", {"host": host, "x-access-token": token}
                )
                straight = in_hub.submit(
                    download_mib_s,
                    f"http://{picod}{path}",
                    {"x-access-token": token, "authorization": jwt},
                ).result()
                print(
                    f"256 MiB download: gateway {via:,.0f} MiB/s, straight to picod "
                    f"{straight:,.0f} MiB/s, ratio {via / straight:.2f} (target >= 0.8)",
                    flush=True,
                )
            if args.only == "throughput":
                return

            # 3. commands.run("true")
            for _ in range(10):
                sbx.commands.run("true")
            runs = []
            for _ in range(100):
                start = time.perf_counter()
                sbx.commands.run("true")
                runs.append((time.perf_counter() - start) * 1000)
            print(
                f"commands.run('true'): p50 {statistics.median(runs):.1f} ms, "
                f"p90 {statistics.quantiles(runs, n=10)[-1]:.1f} ms (target p50 <= 8 ms)"
            )

            # 4. create with a warm pool
            creates = []
            for _ in range(20):
                time.sleep(1.5)  # let the pool refill: this measures the warm path
                start = time.perf_counter()
                created = Sandbox.create(timeout=60)
                creates.append((time.perf_counter() - start) * 1000)
                created.kill()
            print(
                f"Sandbox.create() warm pool: p50 {statistics.median(creates):.1f} ms, "
                f"max {max(creates):.1f} ms (target p50 <= 60 ms)"
            )
            sbx.kill()
        finally:
            if baseline_envoy is not None:
                baseline_envoy.terminate()
                baseline_envoy.wait()
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
