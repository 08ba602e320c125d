"""CPU cost of the platform API's per-key rate limit (target: <= 5 us per request).

Run: .venv/bin/python tests/bench/quota_bench.py
Times `PlatformApi._rate_limited` (hash the key, look up the namespace's quota, take a token)
in process CPU time over many requests from a few keys, never over the limit, plus the bare
token bucket for comparison. Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import asyncio
import json
import time

import grpc

from extproc.core.quotas import RateLimiter, parse_quotas
from extproc.edge.platform import PlatformApi, PlatformRequest

N = 200_000
KEYS = ["e2b_" + f"{i:040x}" for i in range(16)]


async def main() -> None:
    table = parse_quotas(json.dumps({"team-a": {"requestsPerSecond": 10**9}}))
    requests = [
        PlatformRequest("GET", "/v2/sandboxes", {"x-api-key": k}, b"", "team-a") for k in KEYS
    ]
    async with grpc.aio.insecure_channel("127.0.0.1:1") as channel:
        api = PlatformApi(channel, "e2b.test", quotas=lambda: table)
        check = api._rate_limited
        for r in requests:
            check(r)
        start = time.process_time()
        for i in range(N):
            if check(requests[i & 15]) is not None:
                raise SystemExit("rate limited during the benchmark")
        limited = (time.process_time() - start) / N
    limiter = RateLimiter()
    start = time.process_time()
    for i in range(N):
        limiter.allow(KEYS[i & 15], 1e9, 1e9, float(i))
    bucket = (time.process_time() - start) / N
    print(f"rate limit per platform request: {limited * 1e6:.2f} us CPU (target <= 5 us)")
    print(f"  of which the token bucket:     {bucket * 1e6:.2f} us CPU")


if __name__ == "__main__":
    asyncio.run(main())
