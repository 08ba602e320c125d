"""Code-interpreter benchmarks through the whole gateway; print numbers, assert nothing:

    .venv/bin/python tests/bench/interpreter_gateway_bench.py

Starts `agentcube-e2b up` on free ports with a temporary state directory and a larger
code-interpreter-v1 warm pool (`up` has no pool flag; the lifecycle child inherits
AGENTCUBE_E2B_LIFECYCLE_INTERPRETER_POOL_SIZE from this process), then measures with the real
`e2b_code_interpreter` SDK:
1. `run_code("1+1")` p50/p90/p99 on a warm kernel (target p50 <= 15 ms), and the same calls
   straight to the sandbox's interpreter (raw httpx, access token only) interleaved with them,
   so the gateway's share is measured under the same machine load;
2. `Sandbox.create()` of code-interpreter-v1 from the warm pool (target p50 <= 100 ms): bursts
   of at most the pool size, then a pause for the pool to refill in the background. A create
   that found the pool empty is a cold start (seconds); those are counted and left out.
Envoy, the edge, the lifecycle, picod, the kernel and this client share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import grpc
import httpx
from _measure import exported, free_port, lifecycle_metadata, lifecycle_target, start_up

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2, lifecycle_pb2_grpc

POOL_ENV = "AGENTCUBE_E2B_LIFECYCLE_INTERPRETER_POOL_SIZE"
COLD_MS = 1000.0  # slower than this: the pool was empty, a sandbox was started on demand


async def endpoint_host(state: Path, sandbox_id: str) -> str:
    """Asked of `up`'s lifecycle service with its caller token, across tenants."""
    async with grpc.aio.insecure_channel(lifecycle_target(state)) as channel:
        stub = lifecycle_pb2_grpc.SandboxServiceStub(channel)
        reply = await stub.GetSandbox(
            lifecycle_pb2.GetSandboxRequest(sandbox_id=sandbox_id),
            metadata=lifecycle_metadata(state, all_tenants=True),
        )
    host: str = reply.sandbox.endpoint_host
    return host


def raw_execute(client: httpx.Client, url: str, token: str) -> None:
    reply = client.post(url, json={"code": "1+1"}, headers={"x-access-token": token})
    assert reply.status_code == 200 and '"2"' in reply.text, reply.text


def percentiles(samples: list[float]) -> str:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return (
        f"p50 {statistics.median(samples):.1f} ms, p90 {cuts[89]:.1f} ms, "
        f"p99 {cuts[98]:.1f} ms, max {max(samples):.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="timed run_code calls")
    parser.add_argument("--pool-size", type=int, default=5, help="code-interpreter-v1 pool")
    parser.add_argument("--creates", type=int, default=20, help="timed Sandbox.create calls")
    parser.add_argument(
        "--refill-wait", type=float, default=12.0, help="seconds between bursts of creates"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "up.log"
        state = Path(tmp) / "state"
        process, printed = start_up(
            state, log, env={**os.environ, POOL_ENV: str(args.pool_size)}, listen=free_port()
        )
        env = exported(printed)
        os.environ.update(env)
        os.environ.pop("E2B_DEBUG", None)
        from e2b_code_interpreter import Sandbox  # after E2B_* are set

        try:
            # The pool fills in parallel after `ready`; wait once before anything is timed.
            time.sleep(args.refill_wait)

            # 1. run_code("1+1") on a warm kernel
            sbx = Sandbox.create(timeout=600)
            host = asyncio.run(endpoint_host(state, sbx.sandbox_id))
            url = f"http://{host}:49999/execute"
            token = sbx._envd_access_token or ""
            raw = httpx.Client()
            for _ in range(20):
                assert sbx.run_code("1+1").text == "2"
                raw_execute(raw, url, token)
            runs, direct = [], []
            for _ in range(args.runs):
                start = time.perf_counter()
                execution = sbx.run_code("1+1")
                runs.append((time.perf_counter() - start) * 1000)
                assert execution.text == "2"
                start = time.perf_counter()
                raw_execute(raw, url, token)
                direct.append((time.perf_counter() - start) * 1000)
            raw.close()
            print(
                f"run_code('1+1') x{args.runs} via gateway: {percentiles(runs)} "
                "(target p50 <= 15 ms)"
            )
            print(f"raw POST /execute straight to the interpreter: {percentiles(direct)}")
            sbx.kill()

            # 2. create from the warm pool, in bursts no bigger than the pool
            time.sleep(args.refill_wait)
            warm: list[float] = []
            cold: list[float] = []
            done = 0
            while done < args.creates:
                burst = min(args.pool_size, args.creates - done)
                created = []
                for _ in range(burst):
                    start = time.perf_counter()
                    created.append(Sandbox.create(timeout=60))
                    took = (time.perf_counter() - start) * 1000
                    (cold if took > COLD_MS else warm).append(took)
                for one in created:
                    one.kill()
                done += burst
                if done < args.creates:
                    time.sleep(args.refill_wait)
            summary = f"p50 {statistics.median(warm):.1f} ms, max {max(warm):.1f} ms"
            print(
                f"Sandbox.create() code-interpreter-v1, pool {args.pool_size}: "
                f"{len(warm)} warm {summary} (target p50 <= 100 ms); "
                f"{len(cold)} cold" + (f" {statistics.median(cold):.0f} ms" if cold else "")
            )
        finally:
            process.terminate()
            process.wait(timeout=60)


if __name__ == "__main__":
    main()
