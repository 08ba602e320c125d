"""The kubernetes backend: E2B sandboxes as agent-sandbox Sandboxes (or SandboxClaims on a
CodeInterpreter's warm pool), templates as CodeInterpreters, the tenant as the namespace.

Versions: API discovery at start picks v1beta1 where agent-sandbox serves it, else v1alpha1
(k8s/discovery.py says why). Every write is sent with `fieldValidation=Strict`.

Reads (Get, List, Watch) come from two informers, Sandboxes labelled
`app.kubernetes.io/managed-by=agentcube-e2b` and pods labelled `e2b.agentcube.io/sandbox-id`.
Only Sandboxes with a valid proof of origin (k8s/object_proof.py: an HMAC over namespace,
name and id under a key only we hold) count, so a tenant who copies another's id label onto
a Sandbox of its own changes nothing: not the victim's token, routing or listing. A pod
belongs to a sandbox when it is the pod agent-sandbox runs for that Sandbox (same namespace,
the Sandbox's pod-name annotation or name) and carries its id label. A sandbox is announced
(and CREATED published) by the Create that made it once picod answers, or, for one another
replica made, when the informers first see its pod Ready; the ones present at the first sync
are the snapshot. Writes go straight to the API; the backend updates its index and publishes
the event when the write succeeds, and the informer's echo of it changes nothing.

Secrets: a cold sandbox's token and envVars are in a Secret named like its Sandbox, owned by
it (garbage-collected with it), read by the pod through secretKeyRef. A warm-pool pod was
started before its sandbox existed; once the claim binds it, picod's `POST /init` binds it
to the sandbox id (the JWT's session_id) and hands it the token and envVars.

Expiry: agent-sandbox deletes at `spec.shutdownTime` with policy Delete (the Sandbox's for a
cold sandbox, the claim's `spec.lifecycle` for a warm one), so sandboxes expire even while
this service is down. A Reaper on the end-at annotation deletes them too (the same instant),
and pauses instead those that pause on timeout (they carry no shutdownTime: the controller
would delete them). A sandbox whose CR disappears after its end-at, by whoever's hand, is
reported EXPIRED, else KILLED.

Pause scales the pod down (`replicas: 0`, v1beta1 `operatingMode: Suspended`) and marks the
Sandbox `e2b.agentcube.io/state: paused`; resume scales it up and waits for the new pod
(re-binding a warm one). No memory survives: processes start afresh, and the filesystem
survives only where the template has a volume claim template (agent-sandbox keeps its PVCs).
So every pause is a filesystem pause at best, and is reported as `pauseMode: filesystem`
whichever mode was asked for (E2B's `memory`, `autoPauseMemory`).

Templates are CodeInterpreters (kube_templates.py: an operator's, or one a `from_image`
build made, with picod injected; its start and ready commands run through picod before a
Create or Resume returns, template_start.py). Unsupported, with UNIMPLEMENTED:
`allowPublicTraffic: false`, build steps that run something in the image (no in-cluster
builder), snapshots.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import replace
from typing import Any

from extproc.core import timeouts
from extproc.core.errors import (
    Conflict,
    DeadlineExceeded,
    DomainError,
    InvalidArgument,
    NotFound,
    Unimplemented,
)  # fmt: skip
from extproc.core.ids import new_sandbox_id
from extproc.core.tokens import access_token
from extproc.k8s import object_proof
from extproc.k8s.discovery import AgentSandboxKinds, discover
from extproc.k8s.identity import load_identity, load_or_create_seed
from extproc.k8s.informing import Informer, run_informers
from extproc.k8s.listwatch import KubeObject
from extproc.k8s.resources import CODE_INTERPRETER, POD, SECRET, Kind, Resources
from extproc.k8s.settings import InformerSettings
from extproc.lifecycle import listing, template_start, tenancy
from extproc.lifecycle import manifests as m
from extproc.lifecycle import volume_manifests as vm
from extproc.lifecycle.build_steps import BuildSpec
from extproc.lifecycle.building import LogEntry
from extproc.lifecycle.idempotency import RecordedKey
from extproc.lifecycle.kube_templates import KubeTemplates, template_view
from extproc.lifecycle.kube_volumes import KubeVolumes
from extproc.lifecycle.metric_history import within
from extproc.lifecycle.picod_client import PicodClient
from extproc.lifecycle.reaping import Clock, Reaper
from extproc.lifecycle.sandboxes import (
    CreateSpec,
    Event,
    EventType,
    ListQuery,
    Metric,
    OnTimeout,
    Page,
    PauseMode,
    Sandbox,
    State,
    VolumeMount,
)  # fmt: skip
from extproc.lifecycle.settings import KubernetesSettings
from extproc.lifecycle.templates import Build, Template
from extproc.lifecycle.validation import check_env_vars, check_metadata
from extproc.lifecycle.volumes import Volume
from extproc.lifecycle.watching import Hub

log = logging.getLogger(__name__)
_NO_PRIVATE_TRAFFIC = (
    "network.allowPublicTraffic: false is not supported by the kubernetes backend yet"
)
# How long past its end a Create waits for the pod before it gives up (the controller's
# deletion and the informers' news of it take a moment).
_END_GRACE_S = 1.0
# Kept of a Create's wait for the last ready command's run and the reply.
_READY_MARGIN_S = 2.0
_NO_SNAPSHOTS = ("snapshots and fork are not supported in Kubernetes mode: a pod's filesystem "
                 "cannot be captured as an image here")  # fmt: skip


def _revision(obj: KubeObject) -> int:
    """The resourceVersion as a number (etcd's revision, which grows with every write; a
    server whose versions are not numbers gets 0, which disables the staleness check)."""
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _label_id(obj: KubeObject) -> str:
    return str(((obj.get("metadata") or {}).get("labels") or {}).get(m.LABEL_ID) or "")


def _where(obj: KubeObject) -> tuple[str, str]:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


class _ProvenSandboxes:
    """Informer handler: id -> the one Sandbox with a valid proof for that id."""

    def __init__(
        self, objects: dict[str, KubeObject], key: Callable[[], bytes],
        changed: Callable[[str], None],
    ) -> None:  # fmt: skip
        self._objects = objects
        self._key = key
        self._changed = changed

    def on_add(self, obj: KubeObject) -> None:
        self.on_update(obj, obj)

    def on_update(self, old: KubeObject, new: KubeObject) -> None:
        sandbox_id = _label_id(new)
        if not sandbox_id:
            return
        if object_proof.has_valid_proof(self._key(), new):
            self._objects[sandbox_id] = new
            self._changed(sandbox_id)
        else:
            self.on_delete(new)  # if it was ours and lost its proof, it is no longer

    def on_delete(self, obj: KubeObject) -> None:
        sandbox_id = _label_id(obj)
        held = self._objects.get(sandbox_id)
        if held is not None and _where(held) == _where(obj):
            del self._objects[sandbox_id]
            self._changed(sandbox_id)


class _ByName:
    """Informer handler: (namespace, name) -> object, telling the backend which id changed."""

    def __init__(
        self, objects: dict[tuple[str, str], KubeObject], changed: Callable[[str], None]
    ) -> None:
        self._objects = objects
        self._changed = changed

    def on_add(self, obj: KubeObject) -> None:
        self.on_update(obj, obj)

    def on_update(self, old: KubeObject, new: KubeObject) -> None:
        self._objects[_where(new)] = new
        self._changed(_label_id(new))

    def on_delete(self, obj: KubeObject) -> None:
        self._objects.pop(_where(obj), None)
        self._changed(_label_id(obj))


async def _together(*steps: Coroutine[Any, Any, Any]) -> None:
    """Run `steps` at once; the first failure cancels the others and is raised as itself
    (not wrapped in an ExceptionGroup, so callers still see domain errors)."""
    tasks = [asyncio.ensure_future(step) for step in steps]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _Phases:
    """Milliseconds from the start to each step of one Create, for its log line."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._marks: list[tuple[str, float]] = []

    def mark(self, name: str) -> None:
        self._marks.append((name, time.perf_counter() - self._start))

    def __str__(self) -> str:
        return ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in self._marks)


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
        self.proof_key = b""
        self.public_key_pem = ""
        self.kinds: AgentSandboxKinds | None = None
        self.hub = Hub()
        self._crs: dict[str, KubeObject] = {}
        self._pods: dict[tuple[str, str], KubeObject] = {}
        self._sandboxes: dict[str, Sandbox] = {}
        self._creating: set[str] = set()
        self._ending: set[str] = set()  # deleted by us, event published; informer echo ignored
        self._locks: dict[str, asyncio.Lock] = {}
        self._synced = False
        self._informer_settings = informer_settings or InformerSettings()
        self.reaper = Reaper(clock, self._end_at_of, self._timed_out)
        self.picod = PicodClient(scheme=settings.picod_scheme, port=settings.picod_port)
        self._claims: dict[tuple[str, str], KubeObject] = {}
        # id -> resourceVersion of our last write of its Sandbox, until the informer has it
        self._written: dict[str, int] = {}
        self._interpreters: dict[tuple[str, str], KubeObject] = {}
        self._warned_unauthenticated: set[tuple[str, str]] = set()
        self.sandbox_informer: Informer | None = None
        self.pod_informer: Informer | None = None
        self.claim_informer: Informer | None = None
        self.volumes = KubeVolumes(
            api, size_mb=settings.volume_mb, storage_class=settings.volume_storage_class,
            access_mode=settings.volume_access_mode, seed=lambda: self.seed, clock=clock,
        )  # fmt: skip
        self.templates = KubeTemplates(
            api, self._interpreters, bundle_image=settings.picod_bundle_image, clock=clock
        )

    # -- start and stop -------------------------------------------------------------------

    async def start(self) -> list[asyncio.Task[None]]:
        settings = self.settings
        self.kinds = await asyncio.to_thread(
            discover, self.api.client, settings.agent_sandbox_version
        )
        log.info("agent-sandbox API version %s", self.kinds.version)
        self.seed = await load_or_create_seed(self.api, settings.namespace, settings.seed_secret)
        self.proof_key = await object_proof.load_or_create_proof_key(
            self.api, settings.namespace, settings.proof_secret
        )
        identity = await load_identity(
            self.api, settings.identity_namespace, settings.identity_secret,
            create=settings.create_identity,
        )  # fmt: skip
        self.public_key_pem = identity.public_pem.decode()
        self.picod.use_identity(identity.private_pem)
        self.sandbox_informer = Informer(
            self.api.watch_target(self.kinds.sandbox, f"{m.MANAGED_BY}={m.MANAGER}"),
            self._informer_settings,
            [_ProvenSandboxes(self._crs, lambda: self.proof_key, self._changed)],
        )  # fmt: skip
        self.pod_informer = Informer(
            self.api.watch_target(POD, m.LABEL_ID), self._informer_settings,
            [_ByName(self._pods, self._changed)],
        )  # fmt: skip
        # Our claims, for the moment the warm pool binds one (no polling of the API).
        self.claim_informer = Informer(
            self.api.watch_target(self.kinds.claim, f"{m.MANAGED_BY}={m.MANAGER}"),
            self._informer_settings, [_ByName(self._claims, lambda _: None)],
        )  # fmt: skip
        # The templates, read on every Create.
        interpreters = Informer(
            self.api.watch_target(CODE_INTERPRETER, ""), self._informer_settings,
            [_ByName(self._interpreters, lambda _: None)],
        )  # fmt: skip
        everything = [self.sandbox_informer, self.pod_informer, self.claim_informer, interpreters]
        informers = asyncio.create_task(run_informers(everything), name="lifecycle-informers")
        for informer in everything:
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
        await self.picod.close()
        self.api.close()

    def _kinds(self) -> AgentSandboxKinds:
        assert self.kinds is not None, "start() discovers the kinds"
        return self.kinds

    # -- the index ------------------------------------------------------------------------

    def _pod_of(self, sandbox_id: str) -> KubeObject | None:
        cr = self._crs.get(sandbox_id)
        if cr is None:
            return None
        pod = self._pods.get((_where(cr)[0], m.pod_name(cr)))
        return pod if pod is not None and _label_id(pod) == sandbox_id else None

    def _view(self, sandbox_id: str) -> Sandbox | None:
        cr = self._crs.get(sandbox_id)
        if cr is None:
            return None
        token = access_token(self.seed, sandbox_id)
        view = m.sandbox_of(cr, self._pod_of(sandbox_id), token)
        # A scaled-down pod keeps no memory: see the module docstring.
        return None if view is None else replace(view, pause_mode=PauseMode.FILESYSTEM)

    def _announce(self, sandbox_id: str, *, publish: bool) -> None:
        view = self._view(sandbox_id)
        if view is None:
            return
        self._sandboxes[sandbox_id] = view
        self._schedule(view)
        if publish:
            self.hub.publish(EventType.CREATED, view)

    def _schedule(self, sandbox: Sandbox) -> None:
        if sandbox.state is not State.PAUSED:  # a paused sandbox has no end
            self.reaper.schedule(sandbox.sandbox_id, sandbox.end_at)

    def _changed(self, sandbox_id: str) -> None:
        """An informer changed the CR or pod of `sandbox_id` (loop thread, no awaits)."""
        if not sandbox_id or not self._synced or sandbox_id in self._creating:
            return
        if sandbox_id in self._ending:
            if sandbox_id not in self._crs:
                self._ending.discard(sandbox_id)
            return
        written = self._written.get(sandbox_id)
        if written is not None:
            cr = self._crs.get(sandbox_id)
            if cr is not None and _revision(cr) < written:
                # The informer has not yet seen our last write (a pod event came first): its
                # view of the Sandbox is older than what we published, so it changes nothing.
                return
            del self._written[sandbox_id]
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
            self._schedule(view)
            self.hub.publish(EventType.UPDATED, view)

    def _end_at_of(self, sandbox_id: str) -> float | None:
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None:
            return None
        return float("inf") if sandbox.state is State.PAUSED else sandbox.end_at

    def _find(self, sandbox_id: str, tenant: str) -> Sandbox:
        return tenancy.find(self._sandboxes, sandbox_id, tenant, lambda s: s.tenant)

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    def _publish_update(self, sandbox: Sandbox) -> Sandbox:
        self._sandboxes[sandbox.sandbox_id] = sandbox
        self._schedule(sandbox)
        self.hub.publish(EventType.UPDATED, sandbox)
        return sandbox

    # -- create ---------------------------------------------------------------------------

    async def _code_interpreter(self, name: str, namespace: str) -> KubeObject:
        """By object name or template name (`name:tag` too); from the informer's cache, from
        the API when the cache has not seen it (yet)."""
        return await self.templates.code_interpreter(name, namespace)

    def _lifetimes(self, spec: CreateSpec, ci: KubeObject) -> tuple[int, int]:
        """(timeout, longest life) for a Create from `ci`: the CodeInterpreter's
        sessionTimeout when the caller gave none, capped by its maxSessionDuration."""
        longest = min(m.max_session_s(ci), self.settings.max_timeout_s)
        if not spec.timeout_requested:
            return min(m.session_timeout_s(ci), longest), longest
        if spec.timeout_s > longest:
            hours = f"{longest / 3600:g}"
            raise InvalidArgument(f"Timeout cannot be greater than {hours} hours")
        return spec.timeout_s, longest

    async def create(self, spec: CreateSpec) -> Sandbox:
        kinds = self._kinds()
        if not spec.allow_public_traffic:
            # The edge's cluster directory routes from Sandbox/Pod informers and does not read
            # a traffic-token annotation yet; accepting the flag would leave the ports open.
            raise Unimplemented(_NO_PRIVATE_TRAFFIC)
        metadata = check_metadata(spec.metadata)
        env = check_env_vars(spec.env_vars)
        ns = spec.tenant
        ci = await self._code_interpreter(spec.template, ns)
        mounts = await self.volumes.resolve(ns, spec.volume_mounts) if spec.volume_mounts else []
        # A claim gets a pod the warm pool started before anyone asked: it cannot gain
        # volumes. A Create with volumes starts its own pod from the template (cold).
        warm = m.warm_pool_size(ci) > 0 and not mounts
        if warm and not m.jwt_auth(ci):
            raise InvalidArgument(
                f"template {spec.template!r} has a warm pool and authMode none: its pods trust "
                "no key, so a claimed pod cannot be bound to its sandbox; set authMode picod or "
                "warmPoolSize 0"
            )
        if not m.jwt_auth(ci) and (ns, spec.template) not in self._warned_unauthenticated:
            self._warned_unauthenticated.add((ns, spec.template))
            log.warning(
                "template %s/%s has authMode none: its pods do not check the gateway's JWT, so "
                "E2B traffic is guarded only by the envd access token and whatever "
                "NetworkPolicy keeps other pods away from the sandbox pods", ns, spec.template,
            )  # fmt: skip
        timeout_s, longest = self._lifetimes(spec, ci)
        sandbox_id = new_sandbox_id()
        token = access_token(self.seed, sandbox_id)
        started = float(int(self.clock()))
        end_at = float(int(started + timeout_s))
        # A sandbox that pauses on timeout must not be deleted by the controller.
        shutdown_at = None if spec.on_timeout is OnTimeout.PAUSE else end_at
        template_id = _where(ci)[1]  # the object's name, whatever name the caller used
        object_labels = m.labels(sandbox_id, template_id)
        notes = m.sandbox_annotations(
            started_at=started, end_at=end_at, metadata=metadata,
            alias="" if spec.template == template_id else spec.template,
            on_timeout=spec.on_timeout, auto_resume=spec.auto_resume, token=token,
            max_duration_s=longest,
        )  # fmt: skip
        ports = m.open_ports(ci)
        if ports is not None:
            notes[m.PORTS] = ports
        created: list[tuple[Kind, str]] = []  # to roll back, in reverse
        phases = _Phases()
        self._creating.add(sandbox_id)
        # The controller deletes the sandbox at its end (shutdownTime), pod ready or not: a
        # Create still waiting then has nothing left to wait for.
        wait_s = min(self.settings.ready_timeout_s, max(end_at - self.clock(), 0.0) + _END_GRACE_S)
        try:
            async with asyncio.timeout(wait_s) as budget:
                if warm:
                    claim = m.claim_object(ci, kinds, sandbox_id=sandbox_id, namespace=ns,
                                           end_at=shutdown_at)  # fmt: skip
                    made = await self.api.create(kinds.claim, ns, claim)
                    created.append((kinds.claim, m.object_name(sandbox_id)))
                    created.append((SECRET, m.object_name(sandbox_id)))
                    phases.mark("claimed")
                    # Kept for resumes (a new pod is bound again); goes with the claim. Made
                    # while the pool binds the claim: nothing waits on it until a resume.
                    secret = m.secret_object(
                        name=m.object_name(sandbox_id), namespace=ns, token=token, env_vars=env,
                        object_labels=object_labels, owner=made,
                    )  # fmt: skip
                    await _together(
                        self.api.create(SECRET, ns, secret),
                        self._adopt_claimed(ns, sandbox_id, object_labels, notes),
                    )
                    phases.mark("bound")
                    host = await self._wait_pod_ready(sandbox_id)
                    phases.mark("pod ready")
                    await self.picod.bind(host, sandbox_id, token, env)
                    phases.mark("picod bound")
                else:
                    host = await self._create_cold(
                        ci, ns, sandbox_id, token, env, object_labels, notes, shutdown_at, created,
                        mounts,
                    )  # fmt: skip
                    phases.mark("pod ready")
                await self.picod.wait_healthy(host)
                phases.mark("healthy")
                if await self._start_template(template_view(ci), host, sandbox_id, token,
                                              budget):  # fmt: skip
                    phases.mark("template started")
        except TimeoutError:
            await self._roll_back(ns, sandbox_id, created)
            if wait_s < self.settings.ready_timeout_s:
                raise DeadlineExceeded(
                    f"sandbox {sandbox_id} from template {spec.template!r} reached the end of "
                    f"its {timeout_s} s timeout before its pod was Ready and picod answered; it "
                    "was deleted (give it a longer timeout)"
                ) from None
            raise DeadlineExceeded(
                f"sandbox {sandbox_id} from template {spec.template!r} was not ready within "
                f"{self.settings.ready_timeout_s:g} s (pod Ready with an IP, then picod's "
                "/health, then the template's start and ready commands); it was deleted"
            ) from None
        except BaseException:
            await self._roll_back(ns, sandbox_id, created)
            raise
        self._creating.discard(sandbox_id)
        sandbox = self._view(sandbox_id)
        assert sandbox is not None  # _wait_pod_ready saw our proven CR
        sandbox = replace(sandbox, env_vars=env, endpoint_host=host, state=State.RUNNING,
                          started_at=started, end_at=end_at)  # fmt: skip
        self._sandboxes[sandbox_id] = sandbox
        self._schedule(sandbox)
        self.hub.publish(EventType.CREATED, sandbox)
        log.info("created sandbox %s in %s from %s (%s): %s", sandbox_id, ns, spec.template,
                 "warm pool" if warm else "cold", phases)  # fmt: skip
        return sandbox

    async def _start_template(
        self, template: Template, host: str, sandbox_id: str, token: str, budget: asyncio.Timeout
    ) -> bool:
        """Apply a built template's user, workdir, start and ready commands to the sandbox's
        new pod (template_start.py), within what is left of `budget`; False: it has none."""
        if not template_start.has_start_settings(template):
            return False
        # Less a margin: a ready command that keeps failing is reported as such (with its
        # output), as in local mode, rather than as the wait's timeout.
        left = (budget.when() or 0.0) - asyncio.get_running_loop().time() - _READY_MARGIN_S
        await template_start.apply(
            self.picod.poster(host, sandbox_id, token), template,
            ready_within_s=float(max(int(left), 0)),
        )  # fmt: skip
        return True

    async def _create_cold(
        self, ci: KubeObject, ns: str, sandbox_id: str, token: str, env: dict[str, str],
        object_labels: dict[str, str], notes: dict[str, str], shutdown_at: float | None,
        created: list[tuple[Kind, str]], mounts: list[tuple[str, VolumeMount]],
    ) -> str:  # fmt: skip
        """Secret, then the Sandbox reading it, then the Secret owned by the Sandbox (so it
        goes when the Sandbox goes); the pod's IP once it is Ready."""
        kinds = self._kinds()
        name = m.object_name(sandbox_id)
        secret = m.secret_object(name=name, namespace=ns, token=token, env_vars=env,
                                 object_labels=object_labels)  # fmt: skip
        await self.api.create(SECRET, ns, secret)
        created.append((SECRET, name))
        notes = {**notes, object_proof.PROOF_ANNOTATION: object_proof.proof_of(
            self.proof_key, ns, name, sandbox_id)}  # fmt: skip
        body = vm.with_volumes(m.sandbox_object(
            ci, kinds, sandbox_id=sandbox_id, namespace=ns, public_key_pem=self.public_key_pem,
            object_labels=object_labels, object_annotations=notes, end_at=shutdown_at,
        ), mounts)  # fmt: skip
        made = await self.api.create(kinds.sandbox, ns, body)
        created.append((kinds.sandbox, name))
        owner = m.owner_reference(made)
        await self.api.patch(SECRET, ns, name, {"metadata": {"ownerReferences": [owner]}})
        return await self._wait_pod_ready(sandbox_id)

    async def _adopt_claimed(
        self, ns: str, sandbox_id: str, object_labels: dict[str, str], notes: dict[str, str]
    ) -> None:
        """Wait for the warm pool to bind the claim, then mark the bound Sandbox as ours:
        labels, annotations and the proof over its name. The pod's labels came with the
        claim's additionalPodMetadata; the pod itself may not exist yet (an empty pool makes
        the Sandbox and names it in the claim before its pod is scheduled)."""
        kinds = self._kinds()
        claim_name = m.object_name(sandbox_id)
        assert self.claim_informer is not None

        def bound_name() -> str:
            return m.claimed_sandbox_name(self._claims.get((ns, claim_name)) or {})

        await self.claim_informer.wait_for(lambda _: bool(bound_name()))
        bound = bound_name()
        proof = object_proof.proof_of(self.proof_key, ns, bound, sandbox_id)
        patch = {"metadata": {"labels": object_labels, "annotations": {
            **notes, m.CLAIM: claim_name, object_proof.PROOF_ANNOTATION: proof}}}  # fmt: skip
        await self.api.patch(kinds.sandbox, ns, bound, patch)

    async def _wait_pod_ready(self, sandbox_id: str) -> str:
        """The IP of the sandbox's pod once our proven CR and its Ready pod are both seen."""
        assert self.sandbox_informer is not None and self.pod_informer is not None

        def ready() -> str:
            return m.pod_ready(self._pod_of(sandbox_id))

        while not ready():
            waits = [asyncio.ensure_future(informer.wait_for(lambda _: bool(ready())))
                     for informer in (self.sandbox_informer, self.pod_informer)]  # fmt: skip
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
        return ready()

    async def _roll_back(self, ns: str, sandbox_id: str, created: list[tuple[Kind, str]]) -> None:
        """Delete what this Create made; shielded, so a cancelled RPC still cleans up."""

        async def delete_all() -> None:
            for kind, name in reversed(created):
                try:
                    await self.api.delete(kind, ns, name)
                except NotFound:
                    pass  # collected with its owner
                except DomainError as error:
                    log.error("rollback of %s %s/%s failed: %s", kind.kind, ns, name, error)

        try:
            await asyncio.shield(delete_all())
        finally:
            self._creating.discard(sandbox_id)
            self._ending.add(sandbox_id)
            if sandbox_id not in self._crs:
                self._ending.discard(sandbox_id)

    # -- ending ---------------------------------------------------------------------------

    def _claim_of(self, sandbox_id: str) -> str:
        cr = self._crs.get(sandbox_id) or {}
        return str(((cr.get("metadata") or {}).get("annotations") or {}).get(m.CLAIM) or "")

    def _cr_name(self, sandbox_id: str) -> str:
        return _where(self._crs.get(sandbox_id) or {})[1] or m.object_name(sandbox_id)

    async def _delete(self, sandbox: Sandbox, event: EventType, reason: str) -> None:
        kinds = self._kinds()
        claim = self._claim_of(sandbox.sandbox_id)
        try:
            if claim:
                await self.api.delete(kinds.claim, sandbox.tenant, claim)
            else:
                await self.api.delete(kinds.sandbox, sandbox.tenant, self._cr_name(
                    sandbox.sandbox_id))  # fmt: skip
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

    async def _timed_out(self, sandbox_id: str) -> None:
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None:
            return
        async with self._lock(sandbox_id):
            sandbox = self._sandboxes.get(sandbox_id)
            if sandbox is None or sandbox.state is State.PAUSED or sandbox.end_at > self.clock():
                return
            if sandbox.on_timeout is OnTimeout.PAUSE:
                await self._pause_locked(sandbox)
            else:
                await self._delete(sandbox, EventType.EXPIRED, "expired")

    # -- reading --------------------------------------------------------------------------

    async def get(self, sandbox_id: str, tenant: str) -> Sandbox:
        return self._find(sandbox_id, tenant)

    async def recorded_keys(self, since: float) -> list[RecordedKey]:
        return []  # Idempotency-Keys are kept by the servicer, in this replica's memory

    async def keyed_sandbox(self, sandbox_id: str) -> Sandbox | None:
        """Live only: an ended sandbox's CR is gone, so a retry after its end starts anew."""
        return self._sandboxes.get(sandbox_id)

    async def list_sandboxes(self, query: ListQuery) -> Page:
        return listing.page(self._sandboxes.values(), query, lambda name: {name})

    def watch(self) -> AsyncIterator[Event]:
        return self.hub.watch(lambda: list(self._sandboxes.values()))

    async def metrics(
        self, sandbox_id: str, tenant: str, start: int | None = None, end: int | None = None
    ) -> list[Metric]:
        """The series picod keeps of its pod (one sample every few seconds since the pod
        started: this service cannot poll every pod), in [start, end]. An older picod answers
        one sample taken now, whatever the window; `within` filters that one too."""
        sandbox = self._find(sandbox_id, tenant)
        if not sandbox.endpoint_host:
            return []
        docs = await self.picod.metrics(
            sandbox.endpoint_host, sandbox_id, sandbox.envd_access_token, start, end)  # fmt: skip
        samples = [Metric(
            timestamp=float(doc.get("ts") or self.clock()),
            cpu_count=int(doc.get("cpu_count") or 0), cpu_used_pct=float(doc.get("cpu_used_pct")
            or 0.0), mem_used=int(doc.get("mem_used") or 0), mem_total=int(doc.get("mem_total")
            or 0), mem_cache=int(doc.get("mem_cache") or 0),
            disk_used=int(doc.get("disk_used") or 0), disk_total=int(doc.get("disk_total") or 0),
        ) for doc in docs]  # fmt: skip
        return within(samples, start, end)

    # -- timeouts -------------------------------------------------------------------------

    def _longest(self, sandbox_id: str) -> int:
        return m.max_duration_of(self._crs.get(sandbox_id) or {}, self.settings.max_timeout_s)

    async def _write_state(
        self, sandbox: Sandbox, *, end_at: float, running: bool | None = None
    ) -> None:
        """Patch end-at (and the controller's deletion time with it) and, when `running` is
        given, the pod's scale and our state annotation, on the Sandbox and, for a warm one,
        the claim whose lifecycle governs it."""
        kinds = self._kinds()
        name, claim = self._cr_name(sandbox.sandbox_id), self._claim_of(sandbox.sandbox_id)
        paused = running is False or (running is None and sandbox.state is State.PAUSED)
        # Paused, or pausing on timeout: no deletion time, the controller must not delete it.
        shutdown = None if paused or sandbox.on_timeout is OnTimeout.PAUSE else end_at
        notes: dict[str, Any] = {m.END_AT: m.rfc3339(end_at)}
        spec: dict[str, Any] = {}
        if running is not None:
            notes[m.STATE] = None if running else "paused"
            spec.update(m.operating(kinds, running))
        if not claim:
            spec.update(m.expiry(shutdown))
        try:
            patch = {"metadata": {"annotations": notes}, "spec": spec}
            patched = await self.api.patch(kinds.sandbox, sandbox.tenant, name, patch)
            self._written[sandbox.sandbox_id] = _revision(patched)
            if claim:
                await self.api.patch(kinds.claim, sandbox.tenant, claim,
                                     {"spec": {"lifecycle": m.expiry(shutdown)}})  # fmt: skip
        except NotFound:
            raise NotFound(f"sandbox {sandbox.sandbox_id} not found") from None

    async def _patch_end(self, sandbox: Sandbox, end_at: float) -> Sandbox:
        end_at = float(int(end_at))
        if end_at == sandbox.end_at:
            return sandbox
        await self._write_state(sandbox, end_at=end_at)
        current = self._sandboxes.get(sandbox.sandbox_id)
        if current is None:
            raise NotFound(f"sandbox {sandbox.sandbox_id} not found")
        if current.end_at == end_at:
            return current  # the patch's watch event got here first and announced it
        return self._publish_update(replace(current, end_at=end_at))

    @staticmethod
    def _require_unpaused(sandbox: Sandbox) -> None:
        if sandbox.state is State.PAUSED:
            raise Conflict(f"sandbox {sandbox.sandbox_id} is paused; connect to resume it first")

    async def set_timeout(self, sandbox_id: str, tenant: str, timeout_s: int) -> Sandbox:
        self._find(sandbox_id, tenant)
        async with self._lock(sandbox_id):
            s = self._find(sandbox_id, tenant)
            self._require_unpaused(s)
            end_at = timeouts.set_end_at(
                self.clock(), s.started_at, timeout_s, self._longest(sandbox_id)
            )
            return await self._patch_end(s, end_at)

    def _extended_end(self, s: Sandbox, timeout_s: int | None) -> float:
        longest = self._longest(s.sandbox_id)
        end_at = timeouts.extend_end_at(self.clock(), s.started_at, s.end_at, timeout_s, longest)
        return float(int(end_at))

    async def refresh(self, sandbox_id: str, tenant: str, duration_s: int | None) -> Sandbox:
        self._find(sandbox_id, tenant)
        async with self._lock(sandbox_id):
            s = self._find(sandbox_id, tenant)
            self._require_unpaused(s)
            return await self._patch_end(s, self._extended_end(s, duration_s))

    async def connect(
        self, sandbox_id: str, tenant: str, timeout_s: int | None
    ) -> tuple[Sandbox, bool]:
        self._find(sandbox_id, tenant)
        async with self._lock(sandbox_id):
            s = self._find(sandbox_id, tenant)
            if s.state is State.PAUSED:
                return await self._resume_locked(s, timeout_s), True
            return await self._patch_end(s, self._extended_end(s, timeout_s)), False

    # -- pause and resume -----------------------------------------------------------------

    async def _pause_locked(self, s: Sandbox) -> Sandbox:
        if s.state is State.PAUSED:
            raise Conflict(f"sandbox {s.sandbox_id} is already paused")
        await self._write_state(s, end_at=s.end_at, running=False)
        return self._publish_update(
            replace(s, state=State.PAUSED, endpoint_host="", pause_mode=PauseMode.FILESYSTEM)
        )

    async def pause(
        self, sandbox_id: str, tenant: str, mode: PauseMode = PauseMode.FULL
    ) -> Sandbox:
        # `mode` changes nothing here: a pod scaled down keeps no memory either way.
        self._find(sandbox_id, tenant)
        async with self._lock(sandbox_id):
            return await self._pause_locked(self._find(sandbox_id, tenant))

    async def _resume_locked(self, s: Sandbox, timeout_s: int | None) -> Sandbox:
        end_at = self._extended_end(s, timeout_s)
        await self._write_state(s, end_at=end_at, running=True)
        try:
            async with asyncio.timeout(self.settings.ready_timeout_s) as budget:
                host = await self._wait_pod_ready(s.sandbox_id)
                if self._claim_of(s.sandbox_id):
                    # The new pod comes from the pool's template: it must be bound again.
                    env = s.env_vars or await self._stored_env_vars(s)
                    await self.picod.bind(host, s.sandbox_id, s.envd_access_token, env)
                await self.picod.wait_healthy(host)
                # Its processes started afresh: the start command too, as local mode does.
                await self._start_template(
                    await self.templates.starts_with(s.template_id, s.tenant), host,
                    s.sandbox_id, s.envd_access_token, budget,
                )  # fmt: skip
        except TimeoutError:
            raise DeadlineExceeded(
                f"sandbox {s.sandbox_id} was not running again within "
                f"{self.settings.ready_timeout_s:g} s of its resume; it stays scaled up and "
                "will be listed as running once its pod is Ready"
            ) from None
        current = self._sandboxes.get(s.sandbox_id) or s
        return self._publish_update(
            replace(current, state=State.RUNNING, endpoint_host=host, end_at=end_at)
        )

    async def _stored_env_vars(self, s: Sandbox) -> dict[str, str]:
        """The envVars kept in the sandbox's Secret (after a restart of this service)."""
        try:
            secret = await self.api.get(SECRET, s.tenant, m.object_name(s.sandbox_id))
        except NotFound:
            log.warning("sandbox %s: its Secret is gone; resuming without envVars", s.sandbox_id)
            return {}
        return m.env_vars_of(secret)

    async def resume(self, sandbox_id: str, tenant: str, timeout_s: int | None) -> Sandbox:
        self._find(sandbox_id, tenant)
        async with self._lock(sandbox_id):
            s = self._find(sandbox_id, tenant)
            if s.state is not State.PAUSED:
                raise Conflict(f"sandbox {sandbox_id} is not paused")
            return await self._resume_locked(s, timeout_s)

    # -- templates ------------------------------------------------------------------------

    async def list_templates(self, tenant: str) -> list[Template]:
        return await self.templates.listed(tenant)

    async def get_template(self, template: str, tenant: str) -> Template:
        return await self.templates.get(tenant, template)

    async def create_template(self, tenant: str, template: Template) -> Template:
        return await self.templates.create(tenant, template)

    async def update_template(self, tenant: str, template_id: str, public: bool) -> Template:
        return await self.templates.update(tenant, template_id, public)

    async def delete_template(self, tenant: str, template_id: str) -> None:
        await self.templates.delete(tenant, template_id)

    # -- template builds: an image, no steps (kube_templates.py); no snapshots ------------

    async def request_build(
        self, tenant: str, name: str, tags: list[str], cpu_count: int, memory_mb: int
    ) -> tuple[Template, Build]:
        return self.templates.request(tenant, name, tags, cpu_count, memory_mb)

    async def file_upload(self, tenant: str, template_id: str, files_hash: str) -> tuple[bool, str]:
        return self.templates.file_upload(tenant, template_id)

    async def start_build(
        self, tenant: str, template_id: str, build_id: str, spec: BuildSpec
    ) -> None:
        await self.templates.start(tenant, template_id, build_id, spec)

    async def build_status(
        self, tenant: str, template_id: str, build_id: str, offset: int, limit: int, level: str
    ) -> tuple[Build, list[LogEntry]]:
        return await self.templates.status(tenant, template_id, build_id, offset, limit, level)

    async def assign_tags(self, tenant: str, target: str, tags: list[str]) -> Build:
        return await self.templates.assign_tags(tenant, target, tags)

    async def remove_tags(self, tenant: str, name: str, tags: list[str]) -> None:
        await self.templates.remove_tags(tenant, name, tags)

    async def create_snapshot(self, tenant: str, sandbox_id: str, name: str) -> Template:
        raise Unimplemented(_NO_SNAPSHOTS)

    async def list_snapshots(self, tenant: str, sandbox_id: str, name: str) -> list[Template]:
        raise Unimplemented(_NO_SNAPSHOTS)

    async def fork(
        self, tenant: str, sandbox_id: str, count: int, timeout_s: int
    ) -> list[Sandbox | DomainError]:
        raise Unimplemented(_NO_SNAPSHOTS)

    # -- volumes: PersistentVolumeClaims in the tenant's namespace (kube_volumes.py) -----

    async def create_volume(self, tenant: str, name: str) -> Volume:
        return await self.volumes.create(tenant, name)

    async def list_volumes(self, tenant: str) -> list[Volume]:
        return await self.volumes.owned(tenant)

    async def get_volume(self, tenant: str, volume_id: str) -> Volume:
        return await self.volumes.get(tenant, volume_id)

    async def delete_volume(self, tenant: str, volume_id: str) -> None:

        def mounters(volume: Volume) -> list[str]:
            return [
                s.sandbox_id for s in self._sandboxes.values()
                if s.tenant == tenant and any(m.name == volume.name for m in s.volume_mounts)
            ]  # fmt: skip

        await self.volumes.delete(tenant, volume_id, mounters)
