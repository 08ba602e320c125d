"""Create latency through the SDK in Kubernetes mode, against the fake cluster.

The fake cluster (tests/e2e_k8s/cluster.py: strict API, agent-sandbox and AgentCube
controllers, a kubelet running a real picod per pod) and the whole gateway (lifecycle with
`--backend kubernetes`, the edge on the cluster's informers, Envoy) are started as the
tests/e2e_k8s tests start them. Then `Sandbox.create` is timed, one at a time:
- warm: a CodeInterpreter with a warm pool big enough that every create adopts a ready pod
  (claim, adoption, our patch, picod bound with /init, /health);
- cold: a CodeInterpreter without a pool (Secret, Sandbox, the pod started, /health).
Issue 11 target: warm p50 <= 100 ms over the controller's own delay (the fake controllers
wait `--controller-delay` before each reconcile; a warm create waits for one reconcile of the
claim). Prints the numbers and one summary line.

    .venv/bin/python tests/bench/k8s_create_bench.py [N] [--release 0.4.6|0.5.6]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

from _measure import pct

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from e2e_k8s.conftest import (
    CODE_INTERPRETER,
    TENANT,
    agentcube_identity,
    code_interpreter,
    running_gateway,
    start_cluster,
    stop_cluster,
)
from support.gateway import sdk_environment

CONTROLLER_DELAY_S = 0.05  # cluster.py's default


def timed_creates(template: str, n: int, pause_s: float) -> list[float]:
    from e2b import Sandbox

    took = []
    for i in range(n):
        started = time.perf_counter()
        sbx = Sandbox.create(template, timeout=60)
        took.append(time.perf_counter() - started)
        sbx.kill()
        print(f"  {template} create {i + 1}/{n}: {took[-1] * 1000:.0f} ms", flush=True)
        time.sleep(pause_s)  # let the pool refill, so the next create finds a ready pod
    return took


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", nargs="?", type=int, default=10)
    parser.add_argument("--release", default="0.4.6", choices=["0.4.6", "0.5.6"])
    args = parser.parse_args()
    pooled = code_interpreter("bench-warm", warmPoolSize=4)
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        print(f"starting the fake cluster (agent-sandbox {args.release}) and the gateway...")
        cluster = start_cluster(
            directory / "cluster",
            [
                {"plural": "secrets", "object": agentcube_identity()},
                {"plural": "codeinterpreters", "object": CODE_INTERPRETER},
                {"plural": "codeinterpreters", "object": pooled},
            ],
            args.release,
        )
        try:
            (directory / "gateway").mkdir()
            with running_gateway(cluster, directory / "gateway", (TENANT,)) as (at, keys, _):
                env = {
                    "E2B_API_URL": f"http://{at['listen']}",
                    "E2B_SANDBOX_URL": f"http://{at['listen']}",
                    "E2B_DOMAIN": "e2b.localhost",
                    "E2B_API_KEY": keys[TENANT],
                }
                with sdk_environment(env):
                    time.sleep(3.0)  # the pool's pods start
                    warm = timed_creates("bench-warm", args.n, pause_s=1.5)
                    cold = timed_creates(CODE_INTERPRETER["metadata"]["name"], args.n, 0.0)
            print("the lifecycle's own account of each create:")
            for line in (directory / "gateway" / "lifecycle.log").read_text().splitlines():
                if "created sandbox" in line:
                    print("  " + line[line.index("created sandbox") :])
        finally:
            with contextlib.suppress(AssertionError):
                stop_cluster(cluster)
    for name, took in (("warm", warm), ("cold", cold)):
        print(f"{name}: p50 {pct(took, 0.5) * 1000:.0f} ms, p90 {pct(took, 0.9) * 1000:.0f} ms, "
              f"max {max(took) * 1000:.0f} ms over {len(took)} creates")  # fmt: skip
    over = pct(warm, 0.5) - CONTROLLER_DELAY_S
    print(f"summary: warm create p50 {pct(warm, 0.5) * 1000:.0f} ms = {over * 1000:.0f} ms over "
          f"the controller's {CONTROLLER_DELAY_S * 1000:.0f} ms delay (target <= 100 ms); "
          f"cold p50 {pct(cold, 0.5) * 1000:.0f} ms (agent-sandbox {args.release})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
