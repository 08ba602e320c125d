"""Templates in Kubernetes mode: AgentCube CodeInterpreters in the tenant's namespace.

An operator's CodeInterpreter (applied with kubectl) is a template named by its object name.
The E2B build API adds templates of the tenant's own: `Template().from_image(image)` becomes
a CodeInterpreter running `image` with picod injected (manifests.py), so any image will do,
as on E2B, where envd is injected into every template. The build is ready as soon as the
object is written: nothing runs until a sandbox starts.

What E2B keeps of a template is kept on its CodeInterpreter, so it survives a restart of
this service and needs no store of its own: the label `app.kubernetes.io/managed-by:
agentcube-e2b` (only those are changed or deleted through the API; an operator's stay with
kubectl), and the annotations `names` (JSON list), `public` and `build` (the current
build: id, tags, times, and what a sandbox of it starts with: user, workdir, start and
ready commands, applied through picod once it answers, as local mode does:
template_start.py). A template keeps one build, its newest: a new build of the same
name replaces the image, and tags move to it as local mode moves them to a newer build;
tags of older builds go with them (local mode keeps older builds startable by tag). Names
are unique in the namespace, object names included.

What a build may hold: `from_image` (a public image: the kubelet pulls it; registry
credentials are refused, the pod would need an imagePullSecret), `set_envs` (the
container's environment), `set_user`, `set_workdir`, `set_start_cmd` and `set_ready_cmd`
(what picod is told at each sandbox start). Every other step runs something in the image
(RUN and COPY, the SDK's pip/npm/apt installs among them) or starts from another
template's filesystem; none is done here. There is no in-cluster builder (a Job that runs
the steps and pushes an image needs a registry to push to), so such a build is refused
with UNIMPLEMENTED naming its first step.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from extproc.core.errors import AlreadyExists, Conflict, InvalidArgument, NotFound, Unimplemented
from extproc.core.ids import new_sandbox_id
from extproc.k8s.listwatch import KubeObject
from extproc.k8s.resources import CODE_INTERPRETER, Resources
from extproc.lifecycle import manifests as m
from extproc.lifecycle.build_steps import (
    BASE_IMAGES,
    BASE_STEP,
    ENV,
    USER,
    WORKDIR,
    BuildSpec,
    Context,
    StepError,
    apply_context,
    check_step,
    describe,
    step_name,
)  # fmt: skip
from extproc.lifecycle.building import LogEntry
from extproc.lifecycle.templates import (
    DEFAULT_TAG,
    FAILED,
    READY,
    Build,
    Template,
    check_name,
    check_tag,
    split_tag,
)  # fmt: skip

NAMES = m.PREFIX + "names"
PUBLIC = m.PREFIX + "public"
BUILD = m.PREFIX + "build"
WAITING = "waiting"
PICOD_ENV = "AGENTCUBE_E2B_PICOD_ENV"  # picod's --env (picod/command.py)
_MAX_IMAGE = 512  # longer than any registry/repository:tag@digest in use
# Builds remembered in memory (waiting ones, failed ones, logs), the oldest forgotten first:
# a caller requesting builds without end must not grow this process without end.
_REMEMBERED = 1000
_NO_BUILDER = ("Kubernetes mode has no in-cluster builder: a template can be an image "
               "(`from_image`, with `set_envs`, `set_user`, `set_workdir`, `set_start_cmd` "
               "and `set_ready_cmd`) and nothing more; build the image with the rest and use "
               "it with from_image")  # fmt: skip
_OPERATORS = ("is a CodeInterpreter written by an operator; create, change or delete it with "
              "kubectl in the tenant's namespace")  # fmt: skip


@dataclass(frozen=True)
class _Waiting:
    """A requested build, until its start (this process's memory: the SDK starts it at once)."""

    tenant: str
    template: Template
    build: Build


def _ours(ci: KubeObject) -> bool:
    return ((ci.get("metadata") or {}).get("labels") or {}).get(m.MANAGED_BY) == m.MANAGER


def _notes(ci: KubeObject) -> Mapping[str, str]:
    notes: Mapping[str, str] = (ci.get("metadata") or {}).get("annotations") or {}
    return notes


def _json(text: str | None, default: Any) -> Any:
    try:
        return json.loads(text) if text else default
    except ValueError:
        return default


def _build_of(ci: KubeObject) -> Build | None:
    doc = _json(_notes(ci).get(BUILD), {})
    if not isinstance(doc, dict) or not doc.get("id"):
        return None
    text = {key: str(doc.get(key) or "") for key in ("user", "workdir", "start", "ready")}
    return Build(
        str(doc["id"]), status=READY, created_at=float(doc.get("created", 0)),
        finished_at=float(doc.get("finished", 0)),
        tags=tuple(str(t) for t in doc.get("tags") or ()), user=text["user"],
        workdir=text["workdir"], start_cmd=text["start"], ready_cmd=text["ready"],
    )  # fmt: skip


def _record(build: Build, finished_at: float) -> dict[str, Any]:
    """The `build` annotation's document for `build` (read back by _build_of)."""
    record = {"id": build.build_id, "tags": list(build.tags), "created": build.created_at,
              "finished": finished_at}  # fmt: skip
    starts = {"user": build.user, "workdir": build.workdir, "start": build.start_cmd,
              "ready": build.ready_cmd}  # fmt: skip
    record.update({key: value for key, value in starts.items() if value})
    return record


def template_view(ci: KubeObject) -> Template:
    """The template a CodeInterpreter is (names, build and visibility when it is ours)."""
    template = m.template_of(ci)
    if not _ours(ci):
        return template
    names = _json(_notes(ci).get(NAMES), [])
    build = _build_of(ci)
    return replace(
        template, aliases=tuple(str(n) for n in names) if isinstance(names, list) else (),
        public=_notes(ci).get(PUBLIC) == "true", builds=(build,) if build else (),
        build_id=build.build_id if build else "",
    )  # fmt: skip


def _remember(memory: dict[str, Any], key: str, value: Any) -> None:
    memory[key] = value
    while len(memory) > _REMEMBERED:
        del memory[next(iter(memory))]


def _version(ci: KubeObject | None) -> int:
    """resourceVersion as a number: etcd's revision, growing with every write (0 when
    unreadable: then the cache counts as current, as it soon is)."""
    text = str(((ci or {}).get("metadata") or {}).get("resourceVersion") or "")
    return int(text) if text.isdigit() else 0


def _names(ci: KubeObject) -> set[str]:
    return {str((ci.get("metadata") or {}).get("name") or ""), *template_view(ci).aliases}


def unsupported_step(spec: BuildSpec) -> tuple[str, str] | None:
    """(step name, why) for the first part of `spec` this backend cannot build, else None."""
    if spec.from_template:
        return BASE_STEP, f"from_template({spec.from_template!r}) starts from another " \
                          "template's filesystem"  # fmt: skip
    if spec.registry:
        return BASE_STEP, (
            f"from_image with {spec.registry} registry credentials (a pod "
            "pulls with an imagePullSecret, which builds cannot make)"
        )
    for index, step in enumerate(spec.steps):
        if step.kind not in (ENV, USER, WORKDIR):
            return step_name(index), f"step {step_name(index)} ({describe(step)[:120]})"
    return None


def _context(spec: BuildSpec) -> Context:
    """ENV, USER and WORKDIR of the build's steps, in order (StepError for a malformed one)."""
    context = Context()
    for index, step in enumerate(spec.steps):
        check_step(step, index)
        context = apply_context(step, context)
    return context


def _environment(spec: BuildSpec) -> list[dict[str, str]]:
    """The container env that gives every process picod starts the build's ENV (picod's
    own env never reaches them: it takes them one KEY=VALUE a line, from PICOD_ENV)."""
    for index, step in enumerate(spec.steps):
        if step.kind == ENV and any("\n" in value for value in step.args[1::2]):
            name = step_name(index)
            raise StepError(name, f"step {name}: ENV values cannot hold a newline here")
    env = dict(_context(spec).env)
    if not env:
        return []
    return [{"name": PICOD_ENV, "value": "".join(f"{k}={v}\n" for k, v in env.items())}]


def _starting_with(build: Build, spec: BuildSpec) -> Build:
    """`build` with what its sandboxes start with: the user and workdir its steps set (none
    set: picod's own defaults, the image's user in /home/user), its start and ready commands."""
    context = _context(spec)
    kinds = {step.kind for step in spec.steps}
    return replace(
        build, user=context.user if USER in kinds else "",
        workdir=context.workdir if WORKDIR in kinds else "", start_cmd=spec.start_cmd,
        ready_cmd=spec.ready_cmd,
    )  # fmt: skip


class KubeTemplates:
    """Templates and builds over CodeInterpreters; `cached` is the informer's view of them
    ((namespace, name) -> object), read first, the API when it has not seen one yet."""

    def __init__(
        self, api: Resources, cached: Mapping[tuple[str, str], KubeObject], *,
        bundle_image: str, clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self._api = api
        self._cached = cached
        self._bundle_image = bundle_image
        self._clock = clock
        self._waiting: dict[str, _Waiting] = {}
        self._failed: dict[str, _Waiting] = {}
        self._logs: dict[str, list[LogEntry]] = {}
        # (namespace, name) -> what our last write made of it (None: deleted), until the
        # cache shows as much
        self._written: dict[tuple[str, str], KubeObject | None] = {}

    # -- finding --------------------------------------------------------------------------

    def _current(self, namespace: str) -> dict[str, KubeObject]:
        """The namespace's CodeInterpreters: the cache, with our own writes it has not shown
        yet (a rebuild, a tag or a delete is seen by the caller's next request)."""
        found = {name: ci for (ns, name), ci in self._cached.items() if ns == namespace}
        for (ns, name), written in list(self._written.items()):
            cached = self._cached.get((ns, name))
            if cached is None if written is None else _version(cached) >= _version(written):
                del self._written[(ns, name)]  # the cache has caught up
            elif ns == namespace and written is None:
                found.pop(name, None)
            elif ns == namespace and written is not None:
                found[name] = written
        return found

    def _named(self, namespace: str, name: str) -> KubeObject | None:
        """The CodeInterpreter called `name` in `namespace` (object name or one of ours'
        names)."""
        current = self._current(namespace)
        if name in current:
            return current[name]
        return next((ci for ci in current.values() if _ours(ci) and name in _names(ci)), None)

    def _wrote(self, ci: KubeObject) -> KubeObject:
        metadata = ci.get("metadata") or {}
        self._written[(str(metadata.get("namespace")), str(metadata.get("name")))] = ci
        return ci

    async def code_interpreter(self, name: str, namespace: str) -> KubeObject:
        """What a Create of `name` (`name:tag` allowed) starts from; NotFound otherwise."""
        bare, tag = split_tag(name)
        found = self._named(namespace, bare)
        if found is None:
            try:
                found = await self._api.get(CODE_INTERPRETER, namespace, bare)
            except NotFound:
                raise NotFound(f"template {name[:80]!r} not found") from None
        build = _build_of(found)
        if tag and tag not in (build.tags if build else (DEFAULT_TAG,)):
            raise NotFound(f"template {name[:80]!r} not found")
        return found

    async def starts_with(self, name: str, namespace: str) -> Template:
        """Template `name` for a sandbox of it that starts again (a resume): a bare one when
        it is gone since, whose sandboxes then start without its start settings."""
        try:
            return template_view(await self.code_interpreter(name, namespace))
        except NotFound:
            return Template(name)

    async def listed(self, tenant: str) -> list[Template]:
        return [template_view(ci) for ci in await self._api.list(CODE_INTERPRETER, tenant)]

    async def get(self, tenant: str, name: str) -> Template:
        return template_view(await self.code_interpreter(name, tenant))

    async def _owned(self, tenant: str, name: str) -> KubeObject:
        ci = await self.code_interpreter(name, tenant)
        if not _ours(ci):  # not the E2B API's to change: UNIMPLEMENTED, as before builds
            raise Unimplemented(f"template {name[:80]!r} {_OPERATORS}")
        return ci

    # -- writes ---------------------------------------------------------------------------

    async def create(self, tenant: str, template: Template) -> Template:
        raise Unimplemented(
            f"templates are CodeInterpreters in Kubernetes mode: build one "
            f"from an image (Template().from_image(...)), or {_OPERATORS[5:]}"
        )

    async def update(self, tenant: str, name: str, public: bool) -> Template:
        ci = await self._owned(tenant, name)
        patch = {"metadata": {"annotations": {PUBLIC: "true" if public else "false"}}}
        return template_view(self._wrote(await self._api.patch(
            CODE_INTERPRETER, tenant, ci["metadata"]["name"], patch)))  # fmt: skip

    async def delete(self, tenant: str, name: str) -> None:
        """Sandboxes started from it keep running: each Sandbox holds its own pod template."""
        ci = await self._owned(tenant, name)
        await self._api.delete(CODE_INTERPRETER, tenant, ci["metadata"]["name"])
        self._written[(tenant, ci["metadata"]["name"])] = None

    # -- builds ---------------------------------------------------------------------------

    def request(
        self, tenant: str, name: str, tags: list[str], cpu_count: int, memory_mb: int
    ) -> tuple[Template, Build]:
        bare, tag = split_tag(name)
        check_name(bare)
        wanted = [check_tag(t) for t in (*([tag] if tag else []), *tags)]
        if not 1 <= (cpu_count or 2) <= 64 or not 128 <= (memory_mb or 512) <= 262144:
            raise InvalidArgument("cpuCount must be 1..64 and memoryMB 128..262144")
        existing = self._named(tenant, bare)
        if existing is not None and not _ours(existing):
            raise AlreadyExists(f"{bare!r} {_OPERATORS}")
        template = template_view(existing) if existing is not None else Template(
            new_sandbox_id(), aliases=(bare,), tenant=tenant, public=False,
            cpu_count=cpu_count or 2, memory_mb=memory_mb or 512,
        )  # fmt: skip
        build = Build(
            str(uuid.uuid4()), status=WAITING, created_at=self._clock(),
            tags=tuple(dict.fromkeys(wanted or [DEFAULT_TAG])),
            cpu_count=cpu_count or template.cpu_count, memory_mb=memory_mb or template.memory_mb,
        )  # fmt: skip
        _remember(self._waiting, build.build_id, _Waiting(tenant, template, build))
        return replace(template, builds=(*template.builds, build)), build

    def file_upload(self, tenant: str, template_id: str) -> tuple[bool, str]:
        raise Unimplemented(f"copy steps cannot be built: {_NO_BUILDER}")

    async def start(self, tenant: str, template_id: str, build_id: str, spec: BuildSpec) -> None:
        waiting = self._waiting.get(build_id)
        if waiting is None or waiting.tenant != tenant or (
                waiting.template.template_id != template_id):  # fmt: skip
            if self._ended(tenant, template_id, build_id) is not None:
                raise Conflict(f"build {build_id} has already been started")
            raise NotFound(f"build {build_id[:80]!r} of template {template_id[:80]!r} not found")
        del self._waiting[build_id]
        refused = unsupported_step(spec)
        if refused is not None:
            why = f"{refused[1]} cannot be built: {_NO_BUILDER}"
            self._fail(waiting, refused[0], why)
            raise Unimplemented(why)
        if not self._bundle_image:
            why = (
                "from_image templates need the image that carries picod's bundle: start the "
                "lifecycle service with --picod-bundle-image (the gateway image)"
            )
            self._fail(waiting, BASE_STEP, why)
            raise Unimplemented(why)
        try:
            environment = _environment(spec)
            waiting = replace(waiting, build=_starting_with(waiting.build, spec))
        except StepError as error:
            self._fail(waiting, error.step, error.message)
            raise InvalidArgument(error.message) from None
        image = spec.from_image or BASE_IMAGES[0]
        if len(image) > _MAX_IMAGE or any(c.isspace() or not c.isprintable() for c in image):
            why = f"fromImage {image[:80]!r} is not an image reference"
            self._fail(waiting, BASE_STEP, why)
            raise InvalidArgument(why)
        await self._write(waiting, image, environment)

    def _fail(self, waiting: _Waiting, step: str, why: str) -> None:
        failed = replace(waiting.build, status=FAILED, finished_at=self._clock(), reason=why,
                         reason_step=step)  # fmt: skip
        _remember(self._failed, failed.build_id, replace(waiting, build=failed))
        self._log(failed.build_id, "error", why, step)

    def _ended(self, tenant: str, template_id: str, build_id: str) -> Build | None:
        """A failed build of the tenant's template, from this process's memory."""
        failed = self._failed.get(build_id)
        if (
            failed is None
            or failed.tenant != tenant
            or (template_id not in (failed.template.template_id, *failed.template.aliases))
        ):
            return None  # fmt: skip
        return failed.build

    def _log(self, build_id: str, level: str, message: str, step: str = "") -> None:
        entry = LogEntry(self._clock(), level, message, step)
        _remember(self._logs, build_id, [*self._logs.get(build_id, ()), entry])

    async def _write(
        self, waiting: _Waiting, image: str, environment: list[dict[str, str]]
    ) -> None:
        """The CodeInterpreter of a ready build: made, or its image replaced."""
        template, build, ns = waiting.template, waiting.build, waiting.tenant
        now = self._clock()
        notes = {NAMES: json.dumps(list(template.aliases)),
                 BUILD: json.dumps(_record(build, now)),
                 m.PICOD_BUNDLE_IMAGE: self._bundle_image}  # fmt: skip
        pod = {"image": image, "environment": environment, "resources": {"limits": {
            "cpu": str(build.cpu_count), "memory": f"{build.memory_mb}Mi"}}}  # fmt: skip
        existing = self._named(ns, template.template_id)
        if existing is None:
            body = {
                "apiVersion": CODE_INTERPRETER.api_version, "kind": CODE_INTERPRETER.kind,
                "metadata": {"name": template.template_id, "namespace": ns,
                             "labels": {m.MANAGED_BY: m.MANAGER},
                             "annotations": {**notes, PUBLIC: "false"}},
                "spec": {"template": pod, "authMode": "picod"},
            }  # fmt: skip
            self._wrote(await self._api.create(CODE_INTERPRETER, ns, body))
        else:
            patch = {"metadata": {"annotations": notes}, "spec": {"template": pod}}
            self._wrote(await self._api.patch(CODE_INTERPRETER, ns, template.template_id, patch))
        self._log(build.build_id, "info", f"CodeInterpreter {ns}/{template.template_id} runs "
                  f"{image} with picod injected; nothing to build")  # fmt: skip

    async def status(
        self, tenant: str, template_id: str, build_id: str, offset: int, limit: int, level: str
    ) -> tuple[Build, list[LogEntry]]:
        waiting = self._waiting.get(build_id)
        build = self._ended(tenant, template_id, build_id)
        if waiting is not None and waiting.tenant == tenant:
            build = waiting.build
        elif build is None:
            ci = await self.code_interpreter(template_id, tenant)
            build = _build_of(ci) if _ours(ci) else None
            if build is None or build.build_id != build_id:
                raise NotFound(f"build {build_id[:80]!r} of template {template_id!r} not found")
        levels = ("debug", "info", "warn", "error")
        entries = [e for e in self._logs.get(build_id, ())
                   if not level or levels.index(e.level) >= levels.index(level)]  # fmt: skip
        return build, entries[offset : offset + limit]

    # -- tags -----------------------------------------------------------------------------

    async def _retag(self, ci: KubeObject, tags: tuple[str, ...]) -> Build:
        build = _build_of(ci)
        if build is None:
            raise Conflict(f"template {ci['metadata']['name']!r} has no build to tag")
        record = _record(replace(build, tags=tags), build.finished_at)
        patch = {"metadata": {"annotations": {BUILD: json.dumps(record)}}}
        self._wrote(await self._api.patch(CODE_INTERPRETER, ci["metadata"]["namespace"],
                                          ci["metadata"]["name"], patch))  # fmt: skip
        return replace(build, tags=tags)

    async def assign_tags(self, tenant: str, target: str, tags: list[str]) -> Build:
        """Point `tags` at the build `target` names: a template's one build (see above)."""
        for tag in tags:
            check_tag(tag)
        ci = await self._owned(tenant, target)
        build = _build_of(ci)
        return await self._retag(ci, tuple(dict.fromkeys((*(build.tags if build else ()),
                                                          *tags))))  # fmt: skip

    async def remove_tags(self, tenant: str, name: str, tags: list[str]) -> None:
        ci = await self._owned(tenant, name)
        build = _build_of(ci)
        present = build.tags if build else ()
        missing = [t for t in tags if t not in present]
        if missing:
            raise NotFound(f"template {name!r} has no tag(s) {missing}")
        await self._retag(ci, tuple(t for t in present if t not in tags))
