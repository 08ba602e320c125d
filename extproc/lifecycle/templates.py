"""Templates: what a sandbox is started from, kept in `templates.json` in the state dir.

Two kinds share one catalog. Operator templates are written by hand or are the defaults:
`base` is the Debian base with a fresh home, `code-interpreter-v1` adds the code
interpreter (`interpreter: true`). Whether interpreter templates can run is decided at
start-up (the interpreter's modules importable), not stored: when they cannot, Create of one
fails with a clear FAILED_PRECONDITION rather than a NOT_FOUND. `available: false` in the
file is an operator's switch and always wins.

Built templates and snapshots belong to a tenant and have builds: each build is a stack of
filesystem layers over its parent's (`layers`) plus what a sandbox gets at start (env vars,
default user and working directory, start and ready commands). A sandbox starts from one
build: the one a tag names (`name:tag`), else the newest ready one (`build_id`). Tags move
between builds of one template; `default` is the tag a build gets when it asks for none.

Names. A template has an id (20 characters of [a-z0-9], or an operator's name) and names
(aliases). Names are unique per tenant, and a tenant's own names and the shared templates'
ones are all it can reach by name; another tenant's template is reachable only by id, and
only when public. Anything a tenant may not see is NOT_FOUND, never "forbidden".
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from extproc.core.errors import (
    AlreadyExists,
    Conflict,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)

# picod's reported envd version (extproc/picod/settings.py ENVD_VERSION); surfaces do not
# import each other, so the default template repeats it.
ENVD_VERSION = "0.6.4"
INTERPRETER_TEMPLATE = "code-interpreter-v1"
DEFAULT_TAG = "default"
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
_TAG = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")

BUILDING, READY, FAILED = "building", "ready", "error"
TEMPLATE, SNAPSHOT = "template", "snapshot"
T = TypeVar("T")


@dataclass(frozen=True)
class Build:
    """One build of a user's template (or one capture of a snapshot)."""

    build_id: str
    status: str = BUILDING
    created_at: float = 0.0
    finished_at: float = 0.0
    tags: tuple[str, ...] = ()
    # Layer ids (layers.py), top first; the base is below them all.
    layers: tuple[str, ...] = ()
    # What a sandbox of this build starts with.
    env: tuple[tuple[str, str], ...] = ()
    user: str = ""
    workdir: str = ""
    start_cmd: str = ""
    ready_cmd: str = ""
    cpu_count: int = 2
    memory_mb: int = 512
    # From the base (a template built on code-interpreter-v1 runs the interpreter too).
    interpreter: bool = False
    ports: tuple[int, ...] = ()
    # Why a build failed, and the step ("base", "finalize" or the step's index).
    reason: str = ""
    reason_step: str = ""


class _OfBuild(Generic[T]):
    """A field of the build a template starts sandboxes from (`Template.build`), or `empty`
    for a template without one (an operator's)."""

    def __init__(self, empty: T) -> None:
        self._empty = empty
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, template: Template, owner: type) -> T:
        build = template.build
        return self._empty if build is None else cast(T, getattr(build, self._name))


@dataclass(frozen=True)
class Template:
    template_id: str
    aliases: tuple[str, ...] = ()
    # Empty: every tenant may use it.
    tenant: str = ""
    public: bool = True
    cpu_count: int = 2
    memory_mb: int = 512
    # 0: the free space of the state dir's filesystem at load time.
    disk_size_mb: int = 0
    envd_version: str = ENVD_VERSION
    created_at: float = 0.0
    updated_at: float = 0.0
    ports: tuple[int, ...] = ()
    # True: the sandbox also runs the code interpreter (port 49999) with a warm kernel.
    interpreter: bool = False
    # False: Create refuses it with `unavailable_reason`.
    available: bool = True
    unavailable_reason: str = ""
    # "template" or "snapshot" (E2B's snapshots are templates made from a sandbox).
    kind: str = TEMPLATE
    # A snapshot's sandbox.
    source_sandbox_id: str = ""
    # A user's template: its builds, oldest first (operator templates have none), and the
    # one this view of it starts sandboxes from.
    builds: tuple[Build, ...] = ()
    build_id: str = ""

    @property
    def build(self) -> Build | None:
        return next((b for b in self.builds if b.build_id == self.build_id), None)

    # What a sandbox of this template starts with, from its build.
    layers = _OfBuild[tuple[str, ...]](())
    user = _OfBuild("")
    workdir = _OfBuild("")
    start_cmd = _OfBuild("")
    ready_cmd = _OfBuild("")

    @property
    def env(self) -> dict[str, str]:
        build = self.build
        return dict(build.env) if build else {}

    @property
    def build_status(self) -> str:
        """The newest build's status (ready for operator templates)."""
        return self.builds[-1].status if self.builds else READY


@dataclass
class Snapshots:
    """A page of a tenant's snapshots."""

    templates: list[Template] = field(default_factory=list)
    next_token: str = ""


def default_templates(now: float) -> list[Template]:
    return [
        Template("base", aliases=(), created_at=now, updated_at=now),
        Template(
            "code-interpreter-v1",
            aliases=("code-interpreter",),
            memory_mb=1024,
            ports=(49999,),
            interpreter=True,
            created_at=now,
            updated_at=now,
        ),
    ]


def check_name(name: str, what: str = "template name") -> str:
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"invalid {what} {name[:80]!r}: expected 1-63 characters of [a-z0-9_.-] "
            "starting with a letter or digit"
        )
    return name


def check_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise InvalidArgument(
            f"invalid tag {tag[:80]!r}: expected 1-128 characters of [a-zA-Z0-9_.-] "
            "starting with a letter or digit"
        )
    return tag


def split_tag(name: str) -> tuple[str, str]:
    """`name:tag` -> (name, tag); no tag -> (name, '')."""
    base, sep, tag = name.partition(":")
    if sep:
        check_tag(tag)
    return base, tag


def validate(template: Template) -> Template:
    """Check a template's fields; raise InvalidArgument naming the bad one."""
    for name in (template.template_id, *template.aliases):
        check_name(name)
    if not 1 <= template.cpu_count <= 64:
        raise InvalidArgument(f"cpu_count must be 1..64, got {template.cpu_count}")
    if not 64 <= template.memory_mb <= 262144:
        raise InvalidArgument(f"memory_mb must be 64..262144, got {template.memory_mb}")
    if template.disk_size_mb < 0:
        raise InvalidArgument(f"disk_size_mb must be >= 0, got {template.disk_size_mb}")
    for port in template.ports:
        if not 1 <= port <= 65535 or port == 49983:
            raise InvalidArgument(f"port {port} is not a usable template port")
    return template


def _build_from_json(raw: Any, where: str) -> Build:
    if not isinstance(raw, dict) or not isinstance(raw.get("build_id"), str):
        raise ValueError(f"{where}: expected an object with a build_id")
    unknown = set(raw) - set(Build.__dataclass_fields__)
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    values = dict(raw)
    for key in ("tags", "layers", "ports"):
        if key in values:
            values[key] = tuple(values[key])
    if "env" in values:
        values["env"] = tuple((str(k), str(v)) for k, v in values["env"])
    try:
        return Build(**values)
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def _from_json(raw: Any, where: str) -> Template:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected an object")
    known = set(Template.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    if not isinstance(raw.get("template_id"), str):
        raise ValueError(f"{where}.template_id: expected a string")
    values = dict(raw)
    if values["template_id"] == INTERPRETER_TEMPLATE and "interpreter" not in values:
        # Written before the interpreter existed: it was stored as unavailable for that reason.
        values.update(interpreter=True, available=True, unavailable_reason="")
    for key in ("aliases", "ports"):
        if key in values:
            values[key] = tuple(values[key])
    values["builds"] = tuple(
        _build_from_json(b, f"{where}.builds[{i}]") for i, b in enumerate(raw.get("builds", []))
    )
    try:
        return validate(Template(**values))
    except (TypeError, InvalidArgument) as exc:
        raise ValueError(f"{where}: {exc}") from exc


def _interrupted(template: Template, now: float) -> Template:
    """A build that was running when the service stopped will never finish: it failed."""
    builds = tuple(
        replace(b, status=FAILED, finished_at=now, reason_step="finalize",
                reason="the build was interrupted by a restart of the lifecycle service")
        if b.status == BUILDING else b
        for b in template.builds
    )  # fmt: skip
    return replace(template, builds=builds)


class Catalog:
    """The templates of one state dir. Every change is written to disk before it is visible."""

    def __init__(
        self, path: Path, templates: list[Template], disk_mb: int, max_per_tenant: int | None
    ) -> None:
        self._path = path
        self._disk_mb = disk_mb
        # templates and snapshots one tenant may keep (None: as many as it likes)
        self._max_per_tenant = max_per_tenant
        self._templates = {t.template_id: t for t in templates}
        # Why interpreter templates cannot run on this machine ('' when they can).
        self.interpreter_missing = ""

    @classmethod
    def load(cls, path: Path, max_per_tenant: int | None = None) -> Catalog:
        stat = os.statvfs(path.parent)
        disk_mb = stat.f_bavail * stat.f_frsize // (1024 * 1024)
        if not path.exists():
            catalog = cls(path, default_templates(time.time()), disk_mb, max_per_tenant)
            catalog._save()
            return catalog
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("templates"), list):
            raise ValueError(f'{path}: expected {{"templates": [...]}}')
        now = time.time()
        templates = [
            _interrupted(_from_json(t, f"{path}: templates[{i}]"), now)
            for i, t in enumerate(doc["templates"])
        ]
        catalog = cls(path, templates, disk_mb, max_per_tenant)
        catalog._save()
        return catalog

    def _save(self) -> None:
        doc = {"templates": [asdict(t) for t in self._templates.values()]}
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        tmp.replace(self._path)  # atomic: readers never see half a file

    def _visible(self, template: Template, tenant: str) -> bool:
        return not tenant or not template.tenant or template.tenant == tenant or template.public

    def _effective(self, template: Template) -> Template:
        build = template.build
        if build is not None:  # a built template runs as its build says
            template = replace(
                template, interpreter=build.interpreter, ports=build.ports,
                cpu_count=build.cpu_count, memory_mb=build.memory_mb,
            )  # fmt: skip
        if template.interpreter and template.available and self.interpreter_missing:
            template = replace(
                template, available=False, unavailable_reason=self.interpreter_missing
            )
        if template.disk_size_mb:
            return template
        return replace(template, disk_size_mb=self._disk_mb)

    def list(self, tenant: str, kind: str = TEMPLATE) -> list[Template]:
        return [
            self._effective(t)
            for t in self._templates.values()
            if t.kind == kind and self._visible(t, tenant)
        ]

    def find(self, name: str, tenant: str) -> Template | None:
        """The template `name` (an id, or a name of the tenant's or a shared template's)
        names for `tenant`, as stored; None if it names none the tenant may see."""
        found = self._templates.get(name)
        if found is not None and self._visible(found, tenant):
            return found
        named = [t for t in self._templates.values() if name in t.aliases]
        for owner in ((tenant,) if tenant else ()) + ("",):
            mine = next((t for t in named if t.tenant == owner), None)
            if mine is not None:
                return mine
        return named[0] if named and not tenant else None

    def resolve(self, name: str, tenant: str) -> tuple[Template, str]:
        """Template by id or name, optionally `:tag`, viewed at the build a sandbox starts
        from; and the name used ('' when named by id)."""
        bare, tag = split_tag(name)
        found = self.find(bare, tenant)
        if found is None:
            raise NotFound(f"template {name[:80]!r} not found")
        alias = "" if found.template_id == bare else bare
        if not found.builds:
            if tag and tag != DEFAULT_TAG:
                raise NotFound(f"template {name[:80]!r} not found")
            return self._effective(found), alias
        if tag:
            build = next((b for b in found.builds if tag in b.tags), None)
            if build is None:
                raise NotFound(f"template {name[:80]!r} not found")
            if build.status != READY:
                raise Conflict(f"template {name[:80]!r} has not finished building")
            return self._effective(replace(found, build_id=build.build_id)), alias
        if found.build is None:
            raise Conflict(f"template {name[:80]!r} has no successful build yet")
        return self._effective(found), alias

    def describe(self, name: str, tenant: str) -> Template:
        """The template `name` names for `tenant`, building or not (GET /templates/{id})."""
        try:
            return self.resolve(name, tenant)[0]
        except Conflict:
            found = self.find(split_tag(name)[0], tenant)
            assert found is not None  # resolve found it
            return self._effective(found)

    def at_build(self, template_id: str, build_id: str) -> Template:
        """The template viewed at one of its ready builds (a warm pool's)."""
        template = self._templates.get(template_id)
        build = next((b for b in template.builds if b.build_id == build_id), None) if (
            template) else None  # fmt: skip
        if template is None or build is None or build.status != READY:
            raise NotFound(f"build {build_id} of template {template_id!r} not found")
        return self._effective(replace(template, build_id=build_id))

    def get_build(self, template_id: str, build_id: str, tenant: str) -> tuple[Template, Build]:
        """A build of a template the tenant owns; NOT_FOUND otherwise."""
        template = self._templates.get(template_id)
        if template is None or (tenant and template.tenant != tenant):
            raise NotFound(f"template {template_id[:80]!r} not found")
        build = next((b for b in template.builds if b.build_id == build_id), None)
        if build is None:
            raise NotFound(f"build {build_id[:80]!r} of template {template_id!r} not found")
        return template, build

    def _names_taken(self, tenant: str, names: Iterable[str], but: str = "") -> set[str]:
        """Which of `names` the tenant already uses (shared templates' names and every id
        count for everyone)."""
        taken = set(self._templates)
        for t in self._templates.values():
            if t.template_id != but and (not t.tenant or t.tenant == tenant):
                taken.update(t.aliases)
        return set(names) & taken

    def check_room(self, tenant: str) -> None:
        """A tenant's next template or snapshot must fit its share (built-ins are nobody's)."""
        if not tenant or self._max_per_tenant is None:
            return
        if sum(t.tenant == tenant for t in self._templates.values()) >= self._max_per_tenant:
            raise ResourceExhausted(
                f"a tenant keeps at most {self._max_per_tenant} templates and snapshots "
                "together; delete one first"
            )

    def create(self, tenant: str, template: Template) -> Template:
        now = time.time()
        template = validate(replace(template, tenant=tenant, created_at=now, updated_at=now))
        clash = self._names_taken(tenant, (template.template_id, *template.aliases))
        if clash:
            raise AlreadyExists(f"template name(s) {sorted(clash)} already in use")
        self.check_room(tenant)
        self._templates[template.template_id] = template
        self._save()
        return self._effective(template)

    def _owned(self, tenant: str, template_id: str) -> Template:
        bare, _ = split_tag(template_id)
        template = self.find(bare, tenant)
        if template is None:
            raise NotFound(f"template {template_id[:80]!r} not found")
        if tenant and template.tenant != tenant:
            if template.tenant:
                # Another tenant's public template: visible, not theirs to change.
                raise NotFound(f"template {template_id[:80]!r} not found")
            # Shared templates are visible to all but changeable by none of them.
            raise Conflict(f"template {template_id!r} is shared and cannot be changed")
        return template

    def owned(self, tenant: str, template_id: str) -> Template:
        """A template of `tenant`'s own, by id or name; NOT_FOUND or Conflict otherwise."""
        return self._effective(self._owned(tenant, template_id))

    def _put(self, template: Template) -> Template:
        self._templates[template.template_id] = template
        self._save()
        return self._effective(template)

    def update(self, tenant: str, template_id: str, public: bool) -> Template:
        template = replace(self._owned(tenant, template_id), public=public, updated_at=time.time())
        return self._put(template)

    def delete(self, tenant: str, template_id: str) -> Template:
        template = self._owned(tenant, template_id)
        if any(b.status == BUILDING for b in template.builds):
            raise Conflict(f"template {template_id!r} is building; wait for the build to end")
        del self._templates[template.template_id]
        self._save()
        return template

    # -- builds ---------------------------------------------------------------------------

    def named(self, tenant: str, name: str) -> Template | None:
        """The tenant's own template called `name`, if any."""
        return next(
            (t for t in self._templates.values() if t.tenant == tenant and name in t.aliases),
            None,
        )

    def start_build(self, tenant: str, template: Template, build: Build) -> Template:
        """Add `build` to the tenant's `template` (created if new: its id unused)."""
        now = time.time()
        current = self._templates.get(template.template_id)
        if current is None:
            clash = self._names_taken(tenant, (template.template_id, *template.aliases))
            if clash:
                raise AlreadyExists(f"template name(s) {sorted(clash)} already in use")
            self.check_room(tenant)
            current = validate(replace(template, tenant=tenant, created_at=now))
        elif current.tenant != tenant:
            raise NotFound(f"template {template.template_id!r} not found")
        elif any(b.status == BUILDING for b in current.builds):
            raise Conflict(
                f"template {template.template_id!r} is already building; wait for that build"
            )
        current = replace(current, builds=(*current.builds, build), updated_at=now)
        return self._put(current)

    def finish_build(self, template_id: str, build: Build, keep: int = 5) -> Template | None:
        """Store a finished build; a ready one takes its tags from older builds and becomes
        the template's current one. Untagged old builds beyond `keep` are dropped (their
        layers are collected). None if the template was deleted meanwhile."""
        template = self._templates.get(template_id)
        if template is None:
            return None
        builds = []
        for old in template.builds:
            if old.build_id == build.build_id:
                old = build
            elif build.status == READY:
                old = replace(old, tags=tuple(t for t in old.tags if t not in build.tags))
            builds.append(old)
        ready_untagged = [b for b in builds if b.status == READY and not b.tags]
        dropped = {b.build_id for b in ready_untagged[:-keep]} if keep else set()
        builds = [b for b in builds if b.build_id not in dropped or b is build]
        current = build.build_id if build.status == READY else template.build_id
        if current in dropped:
            current = build.build_id
        updated = replace(template, builds=tuple(builds), build_id=current, updated_at=time.time())
        return self._put(updated)

    # -- tags -----------------------------------------------------------------------------

    def assign_tags(self, tenant: str, target: str, tags: Sequence[str]) -> Build:
        """Point `tags` at the build `target` (`name:tag`, or a name: its current build)."""
        for tag in tags:
            check_tag(tag)
        template, _ = self.resolve(target, tenant)
        owned = self._owned(tenant, template.template_id)
        chosen = template.build
        if chosen is None:
            raise Conflict(f"template {target!r} has no build to tag")
        builds = []
        for b in owned.builds:
            kept = tuple(t for t in b.tags if t not in tags)
            if b.build_id == chosen.build_id:
                kept = (*kept, *tags)
            builds.append(replace(b, tags=kept))
        self._put(replace(owned, builds=tuple(builds), updated_at=time.time()))
        return next(b for b in builds if b.build_id == chosen.build_id)

    def remove_tags(self, tenant: str, name: str, tags: Sequence[str]) -> None:
        owned = self._owned(tenant, name)
        present = {t for b in owned.builds for t in b.tags}
        missing = [t for t in tags if t not in present]
        if missing:
            raise NotFound(f"template {name!r} has no tag(s) {missing}")
        builds = tuple(replace(b, tags=tuple(t for t in b.tags if t not in tags))
                       for b in owned.builds)  # fmt: skip
        self._put(replace(owned, builds=builds, updated_at=time.time()))

    # -- what is in use -------------------------------------------------------------------

    def layers_in_use(self) -> set[str]:
        return {layer for t in self._templates.values() for b in t.builds for layer in b.layers}
