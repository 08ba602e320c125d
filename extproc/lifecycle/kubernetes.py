"""The kubernetes backend: E2B sandboxes as agent-sandbox Sandboxes (or SandboxClaims on a
CodeInterpreter's warm pool), templates as CodeInterpreters, the tenant as the namespace.

Reads (Get, List, Watch) come from two informers, Sandboxes labelled
`app.kubernetes.io/managed-by=agentcube-e2b` and pods labelled `e2b.agentcube.io/sandbox-id`,
joined by the sandbox-id label into `_sandboxes`, the announced sandboxes. A sandbox is
announced (and CREATED published) by the Create that made it once picod answers, or, for one
another replica made, when the informers first see its pod Ready; the ones present at the
first sync are the snapshot. Writes go straight to the API; the backend updates its index and
publishes the event when the write succeeds, and the informer's echo of it changes nothing.

Expiry: a Reaper on the end-at annotation deletes the CR itself (agent-sandbox's
shutdownTime is the same instant but is not relied on, and a claim has none); a sandbox
whose CR disappears after its end-at, by whoever's hand, is reported EXPIRED, else KILLED.

Unsupported, with UNIMPLEMENTED: Pause/Resume and `on_timeout=pause` (a pod cannot be
frozen and resumed through agent-sandbox), template writes (CodeInterpreters are applied
with kubectl). Metrics come from picod's own GET /metrics on the pod IP (the access token
authorises it), so metrics.k8s.io is not needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import httpx

from extproc.core import timeouts
from extproc.core.errors import (
    DeadlineExceeded,
    DomainError,
    InvalidArgument,
    NotFound,
    Unavailable,
    Unimplemented,
)  # fmt: skip
from extproc.core.ids import check_sandbox_id, new_sandbox_id
from extproc.core.tokens import access_token
from extproc.k8s.identity import load_or_create_identity, load_or_create_seed
from extproc.k8s.informing import Informer, run_informers
from extproc.k8s.listwatch import KubeObject
from extproc.k8s.resources import CODE_INTERPRETER, POD, SANDBOX, SANDBOX_CLAIM, Resources
from extproc.k8s.settings import InformerSettings
from extproc.lifecycle import listing
from extproc.lifecycle import manifests as m
from extproc.lifecycle.reaping import Clock, Reaper
from extproc.lifecycle.sandboxes import (
    CreateSpec,
    Event,
    EventType,
    ListQuery,
    Metric,
    OnTimeout,
    Page,
    Sandbox,
    State,
)  # fmt: skip
from extproc.lifecycle.settings import KubernetesSettings
from extproc.lifecycle.templates import Template
from extproc.lifecycle.validation import check_env_vars, check_metadata
from extproc.lifecycle.watching import Hub

log = logging.getLogger(__name__)
POD_NAME_ANNOTATION = "agents.x-k8s.io/pod-name"  # agent-sandbox, on warm-pool Sandboxes
_NO_PRIVATE_TRAFFIC = (
    "network.allowPublicTraffic: false is not supported by the kubernetes backend yet"
)
_NO_PAUSE = ("pausing is not available with the kubernetes backend (agent-sandbox pods "
             "cannot be frozen and resumed); use on_timeout=kill")  # fmt: skip
_NO_TEMPLATE_WRITES = ("templates are CodeInterpreter resources in Kubernetes mode; create, "
                       "change or delete them with kubectl in the tenant's namespace")  # fmt: skip


def _sandbox_id(obj: KubeObject) -> str:
    return str(((obj.get("metadata") or {}).get("labels") or {}).get(m.LABEL_ID) or "")


class _Join:
    """Informer handler: keeps id -> object for one kind and tells the backend."""

    def __init__(self, objects: dict[str, KubeObject], changed: Callable[[str], None]) -> None:
        self._objects = objects
        self._changed = changed

    def on_add(self, obj: KubeObject) -> None:
        self.on_update(obj, obj)

    def on_update(self, old: KubeObject, new: KubeObject) -> None:
        sandbox_id = _sandbox_id(new)
        if sandbox_id:
            self._objects[sandbox_id] = new
            self._changed(sandbox_id)

    def on_delete(self, obj: KubeObject) -> None:
        sandbox_id = _sandbox_id(obj)
        if sandbox_id and self._objects.get(sandbox_id, {}).get("metadata", {}).get("name") == (
            obj.get("metadata") or {}
        ).get("name"):
            del self._objects[sandbox_id]
            self._changed(sandbox_id)


class KubernetesBackend:
    def __init__(
        self,
        settings: KubernetesSettings,
        api: Resources,
        *,
        informer_settings: InformerSettings | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.settings = settings
        self.api = api
        self.clock = clock
        self.seed = b""
        self.public_key_pem = ""
        self.hub = Hub()
        self._crs: dict[str, KubeObject] = {}
        self._pods: dict[str, KubeObject] = {}
        self._sandboxes: dict[str, Sandbox] = {}
        self._creating: set[str] = set()
        self._ending: set[str] = set()  # deleted by us, event published; informer echo ignored
        self._locks: dict[str, asyncio.Lock] = {}
        self._synced = False
        self.reaper = Reaper(clock, self._end_at_of, self._expire)
        informing = informer_settings or InformerSettings()
        self.sandbox_informer = Informer(
            api.watch_target(SANDBOX, f"{m.MANAGED_BY}={m.MANAGER}"), informing,
            [_Join(self._crs, self._changed)],
        )  # fmt: skip
        self.pod_informer = Informer(
            api.watch_target(POD, m.LABEL_ID), informing, [_Join(self._pods, self._changed)]
        )
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(5.0), trust_env=False)

    # -- start and stop -------------------------------------------------------------------

    async def start(self) -> list[asyncio.Task[None]]:
        ns, settings = self.settings.namespace, self.settings
        self.seed = await load_or_create_seed(self.api, ns, settings.seed_secret)
        identity = await load_or_create_identity(self.api, ns, settings.identity_secret)
        self.public_key_pem = identity.public_pem.decode()
        informers = asyncio.create_task(
            run_informers([self.sandbox_informer, self.pod_informer]), name="lifecycle-informers"
        )
        for informer in (self.sandbox_informer, self.pod_informer):
            await asyncio.wait(
                [asyncio.ensure_future(informer.synced.wait()), informers],
                return_when=asyncio.FIRST_COMPLETED,
            )
        if informers.done():
            informers.result()  # raises what ended them
        for sandbox_id in list(self._crs):
            self._announce(sandbox_id, publish=False)
        self._synced = True
        log.info("kubernetes backend synced: %d sandboxes", len(self._sandboxes))
        reaper = asyncio.create_task(self.reaper.run(), name="lifecycle-reaper")
        return [informers, reaper]

    async def close(self) -> None:
        await self._http.aclose()
        self.api.close()

    # -- the index ------------------------------------------------------------------------

    def _view(self, sandbox_id: str) -> Sandbox | None:
        cr = self._crs.get(sandbox_id)
        if cr is None:
            return None
        token = access_token(self.seed, sandbox_id)
        return m.sandbox_of(cr, self._pods.get(sandbox_id), token)

    def _announce(self, sandbox_id: str, *, publish: bool) -> None:
        view = self._view(sandbox_id)
        if view is None:
            return
        self._sandboxes[sandbox_id] = view
        self.reaper.schedule(sandbox_id, view.end_at)
        if publish:
            self.hub.publish(EventType.CREATED, view)

    def _changed(self, sandbox_id: str) -> None:
        """An informer changed the CR or pod of `sandbox_id` (loop thread, no awaits)."""
        if not self._synced or sandbox_id in self._creating:
            return
        if sandbox_id in self._ending:
            if sandbox_id not in self._crs:
                self._ending.discard(sandbox_id)
            return
        old = self._sandboxes.get(sandbox_id)
        view = self._view(sandbox_id)
        if view is None:
            if old is not None:
                del self._sandboxes[sandbox_id]
                self._locks.pop(sandbox_id, None)
                expired = old.end_at <= self.clock()
                ended = replace(old, state=State.ENDED, end_at=min(old.end_at, self.clock()),
                                end_reason="expired" if expired else "killed")  # fmt: skip
                self.hub.publish(EventType.EXPIRED if expired else EventType.KILLED, ended)
            return
        if old is None:
            if view.state is State.RUNNING:  # made by another replica: announce when usable
                self._announce(sandbox_id, publish=True)
            return
        view = replace(view, env_vars=old.env_vars)
        if (view.end_at, view.state, view.endpoint_host, view.metadata) != (
            old.end_at, old.state, old.endpoint_host, old.metadata
        ):  # fmt: skip
            self._sandboxes[sandbox_id] = view
            self.reaper.schedule(sandbox_id, view.end_at)
            self.hub.publish(EventType.UPDATED, view)

    def _end_at_of(self, sandbox_id: str) -> float | None:
        sandbox = self._sandboxes.get(sandbox_id)
        return sandbox.end_at if sandbox is not None else None

    def _find(self, sandbox_id: str, tenant: str) -> Sandbox:
        check_sandbox_id(sandbox_id)
        sandbox = self._sandboxes.get(sandbox_id)
        # Another tenant's sandbox is indistinguishable from a missing one.
        if sandbox is None or (tenant and sandbox.tenant != tenant):
            raise NotFound(f"sandbox {sandbox_id} not found")
        return sandbox

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    # -- create ---------------------------------------------------------------------------

    async def _code_interpreter(self, name: str, namespace: str) -> KubeObject:
        try:
            return await self.api.get(CODE_INTERPRETER, namespace, name)
        except NotFound:
            raise NotFound(f"template {name[:80]!r} not found") from None

    async def create(self, spec: CreateSpec) -> Sandbox:
        self._require_tenant(spec.tenant)
        if spec.on_timeout is OnTimeout.PAUSE or spec.auto_resume:
            raise Unimplemented(_NO_PAUSE)
        if not spec.allow_public_traffic:
            # The edge's cluster directory routes from Sandbox/Pod informers and does not read
            # a traffic-token annotation yet; accepting the flag would leave the ports open.
            raise Unimplemented(_NO_PRIVATE_TRAFFIC)
        metadata = check_metadata(spec.metadata)
        env = check_env_vars(spec.env_vars)
        m.picod_env_lines(env)  # refuses what picod could not receive
        ns = spec.tenant
        ci = await self._code_interpreter(spec.template, ns)
        warm = m.warm_pool_size(ci) > 0
        if warm and env:
            raise InvalidArgument(
                f"template {spec.template!r} is served from a warm pool whose pods are started "
                "before a sandbox exists, so envVars cannot reach them; create without envVars "
                "or use a CodeInterpreter without warmPoolSize"
            )
        sandbox_id = new_sandbox_id()
        token = access_token(self.seed, sandbox_id)
        started = float(int(self.clock()))
        end_at = float(int(started + spec.timeout_s))
        object_labels = m.labels(sandbox_id, spec.template)
        notes = m.sandbox_annotations(
            started_at=started, end_at=end_at, metadata=metadata, alias="",
            on_timeout=spec.on_timeout, token=token,
        )  # fmt: skip
        created: list[tuple[str, str]] = []  # ("sandbox"|"claim", name) to roll back
        self._creating.add(sandbox_id)
        try:
            async with asyncio.timeout(self.settings.ready_timeout_s):
                if warm:
                    claim = m.claim_object(ci, sandbox_id=sandbox_id, namespace=ns,
                                           object_labels=object_labels,
                                           object_annotations=notes)  # fmt: skip
                    await self.api.create(SANDBOX_CLAIM, ns, claim)
                    created.append(("claim", m.object_name(sandbox_id)))
                    await self._adopt_claimed(ns, sandbox_id, object_labels, notes, end_at)
                else:
                    body = m.sandbox_object(
                        ci, sandbox_id=sandbox_id, namespace=ns, token=token,
                        public_key_pem=self.public_key_pem, env_vars=env,
                        object_labels=object_labels, object_annotations=notes, end_at=end_at,
                    )  # fmt: skip
                    await self.api.create(SANDBOX, ns, body)
                    created.append(("sandbox", m.object_name(sandbox_id)))
                host = await self._wait_pod_ready(sandbox_id)
                await self._wait_picod(host)
        except TimeoutError:
            await self._roll_back(ns, sandbox_id, created)
            raise DeadlineExceeded(
                f"sandbox {sandbox_id} from template {spec.template!r} was not ready within "
                f"{self.settings.ready_timeout_s:g} s (pod Ready with an IP, then picod's "
                "/health); it was deleted"
            ) from None
        except BaseException:
            await self._roll_back(ns, sandbox_id, created)
            raise
        self._creating.discard(sandbox_id)
        sandbox = self._view(sandbox_id) or m.sandbox_of(
            {"metadata": {"name": m.object_name(sandbox_id), "namespace": ns,
                          "labels": object_labels, "annotations": notes}},
            self._pods.get(sandbox_id), token,
        )  # fmt: skip
        assert sandbox is not None  # our own labels are on it
        sandbox = replace(sandbox, env_vars=env, endpoint_host=host, state=State.RUNNING,
                          started_at=started, end_at=end_at)  # fmt: skip
        self._sandboxes[sandbox_id] = sandbox
        self.reaper.schedule(sandbox_id, end_at)
        self.hub.publish(EventType.CREATED, sandbox)
        return sandbox

    async def _adopt_claimed(
        self, ns: str, sandbox_id: str, object_labels: dict[str, str], notes: dict[str, str],
        end_at: float,
    ) -> None:  # fmt: skip
        """Wait for the warm pool to bind the claim, then put our labels and annotations on
        the bound Sandbox and its pod (the edge and our informers find them by label)."""
        claim_name = m.object_name(sandbox_id)
        while True:
            claim = await self.api.get(SANDBOX_CLAIM, ns, claim_name)
            bound = m.claimed_sandbox_name(claim)
            if bound:
                break
            await asyncio.sleep(self.settings.claim_poll_s)
        patch = m.timeout_patch(end_at)
        patch["metadata"] = {"labels": object_labels,
                             "annotations": {**notes, m.CLAIM: claim_name}}  # fmt: skip
        sandbox = await self.api.patch(SANDBOX, ns, bound, patch)
        pod_name = ((sandbox.get("metadata") or {}).get("annotations") or {}).get(
            POD_NAME_ANNOTATION
        ) or bound
        await self.api.patch(POD, ns, pod_name, {"metadata": {"labels": object_labels}})

    async def _wait_pod_ready(self, sandbox_id: str) -> str:
        await self.pod_informer.wait_for(lambda _: bool(m.pod_ready(self._pods.get(sandbox_id))))
        return m.pod_ready(self._pods.get(sandbox_id))

    def _picod_url(self, host: str, path: str) -> str:
        return f"{self.settings.picod_scheme}://{host}:{self.settings.picod_port}{path}"

    async def _wait_picod(self, host: str) -> None:
        delay = 0.05
        while True:
            with contextlib.suppress(httpx.HTTPError):
                response = await self._http.get(self._picod_url(host, "/health"))
                if response.is_success:
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _roll_back(self, ns: str, sandbox_id: str, created: list[tuple[str, str]]) -> None:
        """Delete what this Create made; shielded, so a cancelled RPC still cleans up."""

        async def delete_all() -> None:
            for kind, name in reversed(created):
                try:
                    await self.api.delete(SANDBOX_CLAIM if kind == "claim" else SANDBOX, ns, name)
                except NotFound:
                    pass
                except DomainError as error:
                    log.error("rollback of %s %s/%s failed: %s", kind, ns, name, error)

        try:
            await asyncio.shield(delete_all())
        finally:
            self._creating.discard(sandbox_id)
            self._ending.add(sandbox_id)
            if sandbox_id not in self._crs:
                self._ending.discard(sandbox_id)

    # -- ending ---------------------------------------------------------------------------

    async def _delete(self, sandbox: Sandbox, event: EventType, reason: str) -> None:
        cr = self._crs.get(sandbox.sandbox_id) or {}
        claim = ((cr.get("metadata") or {}).get("annotations") or {}).get(m.CLAIM)
        try:
            if claim:
                await self.api.delete(SANDBOX_CLAIM, sandbox.tenant, claim)
            else:
                await self.api.delete(SANDBOX, sandbox.tenant, m.object_name(sandbox.sandbox_id))
        except NotFound:
            pass  # already gone: the informer's delete event may still be on its way
        if self._sandboxes.pop(sandbox.sandbox_id, None) is None:
            return  # the informer reported it first
        if sandbox.sandbox_id in self._crs:
            self._ending.add(sandbox.sandbox_id)
        ended = replace(sandbox, state=State.ENDED, end_at=min(sandbox.end_at, self.clock()),
                        end_reason=reason)  # fmt: skip
        self.hub.publish(event, ended)

    async def kill(self, sandbox_id: str, tenant: str) -> None:
        sandbox = self._find(sandbox_id, tenant)
        async with self._lock(sandbox_id):
            await self._delete(sandbox, EventType.KILLED, "killed")

    async def _expire(self, sandbox_id: str) -> None:
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None:
            return
        async with self._lock(sandbox_id):
            sandbox = self._sandboxes.get(sandbox_id)
            if sandbox is not None and sandbox.end_at <= self.clock():
                await self._delete(sandbox, EventType.EXPIRED, "expired")

    # -- reading --------------------------------------------------------------------------

    async def get(self, sandbox_id: str, tenant: str) -> Sandbox:
        return self._find(sandbox_id, tenant)

    async def list_sandboxes(self, query: ListQuery) -> Page:
        return listing.page(self._sandboxes.values(), query, lambda name: {name})

    def watch(self) -> AsyncIterator[Event]:
        return self.hub.watch(lambda: list(self._sandboxes.values()))

    async def metrics(self, sandbox_id: str, tenant: str) -> list[Metric]:
        sandbox = self._find(sandbox_id, tenant)
        if not sandbox.endpoint_host:
            return []
        try:
            response = await self._http.get(
                self._picod_url(sandbox.endpoint_host, "/metrics"),
                headers={"X-Access-Token": sandbox.envd_access_token},
            )
            response.raise_for_status()
            doc = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise Unavailable(f"sandbox {sandbox_id}: picod /metrics failed") from error
        return [Metric(
            timestamp=float(doc.get("ts") or self.clock()),
            cpu_count=int(doc.get("cpu_count") or 0), cpu_used_pct=float(doc.get("cpu_used_pct")
            or 0.0), mem_used=int(doc.get("mem_used") or 0), mem_total=int(doc.get("mem_total")
            or 0), mem_cache=int(doc.get("mem_cache") or 0),
            disk_used=int(doc.get("disk_used") or 0), disk_total=int(doc.get("disk_total") or 0),
        )]  # fmt: skip

    # -- timeouts -------------------------------------------------------------------------

    async def _patch_end(self, sandbox: Sandbox, end_at: float) -> Sandbox:
        end_at = float(int(end_at))
        if end_at == sandbox.end_at:
            return sandbox
        name = str((self._crs.get(sandbox.sandbox_id) or {}).get("metadata", {}).get("name")
                   or m.object_name(sandbox.sandbox_id))  # fmt: skip
        try:
            await self.api.patch(SANDBOX, sandbox.tenant, name, m.timeout_patch(end_at))
        except NotFound:
            raise NotFound(f"sandbox {sandbox.sandbox_id} not found") from None
        current = self._sandboxes.get(sandbox.sandbox_id)
        if current is None:
            raise NotFound(f"sandbox {sandbox.sandbox_id} not found")
        if current.end_at == end_at:
            return current  # the patch's watch event got here first and announced it
        updated = replace(current, end_at=end_at)
        self._sandboxes[sandbox.sandbox_id] = updated
        self.reaper.schedule(sandbox.sandbox_id, end_at)
        self.hub.publish(EventType.UPDATED, updated)
        return updated

    @staticmethod
    def _require_tenant(tenant: str) -> None:
        if not tenant:
            raise InvalidArgument("tenant is required")

    async def set_timeout(self, sandbox_id: str, tenant: str, timeout_s: int) -> Sandbox:
        self._require_tenant(tenant)
        self._find(sandbox_id, tenant)
        async with self._lock(sandbox_id):
            s = self._find(sandbox_id, tenant)
            end_at = timeouts.set_end_at(
                self.clock(), s.started_at, timeout_s, self.settings.max_timeout_s
            )
            return await self._patch_end(s, end_at)

    async def _extend(self, sandbox_id: str, tenant: str, timeout_s: int | None) -> Sandbox:
        self._require_tenant(tenant)
        self._find(sandbox_id, tenant)
        async with self._lock(sandbox_id):
            s = self._find(sandbox_id, tenant)
            end_at = timeouts.extend_end_at(
                self.clock(), s.started_at, s.end_at, timeout_s, self.settings.max_timeout_s
            )
            return await self._patch_end(s, end_at)

    async def refresh(self, sandbox_id: str, tenant: str, duration_s: int | None) -> Sandbox:
        return await self._extend(sandbox_id, tenant, duration_s)

    async def connect(
        self, sandbox_id: str, tenant: str, timeout_s: int | None
    ) -> tuple[Sandbox, bool]:
        return await self._extend(sandbox_id, tenant, timeout_s), False

    async def pause(self, sandbox_id: str, tenant: str) -> Sandbox:
        self._find(sandbox_id, tenant)
        raise Unimplemented(_NO_PAUSE)

    async def resume(self, sandbox_id: str, tenant: str, timeout_s: int | None) -> Sandbox:
        self._find(sandbox_id, tenant)
        raise Unimplemented(_NO_PAUSE)

    # -- templates ------------------------------------------------------------------------

    async def list_templates(self, tenant: str) -> list[Template]:
        self._require_tenant(tenant)
        return [m.template_of(ci) for ci in await self.api.list(CODE_INTERPRETER, tenant)]

    async def get_template(self, template: str, tenant: str) -> Template:
        self._require_tenant(tenant)
        return m.template_of(await self._code_interpreter(template, tenant))

    async def create_template(self, tenant: str, template: Template) -> Template:
        raise Unimplemented(_NO_TEMPLATE_WRITES)

    async def update_template(self, tenant: str, template_id: str, public: bool) -> Template:
        raise Unimplemented(_NO_TEMPLATE_WRITES)

    async def delete_template(self, tenant: str, template_id: str) -> None:
        raise Unimplemented(_NO_TEMPLATE_WRITES)
