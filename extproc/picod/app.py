"""The picod ASGI app: CORS, then auth, then a router over envd's routes.

Connect services are mounted by path prefix (connectrpc's ASGI apps), the small envd
HTTP endpoints are answered here (`/init` also binds a warm-pool picod to its sandbox:
binding.py), and the filesystem service and `/files` come from their own modules. Every
error is JSON: Connect error JSON on RPC routes (connectrpc), `{"code": <int>, "message":
...}` everywhere else, as envd answers.

The filesystem service and `/files` are built on their first request: their imports
(filesystem messages, inotify, multipart) are a third of picod's start-up work, and
start-to-serving is on every sandbox's create path while many sandboxes never touch a
file. Building them is synchronous, so two first requests cannot build twice.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from extproc._gen.process.process_connect import ProcessASGIApplication
from extproc.core import asgi, errors
from extproc.picod.auth import BIND_SESSION, AuthMiddleware
from extproc.picod.binding import Binding
from extproc.picod.environment import Environment
from extproc.picod.measuring import Meter, parse_window
from extproc.picod.processes import CLIENT_WATCH, ClientWatch, ProcessService, ProcessTable
from extproc.picod.rpc_errors import (
    ErrorMappingInterceptor,
    codecs,
    compressions,
    guard_envelopes,
)
from extproc.picod.settings import PicodSettings

if TYPE_CHECKING:
    from extproc.picod.files import FilesEndpoint
    from extproc.picod.filesystem import FilesystemService

INIT_MAX_BYTES = 1024 * 1024
# envd's small HTTP endpoints and the one method each answers.
_METHODS = {"/health": "GET", "/envs": "GET", "/metrics": "GET", "/init": "POST"}
CORS_EXPOSE = (
    b"Connect-Protocol-Version, Connect-Content-Encoding, Connect-Accept-Encoding, "
    b"Grpc-Status, Grpc-Message, Grpc-Status-Details-Bin, X-Envd-Version"
)


# How a refused bind answers /init.
_BIND_STATUS: list[tuple[type[errors.DomainError], int]] = [
    (errors.InvalidArgument, 400),
    (errors.Unauthenticated, 401),
    (errors.Conflict, 409),
    (errors.Unavailable, 503),
]


class Router:
    def __init__(self, settings: PicodSettings, binding: Binding) -> None:
        self.settings = settings
        self.binding = binding
        self.environment = Environment.from_settings(settings)
        self.processes = ProcessTable()
        self.meter = Meter(settings.home, settings.metrics_interval_s, settings.metrics_max_samples)
        self._process_rpc = ProcessASGIApplication(
            ProcessService(self.environment, self.processes), **self._rpc_options()
        )
        self._filesystem: FilesystemService | None = None
        self._filesystem_rpc: asgi.ASGIApp | None = None
        self._files: FilesEndpoint | None = None

    def _rpc_options(self) -> dict[str, Any]:
        return {
            "interceptors": [ErrorMappingInterceptor()],
            "read_max_bytes": self.settings.max_message_bytes,
            "codecs": codecs(),
            "compressions": compressions(),
        }

    def filesystem_rpc(self) -> asgi.ASGIApp:
        """The `filesystem.Filesystem` Connect app, built on first use."""
        if self._filesystem_rpc is None:
            from extproc._gen.filesystem.filesystem_connect import FilesystemASGIApplication
            from extproc.picod.filesystem import FilesystemService

            self._filesystem = FilesystemService(self.settings, self.environment)
            self._filesystem_rpc = FilesystemASGIApplication(
                self._filesystem, **self._rpc_options()
            )
        return self._filesystem_rpc

    def files(self) -> FilesEndpoint:
        """The `/files` endpoint, built on first use."""
        if self._files is None:
            from extproc.picod.files import FilesEndpoint

            self._files = FilesEndpoint(self.settings, self.environment, self.binding)
        return self._files

    def close(self) -> None:
        """Release what outlives requests: the metrics sampler, the filesystem service's
        polled watchers."""
        self.meter.close()
        if self._filesystem is not None:
            self._filesystem.close()

    async def __call__(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path.startswith("/process.Process/"):
            await self._rpc(self._process_rpc, scope, receive, send)
        elif path.startswith("/filesystem.Filesystem/"):
            await self._rpc(self.filesystem_rpc(), scope, receive, send)
        elif path == "/files":
            await self.files()(scope, receive, send)
        elif path in _METHODS:
            allowed = _METHODS[path]
            if method != allowed and not (method == "HEAD" and allowed == "GET"):
                await asgi.send_error(
                    send, 405, f"method {method} is not allowed here; use {allowed}"
                )
            elif path == "/health":
                await asgi.respond(send, 204)
            elif path == "/envs":
                await asgi.send_json(send, 200, self.environment.env_vars)
            elif path == "/metrics":
                await self._metrics(scope, send)
            else:
                await self._init(scope, receive, send)
        else:
            await asgi.send_error(send, 404, "no such route")

    async def _metrics(self, scope: asgi.Scope, send: asgi.Send) -> None:
        """Without a query, the sample taken now (what older lifecycle services read); with
        `start`, `end` or `series=1`, `{"samples": [...]}` from the kept series (measuring.py)."""
        try:
            window = parse_window(scope.get("query_string", b""))
        except errors.InvalidArgument as e:
            await asgi.send_error(send, 400, e.message)
            return
        if window is None:
            await asgi.send_json(send, 200, self.meter.current().as_json())
        else:
            samples = self.meter.window(*window)
            await asgi.send_json(send, 200, {"samples": [s.as_json() for s in samples]})

    async def _rpc(
        self, app: asgi.ASGIApp, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send
    ) -> None:
        watch = ClientWatch()

        async def watched() -> asgi.Message:
            message = await receive()
            if message["type"] == "http.disconnect":
                watch.mark_gone()
            return message

        scope["headers"] = _utf8_headers(scope["headers"])
        content_type = dict(scope["headers"]).get(b"content-type", b"")
        streaming = content_type.startswith((b"application/connect+", b"application/grpc"))
        CLIENT_WATCH.set(watch)
        limit = self.settings.max_message_bytes
        await app(scope, guard_envelopes(watched, limit) if streaming else watched, send)

    async def _lifespan(self, receive: asgi.Receive, send: asgi.Send) -> None:
        """For ASGI servers run with lifespan on (picod's own server calls `close`)."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _init(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        """envd's `/init`: bind the sandbox (see binding.py), then apply the environment."""
        try:
            body = await asgi.read_body(receive, INIT_MAX_BYTES)
        except asgi.BodyTooLarge:
            await asgi.send_error(send, 413, "request body too large")
            return
        except asgi.ClientDisconnected:
            return
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            await asgi.send_error(send, 400, "body must be JSON")
            return
        env_vars = request.get("envVars") if isinstance(request, dict) else None
        user = request.get("defaultUser") if isinstance(request, dict) else None
        workdir = request.get("defaultWorkdir") if isinstance(request, dict) else None
        token = request.get("accessToken") if isinstance(request, dict) else None
        if not (
            isinstance(request, dict)
            and (env_vars is None or _is_str_map(env_vars))
            and (user is None or isinstance(user, str))
            and (workdir is None or (isinstance(workdir, str) and workdir.startswith("/")))
            and (token is None or isinstance(token, str))
        ):
            await asgi.send_error(
                send,
                400,
                "expected {envVars?: {str: str}, accessToken?: str, defaultUser?: str, "
                "defaultWorkdir?: abs path}",
            )
            return
        session = scope.get("state", {}).get(BIND_SESSION)
        if self.settings.no_auth:
            token = None  # serving without auth was asked for explicitly; /init cannot undo it
        try:
            self.binding.bind(session, token)
        except errors.DomainError as e:
            status = next((s for kind, s in _BIND_STATUS if isinstance(e, kind)), 500)
            await asgi.send_error(send, status, e.message)
            return
        self.environment.apply_init(env_vars or {}, user, workdir)
        await asgi.respond(
            send, 204, headers=((b"x-envd-version", self.settings.envd_version.encode()),)
        )


def _utf8_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Header values as UTF-8, which connectrpc decodes them as (an error would be a 500).

    HTTP allows any byte above 0x7f in a value (obs-text, Latin-1 by tradition); a value
    that is not valid UTF-8 is re-encoded from Latin-1, so its bytes still mean the same.
    """
    fixed = headers
    for i, (name, value) in enumerate(headers):
        try:
            value.decode()
        except UnicodeDecodeError:
            if fixed is headers:
                fixed = list(headers)
            fixed[i] = (name, value.decode("latin-1").encode())
    return fixed


def _is_str_map(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


class CorsMiddleware:
    """envd's CORS: every origin, method and header; Connect headers exposed."""

    def __init__(self, app: asgi.ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            allow_headers = headers.get(b"access-control-request-headers", b"*")
            await asgi.respond(
                send,
                204,
                headers=(
                    (b"access-control-allow-origin", b"*"),
                    (b"access-control-allow-methods", b"GET, POST, PUT, DELETE, OPTIONS"),
                    (b"access-control-allow-headers", allow_headers),
                    (b"access-control-max-age", b"7200"),
                ),
            )
            return

        async def with_cors(message: asgi.Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"access-control-allow-origin", b"*"),
                    (b"access-control-expose-headers", CORS_EXPOSE),
                ]
            await send(message)

        await self._app(scope, receive, with_cors)


class Picod:
    """The whole ASGI app; `.processes` and `.close()` are for the server's shutdown."""

    def __init__(self, settings: PicodSettings, binding: Binding | None = None) -> None:
        if binding is None:
            binding = Binding.load(settings.sandbox_id, settings.access_token, settings.state_dir)
        self.binding = binding
        self.router = Router(settings, binding)
        self.environment = self.router.environment
        self.processes = self.router.processes
        self._asgi = CorsMiddleware(AuthMiddleware(self.router, settings, binding))

    def close(self) -> None:
        self.router.close()

    async def __call__(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        await self._asgi(scope, receive, send)


def build_app(settings: PicodSettings, binding: Binding | None = None) -> Picod:
    """The app; `binding` defaults to the one `settings` and their state directory give."""
    return Picod(settings, binding)
