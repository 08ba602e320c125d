"""`agentcube-e2b up`: the whole gateway on this machine, with local sandboxes.

It prepares the state directory (router identity, a first API key), then runs the lifecycle
service, the edge and Envoy as child processes, each in its own process group so that a
sandbox or worker a child started is stopped with it. Their output is copied to stderr, each
line prefixed with the child's name. When all of them are ready it prints `export ...` lines
and `ready` on stdout, so a script can `eval` the exports and wait for the word.

The edge runs as `--edge-processes` processes (`edge-1`, `edge-2`, ...; just `edge` when there
is one). One Python process keeps about one core busy, and Envoy keeps one HTTP/2 connection
per worker per edge host, so extra processes must be extra endpoints of Envoy's edge cluster,
not SO_REUSEPORT siblings (docs/benchmarks.md has the numbers). The first edge listens on
`--edge-listen`; the others on free ports of the same host, which only Envoy needs to know.
Edge N serves its metrics on the `--metrics-listen` port + N - 1 (9091, 9092, ...), so a
scrape configuration can list them.

Only sha256 hashes of API keys are stored, so a key can be printed only when it is created:
the first `up` on an empty state directory creates one and prints it; later runs print how to
create another (`agentcube-e2b keys create`).

Ctrl-C or SIGTERM stops every child (SIGTERM to each group, a bounded grace, then SIGKILL); a
child that exits on its own stops the rest and `up` exits non-zero, naming it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx

from extproc.core.flags import EnvDefaults, integer_arg
from extproc.envoy_config.clusters import EDGE_CLUSTER
from extproc.envoy_config.settings import DEFAULT_DOMAIN, EnvoySettings, HostPort

ENV = EnvDefaults("AGENTCUBE_E2B_UP_")


@dataclass(frozen=True)
class UpSettings:
    # public Envoy listener (HTTP/1.1 and h2c). Default 127.0.0.1:8081.
    listen: HostPort
    # sandbox domain. Default e2b.localhost.
    domain: str
    # state directory (identity/, keys/, lifecycle/, envoy.yaml). Default ./state.
    state_dir: Path
    # Envoy admin, loopback only. Default 127.0.0.1:9901.
    admin: HostPort
    # the first edge's gRPC (ext_authz + ext_proc); the others take free ports on its host.
    # Default 127.0.0.1:9001.
    edge: HostPort
    # the first edge's Prometheus metrics; edge N uses this port + N - 1. Default
    # 127.0.0.1:9091.
    metrics: HostPort
    # lifecycle gRPC. Default 127.0.0.1:9002.
    lifecycle: HostPort
    # edge processes, each its own endpoint of Envoy's edge cluster. Default
    # default_edge_processes(): half the CPUs, 1 to 4.
    edge_processes: int = 1
    # Envoy worker threads. Default 2.
    envoy_concurrency: int = 2
    # seconds the children get to become ready. Default 60.
    ready_timeout_s: float = 60.0
    # seconds each child gets between SIGTERM and SIGKILL. Default 10.
    grace_s: float = 10.0


def default_edge_processes() -> int:
    """Half the CPUs, at least one, at most four.

    An edge process needs about as much CPU per request as Envoy (~200-300 µs, nearly all of
    it gRPC transport), and Envoy, picod and the clients need the rest. On 2 cores, where
    everything is CPU-bound, a second edge process only added overhead: 20-30% fewer requests
    per second than one (docs/benchmarks.md). Four is as far as the reasoning goes untested.
    """
    return max(1, min(4, (os.cpu_count() or 1) // 2))


def register(parser: argparse.ArgumentParser) -> None:
    ENV.add(parser, "--listen", "127.0.0.1:8081", "public listener", metavar="IP:PORT")
    ENV.add(parser, "--domain", DEFAULT_DOMAIN, "sandbox domain")
    parser.add_argument(
        "--state-dir",
        default=ENV.text("STATE_DIR", "state"),
        metavar="DIR",
        help=f"state directory (env {ENV.var('STATE_DIR')}; default ./%(default)s)",
    )
    ENV.add(parser, "--admin", "127.0.0.1:9901", "Envoy admin, loopback only", metavar="IP:PORT")
    ENV.add(parser, "--edge-listen", "127.0.0.1:9001", "edge gRPC", metavar="IP:PORT")
    ENV.add(parser, "--metrics-listen", "127.0.0.1:9091", "edge metrics", metavar="IP:PORT")
    ENV.add(parser, "--lifecycle-listen", "127.0.0.1:9002", "lifecycle gRPC", metavar="IP:PORT")
    parser.add_argument(
        "--edge-processes",
        default=ENV.text("EDGE_PROCESSES", str(default_edge_processes())),
        metavar="N",
        help=(
            f"edge processes, each an endpoint of Envoy's edge cluster (env "
            f"{ENV.var('EDGE_PROCESSES')}; default %(default)s: half the CPUs, 1 to 4)"
        ),
    )
    parser.add_argument(
        "--envoy-concurrency",
        type=int,
        default=ENV.integer("ENVOY_CONCURRENCY", 2),
        metavar="N",
        help=f"Envoy worker threads (env {ENV.var('ENVOY_CONCURRENCY')}; default %(default)s)",
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=ENV.number("READY_TIMEOUT", 60),
        metavar="SECONDS",
        help=f"startup bound (env {ENV.var('READY_TIMEOUT')}; default %(default)s)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=ENV.number("GRACE", 10),
        metavar="SECONDS",
        help=f"SIGTERM-to-SIGKILL grace per child (env {ENV.var('GRACE')}; default %(default)s)",
    )
    parser.set_defaults(run=run)


def settings_from(args: argparse.Namespace) -> UpSettings:
    return UpSettings(
        listen=HostPort.parse(args.listen),
        domain=args.domain.lower(),
        state_dir=Path(args.state_dir).absolute(),
        admin=HostPort.parse(args.admin),
        edge=HostPort.parse(args.edge_listen),
        metrics=HostPort.parse(args.metrics_listen),
        lifecycle=HostPort.parse(args.lifecycle_listen),
        edge_processes=integer_arg(args, "edge_processes", 1),
        envoy_concurrency=args.envoy_concurrency,
        ready_timeout_s=args.ready_timeout,
        grace_s=args.grace,
    )


@dataclass(frozen=True)
class EdgeProcess:
    name: str
    listen: HostPort
    metrics: HostPort


def plan_edges(settings: UpSettings) -> tuple[EdgeProcess, ...]:
    """Name and addresses of each edge process; extra gRPC ports are picked free now."""
    count = settings.edge_processes
    last_metrics = settings.metrics.port + count - 1
    if last_metrics > 65535:
        raise ValueError(f"--metrics-listen: {count} edges need ports up to {last_metrics}")
    taken = {
        "--listen": settings.listen,
        "--admin": settings.admin,
        "--lifecycle-listen": settings.lifecycle,
        "--edge-listen": settings.edge,
    }
    edges = []
    for index in range(count):
        metrics = HostPort(settings.metrics.host, settings.metrics.port + index)
        for flag, address in taken.items():
            if index > 0 and address.port == metrics.port:  # the first one is the user's choice
                raise ValueError(
                    f"--metrics-listen: edge {index + 1} would serve metrics on {metrics}, "
                    f"the port of {flag}"
                )
        listen = (
            settings.edge if index == 0 else HostPort(settings.edge.host, _free_port(settings.edge))
        )
        name = "edge" if count == 1 else f"edge-{index + 1}"
        edges.append(EdgeProcess(name, listen, metrics))
    return tuple(edges)


def _free_port(near: HostPort) -> int:
    family = socket.AF_INET6 if ":" in near.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((near.host, 0))
        port: int = probe.getsockname()[1]
    return port


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
        edges = plan_edges(settings)
        envoy = EnvoySettings(
            listen=settings.listen,
            admin=settings.admin,
            domain=settings.domain,
            edges=tuple(edge.listen for edge in edges),
        )
    except (ValueError, OSError) as error:
        print(f"agentcube-e2b up: {error}", file=sys.stderr)
        return 2
    return asyncio.run(serve(settings, edges, envoy))


def _say(text: str) -> None:
    print(f"[up] {text}", file=sys.stderr, flush=True)


def _commands(
    settings: UpSettings, edges: tuple[EdgeProcess, ...], config: Path
) -> dict[str, list[str]]:
    cli = [sys.executable, "-m", "extproc.cli"]
    state = settings.state_dir
    envoy = Path(sys.executable).parent / "envoy"
    edge_commands = {
        edge.name: [
            *cli,
            "edge",
            "--listen",
            str(edge.listen),
            "--lifecycle",
            str(settings.lifecycle),
            "--state-dir",
            str(state),
            "--domain",
            settings.domain,
            "--metrics-listen",
            str(edge.metrics),
        ]
        for edge in edges
    }
    return {
        "lifecycle": [
            *cli,
            "lifecycle",
            "--backend",
            "local",
            "--listen",
            str(settings.lifecycle),
            "--state-dir",
            str(state / "lifecycle"),
            "--jwt-public-key",
            str(state / "identity" / "public.pem"),
            # `up` promises to leave nothing behind
            "--kill-on-exit",
            "on",
        ],
        **edge_commands,
        "envoy": [
            str(envoy if envoy.exists() else "envoy"),
            "-c",
            str(config),
            "--concurrency",
            str(settings.envoy_concurrency),
            # several gateways (tests, a second checkout) may run on one machine
            "--disable-hot-restart",
            "-l",
            "warning",
        ],
    }


async def serve(settings: UpSettings, edges: tuple[EdgeProcess, ...], envoy: EnvoySettings) -> int:
    from extproc.envoy_config.bootstrap import render_yaml

    first_key = prepare_state(settings.state_dir)
    config = settings.state_dir / "envoy.yaml"
    config.write_text(render_yaml(envoy))
    children: dict[str, Child] = {}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    code = 0
    try:
        for name, argv in _commands(settings, edges, config).items():
            children[name] = await start_child(name, argv)
        listed = ", ".join(
            f"{edge.name} on {edge.listen} (metrics {edge.metrics})" for edge in edges
        )
        _say(f"starting lifecycle, {listed} and envoy")
        readiness = asyncio.gather(
            wait_grpc_serving(str(settings.lifecycle)),
            *(wait_grpc_serving(str(edge.listen)) for edge in edges),
            wait_envoy_ready(settings.admin, len(edges)),
        )
        code = await _until_ready(readiness, children, stop, settings.ready_timeout_s)
        if code == 0 and not stop.is_set():
            _print_exports(settings, first_key)
            code = await _until_stopped(children, stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        _say("stopping")
        await stop_children(list(children.values()), settings.grace_s)
        _say("stopped")
    return code


async def _until_ready(
    readiness: asyncio.Future[list[None]],
    children: dict[str, Child],
    stop: asyncio.Event,
    timeout_s: float,
) -> int:
    stopping = asyncio.create_task(stop.wait(), name="up-stop-signal")
    waited: list[asyncio.Future[Any]] = [readiness, stopping]
    waited += [child.exited for child in children.values()]
    try:
        done, _ = await asyncio.wait(waited, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if readiness in done:
        readiness.result()
        return 0
    readiness.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await readiness
    if stop.is_set():
        return 0
    for child in children.values():
        if child.exited.done():
            _say(_exit_text(child))
            return 1
    _say(f"not ready after {timeout_s:g} s; see the output above")
    return 1


async def _until_stopped(children: dict[str, Child], stop: asyncio.Event) -> int:
    stopping = asyncio.create_task(stop.wait(), name="up-stop-signal")
    try:
        await asyncio.wait(
            [stopping, *(child.exited for child in children.values())],
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        stopping.cancel()
    if stop.is_set():
        return 0
    for child in children.values():
        if child.exited.done():
            _say(f"{_exit_text(child)}; stopping the others")
    return 1


def _print_exports(settings: UpSettings, first_key: str | None) -> None:
    url = f"http://{settings.listen}"
    values = MappingProxyType(
        {"E2B_API_URL": url, "E2B_SANDBOX_URL": url, "E2B_DOMAIN": settings.domain}
    )
    exports = " ".join(f"{name}={value}" for name, value in values.items())
    if first_key is not None:
        print(f"export {exports} E2B_API_KEY={first_key}")
        _say("created the first API key (printed once: only its hash is stored)")
    else:
        print(f"export {exports}")
        print(
            "# E2B_API_KEY: only key hashes are stored; create one with "
            f"`agentcube-e2b keys create --state-dir {settings.state_dir}`"
        )
    print("ready", flush=True)


# --- the state directory ---------------------------------------------------------------


def prepare_state(state_dir: Path) -> str | None:
    """Create the router identity and, if no valid key exists, a first key (returned)."""
    from extproc.core.api_keys import KeyEntry, KeyIndex, KeyStatus, hash_api_key, new_api_key
    from extproc.core.identity import load_or_create_router_identity
    from extproc.edge.keyfiles import read_key_index, write_key_index

    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    load_or_create_router_identity(state_dir / "identity")
    keys = state_dir / "keys"
    index = read_key_index(keys)
    if any(entry.status is KeyStatus.VALID for entry in index.entries.values()):
        return None
    key = new_api_key()
    key_hash = hash_api_key(key)
    entry = KeyEntry(key_hash, KeyStatus.VALID, index.default_namespace, "created by up")
    write_key_index(
        keys,
        KeyIndex(MappingProxyType({**index.entries, key_hash: entry}), index.default_namespace),
    )
    return key


# --- children ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Child:
    name: str
    process: asyncio.subprocess.Process
    # resolves to the exit status (negative: killed by that signal)
    exited: asyncio.Task[int]
    # copies the child's output to stderr; may outlive it while a grandchild holds the pipe
    pump: asyncio.Task[None]


async def _pump(name: str, stream: asyncio.StreamReader) -> None:
    prefix = f"[{name}] ".encode()
    out = sys.stderr.buffer
    while line := await stream.readline():
        out.write(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")
        out.flush()


async def start_child(name: str, argv: list[str]) -> Child:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        # its own session and process group: one signal reaches everything it started
        start_new_session=True,
    )
    assert process.stdout is not None
    return Child(
        name=name,
        process=process,
        exited=asyncio.create_task(process.wait(), name=f"up-wait-{name}"),
        pump=asyncio.create_task(_pump(name, process.stdout), name=f"up-output-{name}"),
    )


def _signal_group(child: Child, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.process.pid, signum)


async def stop_children(children: list[Child], grace_s: float) -> None:
    """SIGTERM every group, wait `grace_s`, SIGKILL what is left of any group."""
    for child in children:
        if not child.exited.done():
            _signal_group(child, signal.SIGTERM)
    pending = [child.exited for child in children if not child.exited.done()]
    if pending:
        await asyncio.wait(pending, timeout=grace_s)
    for child in children:
        if not child.exited.done():
            _say(f"{child.name} did not stop within {grace_s:g} s; killing it")
        # also reaps anything the child left behind in its group
        _signal_group(child, signal.SIGKILL)
    await asyncio.gather(*(child.exited for child in children))
    for child in children:
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(child.pump, timeout=1.0)
        child.pump.cancel()


def _exit_text(child: Child) -> str:
    status = child.exited.result()
    how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
    return f"{child.name} {how}"


# --- readiness -----------------------------------------------------------------------------


async def wait_grpc_serving(target: str) -> None:
    """Until the server at `target` reports SERVING on grpc.health.v1 (Watch, no polling)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    options = [
        # the server is starting: retry connecting often rather than back off to seconds
        ("grpc.initial_reconnect_backoff_ms", 50),
        ("grpc.min_reconnect_backoff_ms", 50),
        ("grpc.max_reconnect_backoff_ms", 250),
    ]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        while True:
            try:
                call = stub.Watch(health_pb2.HealthCheckRequest(service=""), wait_for_ready=True)
                async for reply in call:
                    if reply.status == serving:
                        return
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise


async def wait_envoy_ready(admin: HostPort, edges: int) -> None:
    """Until Envoy's admin `/ready` answers 200 and its health checks pass on all `edges`
    endpoints, so that the first requests are balanced over every edge (Envoy has no push
    signal for either)."""
    healthy = f"cluster.{EDGE_CLUSTER}.membership_healthy: {edges}"
    async with httpx.AsyncClient(base_url=f"http://{admin}", timeout=1.0) as client:
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/ready")).status_code == 200:
                    stats = await client.get(
                        "/stats",
                        params={"filter": f"^cluster\\.{EDGE_CLUSTER}\\.membership_healthy$"},
                    )
                    if stats.text.strip() == healthy:
                        return
            await asyncio.sleep(0.05)
