"""Templates: what a sandbox is started from, kept in `templates.json` in the state dir.

The local runtime has no image builds: a template names resources and whether this machine
can run it. `base` is the host's userland with a fresh home; `code-interpreter-v1` adds the
code interpreter (`interpreter: true`). Whether interpreter templates can run is decided at
start-up (the interpreter's modules importable), not stored: when they cannot, Create of one
fails with a clear FAILED_PRECONDITION rather than a NOT_FOUND. `available: false` in the
file is an operator's switch and always wins.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from extproc.core.errors import AlreadyExists, Conflict, InvalidArgument, NotFound

# picod's reported envd version (extproc/picod/settings.py ENVD_VERSION); surfaces do not
# import each other, so the default template repeats it.
ENVD_VERSION = "0.6.4"
INTERPRETER_TEMPLATE = "code-interpreter-v1"
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")


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


def validate(template: Template) -> Template:
    """Check a template's fields; raise InvalidArgument naming the bad one."""
    for name in (template.template_id, *template.aliases):
        if not _NAME.fullmatch(name):
            raise InvalidArgument(
                f"invalid template name {name[:80]!r}: expected 1-63 characters of "
                "[a-z0-9_.-] starting with a letter or digit"
            )
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
    try:
        return validate(Template(**values))
    except (TypeError, InvalidArgument) as exc:
        raise ValueError(f"{where}: {exc}") from exc


class Catalog:
    """The templates of one state dir. Every change is written to disk before it is visible."""

    def __init__(self, path: Path, templates: list[Template], disk_mb: int) -> None:
        self._path = path
        self._disk_mb = disk_mb
        self._templates = {t.template_id: t for t in templates}
        # Why interpreter templates cannot run on this machine ('' when they can).
        self.interpreter_missing = ""

    @classmethod
    def load(cls, path: Path) -> Catalog:
        stat = os.statvfs(path.parent)
        disk_mb = stat.f_bavail * stat.f_frsize // (1024 * 1024)
        if not path.exists():
            catalog = cls(path, default_templates(time.time()), disk_mb)
            catalog._save()
            return catalog
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("templates"), list):
            raise ValueError(f'{path}: expected {{"templates": [...]}}')
        templates = [
            _from_json(t, f"{path}: templates[{i}]") for i, t in enumerate(doc["templates"])
        ]
        return cls(path, templates, disk_mb)

    def _save(self) -> None:
        doc = {"templates": [asdict(t) for t in self._templates.values()]}
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        tmp.replace(self._path)  # atomic: readers never see half a file

    def _visible(self, template: Template, tenant: str) -> bool:
        return not tenant or not template.tenant or template.tenant == tenant or template.public

    def _effective(self, template: Template) -> Template:
        if template.interpreter and template.available and self.interpreter_missing:
            template = replace(
                template, available=False, unavailable_reason=self.interpreter_missing
            )
        if template.disk_size_mb:
            return template
        return replace(template, disk_size_mb=self._disk_mb)

    def list(self, tenant: str) -> list[Template]:
        return [self._effective(t) for t in self._templates.values() if self._visible(t, tenant)]

    def resolve(self, name: str, tenant: str) -> tuple[Template, str]:
        """Template by id or alias, and the alias used ('' when named by id)."""
        found = self._templates.get(name)
        alias = ""
        if found is None:
            found = next((t for t in self._templates.values() if name in t.aliases), None)
            alias = name
        if found is None or not self._visible(found, tenant):
            raise NotFound(f"template {name[:80]!r} not found")
        return self._effective(found), alias

    def create(self, tenant: str, template: Template) -> Template:
        now = time.time()
        template = validate(replace(template, tenant=tenant, created_at=now, updated_at=now))
        taken = {n for t in self._templates.values() for n in (t.template_id, *t.aliases)}
        clash = {template.template_id, *template.aliases} & taken
        if clash:
            raise AlreadyExists(f"template name(s) {sorted(clash)} already in use")
        self._templates[template.template_id] = template
        self._save()
        return self._effective(template)

    def _owned(self, tenant: str, template_id: str) -> Template:
        template, _ = self.resolve(template_id, tenant)
        if tenant and template.tenant != tenant:
            # Shared templates are visible to all but changeable by none of them.
            raise Conflict(f"template {template_id!r} is shared and cannot be changed")
        return self._templates[template.template_id]

    def update(self, tenant: str, template_id: str, public: bool) -> Template:
        template = replace(self._owned(tenant, template_id), public=public, updated_at=time.time())
        self._templates[template.template_id] = template
        self._save()
        return self._effective(template)

    def delete(self, tenant: str, template_id: str) -> None:
        template = self._owned(tenant, template_id)
        del self._templates[template.template_id]
        self._save()
