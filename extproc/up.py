"""`agentcube-e2b up`: the whole gateway on this machine, with local sandboxes.

It prepares the state directory (router identity, a first API key), then runs the lifecycle
service, the edge and Envoy as child processes, each in its own process group so that a
sandbox or worker a child started is stopped with it. Their output is copied to stderr, each
line prefixed with the child's name, or, with `--log-format json` (the default when stderr is
not a terminal), as JSON lines: `up` gives its children its log format and level. When all
of them are ready it prints `export ...` lines and `ready` on stdout, so a script can `eval`
the exports and wait for the word.

Nothing of the control plane listens where a sandbox could connect. Only the public listener
is TCP; the lifecycle gRPC, each edge's gRPC and metrics, and Envoy's admin are unix sockets
(mode 0600) in `<state>/run/` (mode 0700, refused when another user owns it):
`lifecycle.sock`, `edge.sock` (or `edge-1.sock`, `edge-2.sock`, ...), `metrics.sock` (or
`metrics-N.sock`) and `envoy-admin.sock`. Each flag also takes `HOST:PORT` for operators who
want TCP (Prometheus, for one, scrapes only TCP). Each run writes a fresh lifecycle caller
token to `<state>/run/lifecycle-token` (0600) and hands its path, never its value, to the
lifecycle service (which then refuses calls without it) and to the edges (which send it).

With `--isolation namespaces` (the default) sandboxes live in network namespaces behind a
hub namespace the lifecycle service owns; `up` makes sure the hub exists before Envoy starts,
and Envoy opens its connections to sandboxes inside it. `--isolation none` runs sandboxes
unisolated (unsafe: a tenant's code then shares the host's network and files).

With `--fast-path` (the default) Envoy takes its routes from the edges over xDS: `up` writes
the static routes to `<state>/envoy-routes.pb` for the edges to serve with a fast route per
running sandbox added, and requests those routes match skip the Check (edge/fast_path.py).

The edge runs as `--edge-processes` processes (`edge-1`, `edge-2`, ...; just `edge` when there
is one). One Python process keeps about one core busy, and Envoy keeps one HTTP/2 connection
per worker per edge host, so extra processes must be extra endpoints of Envoy's edge cluster,
not SO_REUSEPORT siblings (docs/benchmarks.md has the numbers). With TCP, the first edge
listens on `--edge-listen` and the others on free ports of the same host, which only Envoy
needs to know, and edge N serves its metrics on the `--metrics-listen` port + N - 1.

Only sha256 hashes of API keys are stored, so a key can be printed only when it is created:
the first `up` on an empty state directory creates one and prints it; later runs print how to
create another (`agentcube-e2b keys create`).

Ctrl-C or SIGTERM stops every child (SIGTERM to each group, a bounded grace, then SIGKILL).
A child that exits before `ready` is a broken setup: it stops the rest and `up` exits
non-zero, naming it. After `ready`, a child that exits is restarted alone with backoff while
the others keep serving (extproc/supervising.py, docs/reliability.md); one that keeps
crashing stops everything, and `up` exits non-zero naming it. The caller token is written
once per run, so a restarted lifecycle service reads the one the edges already send.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx

from extproc.core.caller_token import new_token, write_token_file
from extproc.core.flags import EnvDefaults, integer_arg, usage_error
from extproc.core.logs import (
    ENVOY_JSON_LOG_FORMAT,
    add_log_flags,
    log_argv,
    log_options,
    setup_logging,
)
from extproc.envoy_config.clusters import EDGE_CLUSTER
from extproc.envoy_config.settings import (
    DEFAULT_DOMAIN,
    Endpoint,
    EnvoySettings,
    HostPort,
    UnixSocket,
    parse_endpoint,
)
from extproc.supervising import Child, RestartPolicy, Supervisor, exit_text

ENV = EnvDefaults("AGENTCUBE_E2B_UP_")
log = logging.getLogger(__name__)
ISOLATIONS = ("namespaces", "none")
# in <state>/run/
LIFECYCLE_SOCKET = "lifecycle.sock"
EDGE_SOCKET = "edge.sock"
METRICS_SOCKET = "metrics.sock"
ADMIN_SOCKET = "envoy-admin.sock"
VOLUME_CONTENT_SOCKET = "volumes.sock"
TOKEN_FILE = "lifecycle-token"  # noqa: S105 (a file name)


@dataclass(frozen=True)
class UpSettings:
    # public Envoy listener (HTTP/1.1 and h2c). Default 127.0.0.1:8081.
    listen: HostPort
    # sandbox domain. Default e2b.localhost.
    domain: str
    # state directory (identity/, keys/, lifecycle/, run/, envoy.yaml). Default ./state.
    state_dir: Path
    # Envoy admin: a unix socket or a loopback IP:PORT. Default <state>/run/envoy-admin.sock.
    admin: Endpoint
    # the edges' gRPC (ext_authz + ext_proc): a unix socket (edge N of several: `<stem>-N`
    # next to it) or IP:PORT (the first edge; the others take free ports on its host).
    # Default <state>/run/edge.sock.
    edge: Endpoint
    # the edges' Prometheus metrics: a unix socket (numbered like `edge`) or IP:PORT (edge N
    # uses this port + N - 1). Default <state>/run/metrics.sock.
    metrics: Endpoint
    # lifecycle gRPC: a unix socket or IP:PORT. Default <state>/run/lifecycle.sock.
    lifecycle: Endpoint
    # edge processes, each its own endpoint of Envoy's edge cluster. Default
    # default_edge_processes(): half the CPUs, 1 to 4.
    edge_processes: int = 1
    # Envoy worker threads. Default 2.
    envoy_concurrency: int = 2
    # seconds the children get to become ready. Default 60.
    ready_timeout_s: float = 60.0
    # seconds each child gets between SIGTERM and SIGKILL. Default 10.
    grace_s: float = 10.0
    # sandbox isolation: "namespaces" (own network namespace each, behind the lifecycle
    # service's hub) or "none" (unsafe: shares the host's). Default namespaces.
    isolation: str = "namespaces"
    # the fast path: Envoy takes its routes from the edges over xDS and serves requests for
    # running sandboxes that the Check would allow without asking it (edge/fast_path.py).
    # Default True.
    fast_path: bool = True
    # when and how often a child that exits after `ready` is restarted
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    # the lifecycle service's volume content API (HTTP), which Envoy routes
    # `/volumecontent/...` to. Default <state>/run/volumes.sock.
    volume_content: Endpoint | None = None
    # log lines of `up` and of every child (Envoy's included): "text" or "json", and the
    # least severe level logged. Default: text on a terminal, else json; INFO.
    log_format: str = "text"
    log_level: str = "INFO"

    @property
    def run_dir(self) -> Path:
        """Sockets and the caller token; mode 0700."""
        return self.state_dir / "run"


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
    for flag, what, name in (
        ("--admin", "Envoy admin (a TCP address must be loopback)", ADMIN_SOCKET),
        ("--edge-listen", "edge gRPC", EDGE_SOCKET),
        ("--metrics-listen", "edge Prometheus metrics", METRICS_SOCKET),
        ("--lifecycle-listen", "lifecycle gRPC", LIFECYCLE_SOCKET),
        ("--volume-content-listen", "the lifecycle's volume content API", VOLUME_CONTENT_SOCKET),
    ):
        env = flag.removeprefix("--").replace("-", "_").upper()
        parser.add_argument(
            flag,
            default=ENV.text(env),
            metavar="unix:PATH|IP:PORT",
            help=f"{what} (env {ENV.var(env)}; default unix:STATE-DIR/run/{name})",
        )
    parser.add_argument(
        "--isolation",
        default=ENV.text("ISOLATION", "namespaces"),
        choices=ISOLATIONS,
        help=(
            "sandbox isolation: namespaces, or none to run tenants' code unisolated on this "
            f"host (UNSAFE) (env {ENV.var('ISOLATION')}; default %(default)s)"
        ),
    )
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
    ENV.switch(
        parser,
        "--fast-path",
        True,
        "serve requests for running sandboxes from Envoy alone where the edge's answer is "
        "known (Envoy takes its routes from the edges over xDS); --no-fast-path checks "
        "every request",
    )
    add_log_flags(parser, ENV)
    parser.set_defaults(run=run)


def settings_from(args: argparse.Namespace) -> UpSettings:
    state_dir = Path(args.state_dir).absolute()

    def endpoint(flag: str, socket_name: str) -> Endpoint:
        text = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if text is None:
            text = f"unix:{state_dir / 'run' / socket_name}"
        try:
            return parse_endpoint(text)
        except ValueError as error:
            raise ValueError(f"{flag}: {error}") from None

    if args.isolation not in ISOLATIONS:  # reachable through the environment variable
        raise ValueError(f"--isolation: expected one of {', '.join(ISOLATIONS)}")
    log_format, log_level = log_options(args)
    return UpSettings(
        listen=HostPort.parse(args.listen),
        domain=args.domain.lower(),
        state_dir=state_dir,
        admin=endpoint("--admin", ADMIN_SOCKET),
        edge=endpoint("--edge-listen", EDGE_SOCKET),
        metrics=endpoint("--metrics-listen", METRICS_SOCKET),
        lifecycle=endpoint("--lifecycle-listen", LIFECYCLE_SOCKET),
        volume_content=endpoint("--volume-content-listen", VOLUME_CONTENT_SOCKET),
        edge_processes=integer_arg(args, "edge_processes", 1),
        envoy_concurrency=args.envoy_concurrency,
        ready_timeout_s=args.ready_timeout,
        grace_s=args.grace,
        isolation=args.isolation,
        fast_path=args.fast_path,
        log_format=log_format,
        log_level=log_level,
    )


@dataclass(frozen=True)
class EdgeProcess:
    name: str
    listen: Endpoint
    metrics: Endpoint


def plan_edges(settings: UpSettings) -> tuple[EdgeProcess, ...]:
    """Name and addresses of each edge process; extra gRPC ports are picked free now."""
    count = settings.edge_processes
    if isinstance(settings.metrics, HostPort):
        last_metrics = settings.metrics.port + count - 1
        if last_metrics > 65535:
            raise ValueError(f"--metrics-listen: {count} edges need ports up to {last_metrics}")
    taken = {
        flag: address
        for flag, address in (
            ("--listen", settings.listen),
            ("--admin", settings.admin),
            ("--lifecycle-listen", settings.lifecycle),
            ("--edge-listen", settings.edge),
        )
        if isinstance(address, HostPort)
    }
    edges = []
    for index in range(count):
        metrics = _nth(settings.metrics, index, count)
        for flag, address in taken.items():
            # the first one is the user's choice
            if index > 0 and isinstance(metrics, HostPort) and address.port == metrics.port:
                raise ValueError(
                    f"--metrics-listen: edge {index + 1} would serve metrics on {metrics}, "
                    f"the port of {flag}"
                )
        name = "edge" if count == 1 else f"edge-{index + 1}"
        edges.append(EdgeProcess(name, _edge_listen(settings.edge, index, count), metrics))
    return tuple(edges)


def _numbered(socket: UnixSocket, index: int, count: int) -> UnixSocket:
    """`edge.sock` for one process; `edge-1.sock`, `edge-2.sock`, ... for several."""
    if count == 1:
        return socket
    path = socket.path
    return UnixSocket.parse(f"unix:{path.with_name(f'{path.stem}-{index + 1}{path.suffix}')}")


def _nth(metrics: Endpoint, index: int, count: int) -> Endpoint:
    if isinstance(metrics, UnixSocket):
        return _numbered(metrics, index, count)
    return HostPort(metrics.host, metrics.port + index)


def _edge_listen(edge: Endpoint, index: int, count: int) -> Endpoint:
    if isinstance(edge, UnixSocket):
        return _numbered(edge, index, count)
    return edge if index == 0 else HostPort(edge.host, _free_port(edge))


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
            sandbox_netns=_hub(settings),
            fast_path=settings.fast_path,
            volume_content=settings.volume_content,
            template_files=_template_files(settings),
        )
        prepare_run_dir(settings.run_dir)
    except (ValueError, OSError) as error:
        return usage_error("up", error)
    setup_logging("up", settings.log_format, settings.log_level)
    return asyncio.run(serve(settings, edges, envoy))


def routes_file(settings: UpSettings) -> Path:
    """The static routes (a serialized RouteConfiguration) the edges serve with the fast path."""
    return settings.state_dir / "envoy-routes.pb"


def _template_files(settings: UpSettings) -> UnixSocket | None:
    """The lifecycle's upload server for template build files (it builds only with
    isolation): a socket in its state directory (lifecycle/uploads.py)."""
    if settings.isolation == "none":
        return None
    from extproc.lifecycle.uploads import socket_path

    return UnixSocket(socket_path(settings.state_dir / "lifecycle"))


def _hub(settings: UpSettings) -> Path | None:
    """The lifecycle service's hub namespace, where Envoy must open sandbox connections."""
    if settings.isolation == "none":
        return None
    from extproc.lifecycle.networking import hub_netns_path

    return hub_netns_path(settings.state_dir / "lifecycle")


def _say(text: str) -> None:
    log.info("%s", text)


def _commands(
    settings: UpSettings, edges: tuple[EdgeProcess, ...], config: Path
) -> dict[str, list[str]]:
    cli = [sys.executable, "-m", "extproc.cli"]
    state = settings.state_dir
    token = settings.run_dir / TOKEN_FILE
    envoy = Path(sys.executable).parent / "envoy"
    logging_flags = log_argv(settings.log_format, settings.log_level)
    edge_commands = {
        edge.name: [
            *cli,
            "edge",
            "--listen",
            str(edge.listen),
            "--lifecycle",
            str(settings.lifecycle),
            "--lifecycle-token-file",
            str(token),
            "--state-dir",
            str(state),
            "--domain",
            settings.domain,
            "--metrics-listen",
            str(edge.metrics),
            *(["--fast-path-routes", str(routes_file(settings))] if settings.fast_path else []),
            *logging_flags,
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
            "--caller-token-file",
            str(token),
            "--isolation",
            settings.isolation,
            "--rootfs-cache-dir",
            str(rootfs_cache_dir(settings)),
            "--state-dir",
            str(state / "lifecycle"),
            "--jwt-public-key",
            str(state / "identity" / "public.pem"),
            # `up` promises to leave nothing behind
            "--kill-on-exit",
            "on",
            *(
                ["--volume-content-listen", str(settings.volume_content)]
                if settings.volume_content is not None
                else []
            ),
            *logging_flags,
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
            *(["--log-format", ENVOY_JSON_LOG_FORMAT] if settings.log_format == "json" else []),
        ],
    }


async def _prepare_isolation(settings: UpSettings, hub: Path) -> str:
    """Fail closed before anything starts: '' when sandboxes can be isolated here, else why
    not and what to install. The base root filesystem is built here, with its progress on
    stderr, so that a first run's build (about a minute) does not count against the
    children's ready timeout."""
    from extproc.lifecycle import host_support, rootfs
    from extproc.lifecycle.networking import ensure_hub

    refused = host_support.refusal()
    if refused:
        return refused
    try:
        await asyncio.to_thread(rootfs.ensure_base, rootfs_cache_dir(settings), _say)
        await asyncio.to_thread(ensure_hub, hub)
    except Exception as error:  # any failure: nothing has started yet
        return f"cannot prepare sandbox isolation: {error}"
    return ""


async def _prepare_data_stack(settings: UpSettings) -> None:
    """Build the code interpreter's data stack (numpy, pandas, ...) in the rootfs cache
    unless it is there, progress on stderr like the base's. Not fatal: without it
    code-interpreter sandboxes start and say what is missing when code imports it."""
    from extproc.lifecycle import data_stack

    try:
        await asyncio.to_thread(data_stack.ensure, rootfs_cache_dir(settings), _say)
    except Exception as error:
        _say(f"code-interpreter sandboxes will run without the data stack: {error}")


def rootfs_cache_dir(settings: UpSettings) -> Path:
    """$AGENTCUBE_E2B_ROOTFS_CACHE_DIR (shared with `rootfs build`), else <state>/rootfs."""
    shared = os.environ.get("AGENTCUBE_E2B_ROOTFS_CACHE_DIR")
    return Path(shared).absolute() if shared else settings.state_dir / "rootfs"


async def serve(settings: UpSettings, edges: tuple[EdgeProcess, ...], envoy: EnvoySettings) -> int:
    from extproc.envoy_config.bootstrap import render_yaml

    first_key = prepare_state(settings.state_dir)
    if envoy.sandbox_netns is not None:
        refused = await _prepare_isolation(settings, envoy.sandbox_netns)
        if refused:
            _say(refused)
            return 1
    await _prepare_data_stack(settings)
    # fresh each run: the lifecycle service and the edges start (and stop) with `up`
    write_token_file(settings.run_dir / TOKEN_FILE, new_token())
    config = settings.state_dir / "envoy.yaml"
    config.write_text(render_yaml(envoy))
    if envoy.fast_path:
        from extproc.envoy_config.routes import route_configuration

        # the static routes the edges serve Envoy, fast routes added (edge/xds_routes.py)
        routes_file(settings).write_bytes(bytes(route_configuration(envoy)))
    if settings.isolation == "none":
        _say("--isolation none: sandboxes share this host's network and files (unsafe)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    supervisor = Supervisor(
        _commands(settings, edges, config),
        settings.restart,
        _say,
        # a fresh Envoy (hot restart is off) cannot bind the socket the dead one left
        before_restart={"envoy": lambda: _remove_admin_socket(settings)},
        serving={
            "lifecycle": lambda: wait_grpc_serving(str(settings.lifecycle)),
            **{edge.name: _serving(str(edge.listen)) for edge in edges},
            "envoy": lambda: wait_envoy_ready(settings.admin, len(edges)),
        },
        log_format=settings.log_format,
    )
    code = 0
    try:
        await supervisor.start_all()
        listed = ", ".join(
            f"{edge.name} on {edge.listen} (metrics {edge.metrics})" for edge in edges
        )
        _say(f"starting lifecycle, {listed} and envoy")
        readiness = asyncio.gather(
            wait_grpc_serving(str(settings.lifecycle)),
            *(wait_grpc_serving(str(edge.listen)) for edge in edges),
            wait_envoy_ready(settings.admin, len(edges)),
        )
        # before the first `ready` a child that exits is a broken setup: no restarts
        code = await _until_ready(readiness, supervisor.children, stop, settings.ready_timeout_s)
        if code == 0 and not stop.is_set():
            _print_exports(settings, first_key)
            code = await supervisor.supervise(stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        _say("stopping")
        await supervisor.stop(settings.grace_s)
        # the token is worthless now; Envoy leaves its admin socket behind
        (settings.run_dir / TOKEN_FILE).unlink(missing_ok=True)
        _remove_admin_socket(settings)
        _say("stopped")
    return code


def _serving(target: str) -> Callable[[], Awaitable[None]]:
    return lambda: wait_grpc_serving(target)


def _remove_admin_socket(settings: UpSettings) -> None:
    if isinstance(settings.admin, UnixSocket):
        settings.admin.path.unlink(missing_ok=True)


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
            _say(exit_text(child))
            return 1
    _say(f"not ready after {timeout_s:g} s; see the output above")
    return 1


def _print_exports(settings: UpSettings, first_key: str | None) -> None:
    url = f"http://{settings.listen}"
    values = MappingProxyType(
        {
            "E2B_API_URL": url,
            "E2B_SANDBOX_URL": url,
            # the SDKs send volume content calls here (else to https://api.<domain>)
            "E2B_VOLUME_API_URL": url,
            "E2B_DOMAIN": settings.domain,
        }
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


def prepare_run_dir(run_dir: Path) -> None:
    """Create `run_dir` (and the state directory) private to this user: mode 0700.

    Raises ValueError when it is not a directory of ours: the sockets and the caller token
    in it are what keeps every other local user, and every sandbox, off the control plane.
    """
    run_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        run_dir.mkdir(mode=0o700)
    info = run_dir.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise ValueError(f"{run_dir} is not a directory")
    if info.st_uid != os.getuid():
        raise ValueError(
            f"{run_dir} belongs to uid {info.st_uid}, not to this user ({os.getuid()}); "
            "remove it or choose another --state-dir"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        run_dir.chmod(0o700)


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


def admin_client(admin: Endpoint, timeout_s: float = 1.0) -> httpx.AsyncClient:
    """An HTTP client of Envoy's admin interface, over its unix socket or TCP."""
    if isinstance(admin, UnixSocket):
        transport = httpx.AsyncHTTPTransport(uds=str(admin.path))
        return httpx.AsyncClient(transport=transport, base_url="http://envoy", timeout=timeout_s)
    return httpx.AsyncClient(base_url=f"http://{admin}", timeout=timeout_s)


async def wait_envoy_ready(admin: Endpoint, edges: int) -> None:
    """Until Envoy's admin `/ready` answers 200 and its health checks pass on all `edges`
    endpoints, so that the first requests are balanced over every edge (Envoy has no push
    signal for either)."""
    healthy = f"cluster.{EDGE_CLUSTER}.membership_healthy: {edges}"
    async with admin_client(admin) as client:
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
