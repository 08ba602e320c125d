"""The sandbox directory: sandbox id -> where its ports listen and who may reach it (a `Route`).

Pure data, fed by the lifecycle watcher (watching.py) or, in Kubernetes mode, by the
cluster informers (cluster_watching.py), corrected at once by the platform API's own replies
(a pause, a kill, a new timeout: sandbox_api.py), and read by the Check decision. Paused
sandboxes stay in the map, so a request to one is answered as paused (or resumes it), never
routed to a stopped daemon. Observers (the fast path) hear of every change, synchronously,
so nothing can read the new state before they do. The
map is mutated in place: all readers and the one writer run on the same event loop, and
Check never awaits between reading a route and using it, so no reader sees a half-applied
event, and copying a 10k-entry map per event would cost far more than it protects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb


@dataclass(frozen=True, slots=True)
class Route:
    sandbox_id: str
    # IP the sandbox's ports listen on ("" until routable).
    endpoint_host: str
    tenant: str
    state: int  # pb.SandboxState value
    # envd's X-Access-Token; checked on port 49983 when `secure`.
    envd_access_token: str
    secure: bool
    # Unix seconds when the sandbox ends; 0 when unknown.
    end_at: float
    # Kubernetes mode: sha256 digest of the envd token (the API stores no token). When set, it
    # is what X-Access-Token is checked against, and `envd_access_token` is "".
    access_token_sha256: bytes = b""
    # E2B's network.allowPublicTraffic. When False, every port but envd's needs
    # E2B-Traffic-Access-Token equal to `traffic_access_token` (an empty one matches nothing).
    public_traffic: bool = True
    traffic_access_token: str = ""
    # E2B's autoResume: a request that may reach the sandbox resumes it while it is paused.
    auto_resume: bool = False
    # Kubernetes mode: the ports E2B traffic may reach (envd's included), from the
    # CodeInterpreter's `ports`; None: every port, as E2B.
    open_ports: frozenset[int] | None = None

    @property
    def running(self) -> bool:
        return self.state == pb.SANDBOX_STATE_RUNNING and bool(self.endpoint_host)

    @property
    def paused(self) -> bool:
        return self.state == pb.SANDBOX_STATE_PAUSED


def route_from_proto(sandbox: pb.Sandbox) -> Route:
    end_at = (
        sandbox.end_at.seconds + sandbox.end_at.nanos / 1e9 if sandbox.HasField("end_at") else 0.0
    )
    return Route(
        sandbox_id=sandbox.sandbox_id,
        endpoint_host=sandbox.endpoint_host,
        tenant=sandbox.tenant,
        state=sandbox.state,
        envd_access_token=sandbox.envd_access_token,
        secure=sandbox.secure and bool(sandbox.envd_access_token),
        end_at=end_at,
        # Absent (a lifecycle from before the field) means public, as E2B's default.
        public_traffic=sandbox.allow_public_traffic
        if sandbox.HasField("allow_public_traffic")
        else True,
        traffic_access_token=sandbox.traffic_access_token,
        auto_resume=sandbox.auto_resume,
    )


class Directory:
    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        # called after each change with the sandbox id, or None when everything was replaced
        self._observers: list[Callable[[str | None], None]] = []

    def observe(self, observer: Callable[[str | None], None]) -> None:
        self._observers.append(observer)

    def _changed(self, sandbox_id: str | None) -> None:
        for observer in self._observers:
            observer(sandbox_id)

    def get(self, sandbox_id: str) -> Route | None:
        return self._routes.get(sandbox_id)

    def put(self, route: Route) -> None:
        if route.state == pb.SANDBOX_STATE_ENDED:
            self._routes.pop(route.sandbox_id, None)
        else:
            self._routes[route.sandbox_id] = route
        self._changed(route.sandbox_id)

    def remove(self, sandbox_id: str) -> None:
        self._routes.pop(sandbox_id, None)
        self._changed(sandbox_id)

    def routes(self) -> list[Route]:
        """Every route, as a list the directory's later changes leave alone."""
        return list(self._routes.values())

    def replace_all(self, routes: dict[str, Route]) -> None:
        self._routes = routes
        self._changed(None)

    def ids(self) -> list[str]:
        return list(self._routes)

    def __len__(self) -> int:
        return len(self._routes)
