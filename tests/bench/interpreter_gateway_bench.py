"""Code-interpreter benchmarks through the whole gateway; print numbers, assert nothing:

    .venv/bin/python tests/bench/interpreter_gateway_bench.py

Starts `agentcube-e2b up` on free ports with a temporary state directory and a larger
code-interpreter-v1 warm pool (`up` has no pool flag; the lifecycle child inherits
AGENTCUBE_E2B_LIFECYCLE_INTERPRETER_POOL_SIZE from this process), then measures with the real
`e2b_code_interpreter` SDK:
1. `run_code("1+1")` p50/p90/p99 on a warm kernel (target p50 <= 12 ms; the sandbox's own
   address is inside its network namespace, so there is no direct comparison from here:
   tests/bench/interpreter_bench.py measures the server alone);
2. what a chart costs (target <= 30 ms over the same figure without extraction): one small
   line chart displayed per `run_code`, with the chart formatter on and off in turn (it is
   switched in the kernel between calls), and the extraction alone timed inside the kernel;
3. the idle sandbox's memory: PSS summed over every process in its network namespace (init,
   picod, the interpreter, the kernel) after the kernel answered, before and after a cell
   that imports numpy, pandas and matplotlib.pyplot (target with the data stack loaded:
   <= 150 MiB);
4. `Sandbox.create()` of code-interpreter-v1 from the warm pool (target p50 <= 100 ms): bursts
   of at most the pool size, then a pause for the pool to refill in the background. A create
   that found the pool empty is a cold start (seconds); those are counted and left out.
Envoy, the edge, the lifecycle, picod, the kernel and this client share the machine's cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from _measure import exported, free_port, start_up

POOL_ENV = "AGENTCUBE_E2B_LIFECYCLE_INTERPRETER_POOL_SIZE"
COLD_MS = 1000.0  # slower than this: the pool was empty, a sandbox was started on demand


FIGURE = (
    "fig, ax = plt.subplots(); ax.plot(range(50), [i * i for i in range(50)], label='sq'); "
    "ax.set_title('squares'); ax.set_xlabel('n'); display(fig); plt.close(fig)"
)
CHART_SWITCH = (
    "get_ipython().display_formatter.formatters["
    "'application/vnd.agentcube-e2b.chart+json'].enabled = {on}"
)
EXTRACTION_ALONE = """
import time, agentcube_e2b_charts
fig, ax = plt.subplots(); ax.plot(range(50), [i * i for i in range(50)]); fig.canvas.draw()
start = time.perf_counter()
for _ in range(50):
    agentcube_e2b_charts.figure_chart(fig)
plt.close(fig)
print((time.perf_counter() - start) / 50 * 1000)
"""


def sandbox_pss_mib(state: Path, sandbox_id: str) -> tuple[float, int]:
    """(PSS in MiB, process count) of the processes in the sandbox's network namespace."""
    from extproc.lifecycle.networking import NETNS_DIR, sandbox_netns_name

    netns = NETNS_DIR / sandbox_netns_name(state / "lifecycle", sandbox_id)
    inode = netns.stat().st_ino
    pss = count = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "ns" / "net").stat().st_ino != inode:
                continue
            rollup = (proc / "smaps_rollup").read_text()
        except OSError:
            continue
        count += 1
        for line in rollup.splitlines():
            if line.startswith("Pss:"):
                pss += int(line.split()[1])
    return pss / 1024, count


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
    parser.add_argument("--charts", type=int, default=40, help="timed chart cells, each way")
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
            for _ in range(20):
                assert sbx.run_code("1+1").text == "2"
            runs = []
            for _ in range(args.runs):
                start = time.perf_counter()
                execution = sbx.run_code("1+1")
                runs.append((time.perf_counter() - start) * 1000)
                assert execution.text == "2"
            print(
                f"run_code('1+1') x{args.runs} via gateway: {percentiles(runs)} "
                "(target p50 <= 12 ms)"
            )

            # 3 (first: an idle kernel that has run nothing but 1+1). Memory of the sandbox.
            time.sleep(3)
            idle, processes = sandbox_pss_mib(state, sbx.sandbox_id)
            loaded = sbx.run_code("import numpy, pandas, matplotlib.pyplot as plt")
            assert loaded.error is None, loaded.error
            time.sleep(3)
            used, _ = sandbox_pss_mib(state, sbx.sandbox_id)
            print(
                f"sandbox PSS ({processes} processes): idle {idle:.1f} MiB; with numpy, "
                f"pandas and pyplot imported {used:.1f} MiB (target <= 150 MiB)"
            )

            # 2. a chart's cost
            sbx.run_code("from IPython.display import display")
            with_chart, without_chart = [], []
            for _ in range(args.charts):
                for on, samples in ((True, with_chart), (False, without_chart)):
                    sbx.run_code(CHART_SWITCH.format(on=on))
                    start = time.perf_counter()
                    shown = sbx.run_code(FIGURE)
                    samples.append((time.perf_counter() - start) * 1000)
                    assert (shown.results[0].chart is not None) == on
            alone = float(sbx.run_code(EXTRACTION_ALONE).logs.stdout[0])
            overhead = statistics.median(with_chart) - statistics.median(without_chart)
            print(
                f"line chart x{args.charts}: with extraction {percentiles(with_chart)}; "
                f"without {percentiles(without_chart)}; p50 difference {overhead:.1f} ms, "
                f"extraction alone in the kernel {alone:.2f} ms (target <= 30 ms)"
            )
            sbx.kill()

            # 4. create from the warm pool, in bursts no bigger than the pool
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
