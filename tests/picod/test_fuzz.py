"""A seeded fuzz of picod's HTTP surface against a real picod process: 0 crashes, 0 500s.

Every request goes through a raw socket (`Connection: close`), so the fuzz controls every
byte: request targets httpx would re-encode, headers h11 would refuse, bodies shorter or
longer than their envelopes. After each batch picod must still be the same process, answer
`/health` promptly, run `echo ok` through the SDK, and stay under an RSS bound; no answer may
be a 5xx or a Connect `internal` error, and picod's log must hold no traceback.

Strings that reach the filesystem are chosen so that no request can touch anything outside
picod's temporary home (every `..` path ends in a name that does not exist), because Remove
and Move do what they are asked. `tests/bench/envd_fuzz.py` runs the same batches for
longer with any seed.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from e2b import Sandbox

    from conftest import PicodProcess

SEED = int(os.environ.get("PICOD_FUZZ_SEED", "20261201"))
TOKEN = "fuzz-token"
RSS_LIMIT_MIB = 300
HEALTH_WITHIN_S = 2.0
REQUEST_TIMEOUT_S = 15.0

STREAMS = [
    "/process.Process/Start",
    "/process.Process/Connect",
    "/process.Process/StreamInput",
    "/filesystem.Filesystem/WatchDir",
]
# Each unary method and its request's JSON fields (name -> a well-typed example).
UNARY_FIELDS: dict[str, dict[str, Any]] = {
    "/process.Process/List": {},
    "/process.Process/Update": {"process": {"pid": 1}, "pty": {"size": {"cols": 80, "rows": 24}}},
    "/process.Process/SendInput": {"process": {"tag": "t"}, "input": {"stdin": "eA=="}},
    "/process.Process/SendSignal": {"process": {"pid": 4294967295}, "signal": "SIGNAL_SIGTERM"},
    "/process.Process/CloseStdin": {"process": {"tag": "t"}},
    "/filesystem.Filesystem/Stat": {"path": "x"},
    "/filesystem.Filesystem/MakeDir": {"path": "x"},
    "/filesystem.Filesystem/Move": {"source": "x", "destination": "y"},
    "/filesystem.Filesystem/ListDir": {"path": "x", "depth": 1},
    "/filesystem.Filesystem/Remove": {"path": "x"},
    "/filesystem.Filesystem/CreateWatcher": {"path": "x", "recursive": True},
    "/filesystem.Filesystem/GetWatcherEvents": {"watcherId": "w"},
    "/filesystem.Filesystem/RemoveWatcher": {"watcherId": "w"},
}
# A value of every JSON type and some that proto3 JSON must refuse or range-check.
WRONG_VALUES: list[Any] = [
    None, True, False, 0, -1, 1.5, 2**32, 2**64, -(2**63) - 1, 10**30, "", "12abc", "NaN",
    [], [1, "a"], {}, {"x": {"y": []}}, "SIGNAL_NOPE",
]  # fmt: skip
# The one `internal` envd answers to bad input: connect-go's own code for a compressed-flag
# envelope on a stream without Connect-Content-Encoding (envelope.go); picod matches it.
CONNECT_GO_INTERNAL = (
    b'{"error":{"code":"internal","message":"protocolerror:sentcompressedmessage'
    b'withoutcompressionsupport"}}'
)
RAW_NUMBERS = [b"1e999", b"-1e999", b"NaN", b"Infinity", b"0x10", b"01", b"1" * 400, b"-0"]


@dataclass
class Tally:
    """What picod answered: (status, kind) pairs, and every answer that is a finding."""

    seed: int
    sent: Counter[str] = field(default_factory=Counter)
    answers: Counter[tuple[int, str]] = field(default_factory=Counter)
    findings: list[str] = field(default_factory=list)

    def record(self, kind: str, status: int, body: bytes, what: str) -> None:
        self.sent[kind.split(":")[0]] += 1
        self.answers[(status, kind)] += 1
        compact = body.replace(b" ", b"").replace(CONNECT_GO_INTERNAL, b"")
        if status >= 500 or b'"code":"internal"' in compact or b"Traceback" in body:
            self.findings.append(f"{kind} -> {status}: {what!r:.200} answered {body[:300]!r}")

    def report(self) -> str:
        lines = [f"seed {self.seed}; requests per batch: {dict(self.sent)}"]
        lines += [
            f"  {status:>3} {kind}: {n}" for (status, kind), n in sorted(self.answers.items())
        ]
        return "\n".join(lines)


class Target:
    """A picod on 127.0.0.1:`port`, driven through raw sockets."""

    def __init__(self, port: int, tally: Tally) -> None:
        self.port = port
        self.tally = tally

    def exchange(self, data: bytes, timeout: float = REQUEST_TIMEOUT_S) -> tuple[int, bytes]:
        """Send `data`, read until picod closes; (status or 0 for no answer, body)."""
        received = bytearray()
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            with contextlib.suppress(OSError):  # picod may refuse and close before reading it all
                sock.sendall(data)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    chunk = sock.recv(65536)
                except OSError:  # TimeoutError included
                    break
                if not chunk:
                    break
                received += chunk
        head, _, body = bytes(received).partition(b"\r\n\r\n")
        parts = head.split(b" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        return status, body

    def send(
        self,
        kind: str,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
        *,
        token: bytes | None = TOKEN.encode(),
        length: bool = True,
    ) -> int:
        lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
        if token is not None:
            lines.append(b"X-Access-Token: " + token)
        if length:
            lines.append(b"Content-Length: " + str(len(body)).encode())
        lines += [name + b": " + value for name, value in headers]
        status, answer = self.exchange(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        self.tally.record(kind, status, answer, target + b" " + body[:120])
        return status


def envelope(payload: bytes, flags: int = 0, size: int | None = None) -> bytes:
    declared = len(payload) if size is None else size
    return bytes([flags]) + (declared % 2**32).to_bytes(4, "big") + payload


def junk_string(rng: random.Random) -> str:
    """A string that names nothing outside picod's home (and mostly nothing at all)."""
    missing = f"fz-none-{rng.getrandbits(32):08x}"
    return rng.choice(
        [
            missing,
            f"../{missing}",
            f"../../{missing}",  # never `missing/..`: paths are cleaned lexically, as in envd
            f"{missing}/\x00/x",
            "a" * rng.choice([255, 256, 4096, 70000]),
            "\u202e\ufffd\U0001f600" + missing,
            f"%2e%2e/{missing}",
            f"{missing}\n\r\t",
        ]
    )


def json_bodies(rng: random.Random, fields: dict[str, Any]) -> Iterator[bytes]:
    """Unary JSON bodies: bad syntax, deep nesting, wrong types for every field, big strings."""
    yield rng.randbytes(rng.randrange(0, 2000))
    yield b"[" * 100000 + b"]" * 100000
    yield b'{"a":' * 5000 + b"1" + b"}" * 5000
    yield b"\xff\xfe{}"
    yield b'{"path": "\xff\xfe\xc0\xaf"}'
    yield b'{"path": "\\ud800"}'
    yield b'{"path": "' + b"\\u0000" * 1000 + b'"}'
    yield json.dumps({"x": "y" * (2 * 1024 * 1024)}).encode()
    yield b'{"a": 1, "a": 2}'
    yield b"null"
    for name, example in fields.items():
        for value in WRONG_VALUES:
            yield json.dumps({**fields, name: value}).encode()
        for raw in RAW_NUMBERS:
            yield b'{"' + name.encode() + b'": ' + raw + b"}"
        if isinstance(example, dict):
            for inner in example:
                for value in rng.sample(WRONG_VALUES, 4):
                    yield json.dumps({**fields, name: {**example, inner: value}}).encode()
        if isinstance(example, str):
            yield json.dumps({**fields, name: junk_string(rng)}).encode()


def proto_bodies(rng: random.Random) -> Iterator[bytes]:
    """Binary protobuf that is not: random bytes, bad varints, wrong wire types, big lengths."""
    yield rng.randbytes(rng.randrange(1, 500))
    yield b"\xff" * 11  # a varint longer than 10 bytes
    yield b"\x0a\xff\xff\xff\xff\x0f"  # field 1, length 2^32-1, no payload
    yield b"\x0a\x05ab"  # field 1, length 5, 2 bytes
    yield b"\x0d\x01"  # field 1 as fixed32, truncated
    yield b"\x08\x01"  # field 1 (a string or message) as a varint
    yield b"\x0f"  # wire type 7: no such type
    yield b"\x00\x01"  # field number 0
    yield b"\x0a\x02\xff\xfe"  # a string that is not UTF-8
    yield b"\x12" + b"\x80" * 9 + b"\x01"  # a length of 2^63


def stream_bodies(rng: random.Random, payload: bytes) -> Iterator[bytes]:
    """Connect envelopes broken every way a peer could break them."""
    yield b""
    yield envelope(b"")
    yield envelope(payload, flags=rng.choice([1, 3, 4, 0x80, 0xFF]))
    yield envelope(payload, flags=2)  # an end-stream frame as the request
    yield envelope(payload, size=len(payload) + rng.randrange(1, 100))
    yield envelope(payload, size=max(0, len(payload) - rng.randrange(1, 5)))
    yield envelope(payload)[: rng.randrange(1, 5 + len(payload))]
    yield envelope(payload, size=2**31)
    yield envelope(payload, size=2**32 - 1)
    yield envelope(payload) + envelope(b"{}", flags=2) + rng.randbytes(rng.randrange(1, 64))
    yield envelope(payload) + envelope(payload)  # two requests to a server stream
    yield envelope(payload) * 50
    yield rng.randbytes(rng.randrange(1, 300))
    yield envelope(rng.randbytes(rng.randrange(1, 300)))


def stream_payloads(rng: random.Random, path: str) -> list[bytes]:
    """Well-formed messages that end promptly: nothing here names a live process or dir."""
    missing = f"fz-none-{rng.getrandbits(32):08x}"
    if path.endswith("/Start"):
        return [json.dumps({"process": {"cmd": "/bin/true"}}).encode()]
    if path.endswith("/WatchDir"):
        return [json.dumps({"path": missing}).encode()]
    if path.endswith("/StreamInput"):
        return [json.dumps({"start": {"process": {"pid": 4294967295}}}).encode()]
    return [json.dumps({"process": {"tag": missing}}).encode()]


def fuzz_streams(target: Target, rng: random.Random) -> None:
    for path in STREAMS:
        name = path.rsplit("/", 1)[1]
        for codec in (b"json", b"proto"):
            headers = [
                (b"Content-Type", b"application/connect+" + codec),
                (b"Connect-Protocol-Version", b"1"),
                (b"Connect-Timeout-Ms", b"5000"),
            ]
            payloads = stream_payloads(rng, path) if codec == b"json" else list(proto_bodies(rng))
            for payload in payloads:
                for body in stream_bodies(rng, payload):
                    target.send(f"stream:{name}", b"POST", path.encode(), headers, body)
            compressed = [*headers, (b"Connect-Content-Encoding", b"gzip")]
            for body in (envelope(b"not gzip", flags=1), envelope(gzip.compress(b"{}")[:8], 1)):
                target.send(f"stream:{name}", b"POST", path.encode(), compressed, body)


def fuzz_unary(target: Target, rng: random.Random) -> None:
    for path, fields in UNARY_FIELDS.items():
        name = path.rsplit("/", 1)[1]
        json_headers = [(b"Content-Type", b"application/json"), (b"Connect-Protocol-Version", b"1")]
        for body in json_bodies(rng, fields):
            target.send(f"unary:{name}", b"POST", path.encode(), json_headers, body)
        proto_headers = [(b"Content-Type", b"application/proto")]
        for body in proto_bodies(rng):
            target.send(f"unary:{name}", b"POST", path.encode(), proto_headers, body)
        get = path.encode() + b"?encoding=json&message=%7Bbad&base64=2&compression=zz"
        target.send(f"unary:{name}", b"GET", get, [(b"Connect-Protocol-Version", b"1")])


def bad_queries(rng: random.Random) -> Iterator[bytes]:
    missing = f"fz-none-{rng.getrandbits(32):08x}".encode()
    yield b""
    yield b"?"
    yield b"?path"
    yield b"?path=%"
    yield b"?path=%zz%4"
    yield b"?path=%00" + missing
    yield b"?path=a\x00b"
    yield b"?path=%ff%fe%c0%af"
    yield b"?path=..&path=../.."
    yield b"?path=../../../../../../" + missing
    yield b"?path=" + b"a/" * 4096 + missing
    yield b"?path=" + b"a" * 65536
    yield b"?path=" + missing + b"&username=%ff"
    yield b"?path=" + missing + b"&username=nobody-" + missing
    yield b"?path=" + missing + b"&username=root"
    yield b"?path=" + missing + b"&signature=v1_junk&signature_expiration=abc"
    yield b"?path=" + missing + b"&signature_expiration=99999999999999999999999"
    yield b"?" + bytes(rng.choice(b"abc=&%?;/+09") for _ in range(200))


def multipart(boundary: bytes, parts: list[tuple[bytes, bytes]], close: bool = True) -> bytes:
    body = b"".join(
        b"--" + boundary + b"\r\n" + head + b"\r\n\r\n" + data + b"\r\n" for head, data in parts
    )
    return body + (b"--" + boundary + b"--\r\n" if close else b"")


def fuzz_files(target: Target, rng: random.Random) -> None:
    for query in bad_queries(rng):
        target.send("files:GET", b"GET", b"/files" + query, [])
        target.send("files:POST", b"POST", b"/files" + query, [(b"Content-Type", b"text/plain")])
    up = f"fz-up-{rng.getrandbits(32):08x}"
    name = b'Content-Disposition: form-data; name="file"; filename="' + up.encode() + b'"'
    form = b"multipart/form-data; boundary=B"
    bodies: list[tuple[bytes, list[tuple[bytes, bytes]]]] = [
        (b"", [(b"Content-Type", b"multipart/form-data")]),
        (multipart(b"B", [(name, b"x")]), [(b"Content-Type", b"multipart/form-data; boundary=")]),
        (b"no boundary here", [(b"Content-Type", form)]),
        (multipart(b"B", [(name, b"x" * 100)], close=False), [(b"Content-Type", form)]),
        (multipart(b"B", [(name, b"x")])[:30], [(b"Content-Type", form)]),
        (
            multipart(b"B", [(name + b"\r\nX-Big: " + b"h" * 65536, b"x")]),
            [(b"Content-Type", form)],
        ),
        (multipart(b"B", [(b"Content-Disposition: form-data", b"x")]), [(b"Content-Type", form)]),
        (multipart(b"B", [(b"", b"x")]), [(b"Content-Type", form)]),
        (multipart(b"B", [(name, b"x")] * 200), [(b"Content-Type", form)]),
        (rng.randbytes(500), [(b"Content-Type", form)]),
        (
            b"garbage",
            [(b"Content-Type", b"application/octet-stream"), (b"Content-Encoding", b"gzip")],
        ),
        (gzip.compress(b"x" * 10000)[:40], [(b"Content-Encoding", b"gzip")]),
        (gzip.compress(b"x") + b"trailing", [(b"Content-Encoding", b"gzip")]),
        (b"x", [(b"Content-Encoding", b"br, gzip")]),
        (b"x", [(b"Content-Type", b";;;===")]),
        (b"x", [(b"Content-Type", b"multipart/form-data; boundary=" + b"b" * 5000)]),
        (b"x", [(b"X-Metadata-" + b"k" * 300, b"\xff\xfe")]),
    ]
    for body, headers in bodies:
        for query in (b"?path=" + up.encode(), b"?path=fz-dir/" + up.encode(), b""):
            target.send("files:POST", b"POST", b"/files" + query, headers, body)
    target.send("files:PUT", b"PUT", b"/files?path=" + up.encode(), [], b"x")


def fuzz_headers(target: Target, rng: random.Random) -> None:
    start = b"/process.Process/Start"
    body = envelope(json.dumps({"process": {"cmd": "/bin/true"}}).encode())
    stream = [(b"Content-Type", b"application/connect+json"), (b"Connect-Protocol-Version", b"1")]
    big = b"v" * 65536
    for path, kind in ((b"/health", "headers:health"), (start, "headers:Start")):
        target.send(
            kind, b"GET" if path == b"/health" else b"POST", path, [*stream, (b"X-Big", big)], body
        )
        many = [(f"X-H{i}".encode(), str(rng.random()).encode()) for i in range(1000)]
        target.send(kind, b"POST" if path == start else b"GET", path, [*stream, *many], body)
    for timeout in [
        b"-1",
        b"abc",
        b"99999999999999999999",
        b"0",
        b"",
        b"1e3",
        b"12345678901",
        b"\xff",
    ]:
        target.send(
            "headers:timeout", b"POST", start, [*stream, (b"Connect-Timeout-Ms", timeout)], body
        )
    basic = [b"root:", b"nobody-fz:", b"\xff:", b"", b":"]
    auths = [b"garbage", b"Bearer " + big, b"Bearer", b"Basic !!!", b"Basic " + b"A" * 70000]
    auths += [b"Basic " + base64.b64encode(user) for user in basic]
    for auth in auths:
        target.send(
            "headers:authorization", b"POST", start, [*stream, (b"Authorization", auth)], body
        )
    for token in [b"", b"wrong", big, b"\xff\xfe", TOKEN.encode() + b"\x00", None]:
        target.send("headers:token", b"POST", start, stream, body, token=token)
    bad_chunked = b"zz\r\nxx\r\n0\r\n\r\n"
    target.send(
        "headers:chunked", b"POST", start, [*stream, (b"Transfer-Encoding", b"chunked")],
        bad_chunked, length=False,
    )  # fmt: skip
    target.send(
        "headers:chunked", b"POST", start, [*stream, (b"Transfer-Encoding", b"chunked")], body
    )


def fuzz_slow_clients(target: Target, idle: int, hold_s: float) -> float:
    """Hold `idle` silent connections and a trickling one; seconds /health took meanwhile."""
    held: list[socket.socket] = []
    try:
        for i in range(idle):
            sock = socket.create_connection(("127.0.0.1", target.port), timeout=5)
            if i % 2:
                sock.sendall(b"POST /process.Process/Start HTTP/1.1\r\nHost: x\r\n")
            held.append(sock)
        trickle = socket.create_connection(("127.0.0.1", target.port), timeout=5)
        held.append(trickle)
        trickle.sendall(
            b"POST /process.Process/Start HTTP/1.1\r\nHost: x\r\nX-Access-Token: "
            + TOKEN.encode()
            + b"\r\nContent-Type: application/connect+json\r\nContent-Length: 100\r\n\r\n"
        )
        payload = envelope(json.dumps({"process": {"cmd": "/bin/true"}}).encode())
        deadline = time.monotonic() + hold_s
        for byte in payload[:20]:
            trickle.sendall(bytes([byte]))
            time.sleep(hold_s / 40)  # the point is to be slow: a real client on a bad link
        started = time.monotonic()
        status, _ = target.exchange(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        took = time.monotonic() - started
        target.tally.record("slow:health", status, b"", b"/health")
        time.sleep(max(0.0, deadline - time.monotonic()))
        return took
    finally:
        for sock in held:
            sock.close()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def batches(target: Target, rng: random.Random) -> list[tuple[str, Callable[[], object]]]:
    return [
        ("stream", lambda: fuzz_streams(target, rng)),
        ("unary", lambda: fuzz_unary(target, rng)),
        ("files", lambda: fuzz_files(target, rng)),
        ("headers", lambda: fuzz_headers(target, rng)),
        ("slow", lambda: fuzz_slow_clients(target, idle=50, hold_s=3.0)),
    ]


@pytest.mark.slow
def test_fuzz_envd_surface(
    start_picod: Callable[..., PicodProcess], sdk_sandbox: Callable[..., Sandbox]
) -> None:
    picod = start_picod(access_token=TOKEN)
    pid = picod.proc.pid
    sandbox = sdk_sandbox(picod.url, {"X-Access-Token": TOKEN})
    tally = Tally(SEED)
    target = Target(picod.port, tally)
    rng = random.Random(SEED)
    print(f"\nenvd fuzz: seed {SEED}, picod pid {pid}, RSS {rss_mib(pid):.1f} MiB at start")
    for name, run in batches(target, rng):
        started = time.monotonic()
        result = run()
        assert picod.proc.poll() is None, f"picod died in batch {name}:\n{picod.stderr()}"
        health_s = fuzz_health(target)
        rss = rss_mib(pid)
        echoed = sandbox.commands.run("echo ok").stdout
        print(
            f"  batch {name}: {tally.sent[name]} "
            f"requests in {time.monotonic() - started:.1f} s; /health {health_s * 1000:.0f} ms"
            + (f" (while held: {result * 1000:.0f} ms)" if isinstance(result, float) else "")
            + f"; RSS {rss:.1f} MiB"
        )
        assert echoed == "ok\n"
        assert health_s < HEALTH_WITHIN_S
        assert rss < RSS_LIMIT_MIB
        if isinstance(result, float):
            assert result < HEALTH_WITHIN_S, "/health was slow while slow clients were held"
    print(tally.report())
    log = picod.stderr()
    assert "Traceback" not in log, log[-4000:]
    assert not tally.findings, "\n".join(tally.findings[:20])


def fuzz_health(target: Target) -> float:
    started = time.monotonic()
    status, _ = target.exchange(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 5)
    assert status == 204
    return time.monotonic() - started
