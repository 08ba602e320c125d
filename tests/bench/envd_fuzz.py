"""The envd fuzz of tests/picod/test_fuzz.py, repeated for `--seconds` with any `--seed`.

Run: .venv/bin/python tests/bench/envd_fuzz.py [--seconds 60] [--seed 1]
Starts one picod with an access token, runs the test's batches in rounds (each round draws
new random inputs from the one seeded generator) until the time is up, then prints the
requests sent, every distinct (status, kind) answer, picod's RSS, and every finding (a 5xx,
a Connect `internal`, a traceback in picod's log, or picod not answering /health).
Exits 1 on any finding.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parents[1] / "picod"), str(Path(__file__).parents[1])]

from test_fuzz import TOKEN, Tally, Target, batches, fuzz_health, rss_mib  # noqa: E402

from conftest import launch_picod  # noqa: E402 - needs the path above
from support.processes import free_port  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=20261201)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        picod = launch_picod(Path(tmp), free_port(), access_token=TOKEN)
        try:
            tally = Tally(args.seed)
            target = Target(picod.port, tally)
            rng = random.Random(args.seed)
            start_rss = rss_mib(picod.proc.pid)
            deadline = time.monotonic() + args.seconds
            rounds = 0
            health_ms: list[float] = []
            while time.monotonic() < deadline and picod.proc.poll() is None:
                for _name, run in batches(target, rng):
                    run()
                    if picod.proc.poll() is not None:
                        break
                    health_ms.append(fuzz_health(target) * 1000)
                rounds += 1
            alive = picod.proc.poll() is None
            print(tally.report())
            print(
                f"rounds {rounds}; requests {sum(tally.sent.values())}; picod alive: {alive}; "
                f"RSS {start_rss:.1f} -> {rss_mib(picod.proc.pid) if alive else 0:.1f} MiB; "
                f"/health after batches max {max(health_ms, default=0):.0f} ms"
            )
            tracebacks = picod.stderr().count("Traceback")
            print(f"findings: {len(tally.findings)}; tracebacks in picod's log: {tracebacks}")
            for finding in tally.findings[:20]:
                print("  " + finding)
            return 0 if alive and not tally.findings and not tracebacks else 1
        finally:
            picod.stop()


if __name__ == "__main__":
    sys.exit(main())
