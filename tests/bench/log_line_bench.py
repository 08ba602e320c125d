"""CPU microseconds per log line, by format, and per request context.

Each case logs N lines of the shape the edge writes per platform request (a message with
three arguments and two `extra=` fields) to /dev/null through the handler
`extproc.core.logs.setup_logging` installs, and divides time.process_time by N. The
baseline is the `logging.basicConfig` text format the processes used before. The context
rows are what a request pays to be followed: `begin_request` + `end_request`, and the ASGI
middleware picod and the interpreter run on every request.

    .venv/bin/python tests/bench/log_line_bench.py [N]
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

from extproc.core.logs import setup_logging
from extproc.core.request_context import AsgiRequestContext, begin_request, end_request

REQUEST_ID = "0c23fa93-0383-4e52-82ad-422e55cf1da0"


def per_line(log: logging.Logger, n: int) -> float:
    extra = {"operation": "create_v2", "status": 201}
    start = time.process_time()
    for _ in range(n):
        log.info("platform %s answered %d in %.1f ms", "create_v2", 201, 12.3, extra=extra)
    return (time.process_time() - start) / n * 1e6


def lines(n: int) -> None:
    log = logging.getLogger("extproc.edge.extproc")
    with open("/dev/null", "w") as sink:  # noqa: PTH123 (a stream for the handler)
        root = logging.getLogger()
        logging.basicConfig(
            stream=sink, format="%(asctime)s %(levelname)s %(name)s %(message)s", force=True
        )
        root.setLevel("INFO")
        cases = {"text, basicConfig (before)": lambda: per_line(log, n)}
        for log_format in ("text", "json"):

            def run(log_format: str = log_format, in_request: bool = False) -> float:
                setup_logging("edge", log_format, stream=sink)
                if not in_request:
                    return per_line(log, n)
                token = begin_request(REQUEST_ID, "default", "2m6571m5c3k8zg37adlp")
                try:
                    return per_line(log, n)
                finally:
                    end_request(token)

            cases[f"{log_format}, core/logs"] = run
            cases[f"{log_format}, core/logs, in a request"] = lambda f=log_format: run(f, True)
        for name, case in cases.items():
            case()  # warm
            print(f"  {name:<36} {case():6.2f} us/line")


def contexts(n: int) -> None:
    start = time.process_time()
    for _ in range(n):
        end_request(begin_request(REQUEST_ID, "default"))
    print(
        f"  {'begin_request + end_request':<36} {(time.process_time() - start) / n * 1e6:6.2f} us"
    )

    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    wrapped = AsgiRequestContext(app)
    headers = [(b"host", b"49983-x.e2b.localhost"), (b"content-type", b"application/json")] * 5
    scope = {"type": "http", "headers": [*headers, (b"x-request-id", REQUEST_ID.encode())]}

    async def drive(handler: Any) -> float:
        begin = time.process_time()
        for _ in range(n):
            await handler(scope, None, None)
        return (time.process_time() - begin) / n * 1e6

    bare, middleware = asyncio.run(drive(app)), asyncio.run(drive(wrapped))
    print(f"  {'ASGI middleware, 11 headers':<36} {middleware - bare:6.2f} us over the app")


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    print(f"log line CPU cost, N={count}")
    lines(count)
    contexts(count)
