"""A template build's steps, as the E2B SDK sends them, checked and turned into what runs.

Pure: no I/O. `building` walks the steps; `build_sandbox` runs the scripts made here.

Steps (E2B's TemplateStep, what the SDK's builder emits; `pip_install`, `apt_install`,
`npm_install`, `git_clone`, `remove`, `make_dir`, ... all arrive as RUN):
- RUN [command, user?]: `/bin/sh -c command` as `user` (default: the current USER), in the
  current WORKDIR, with the current ENV. `pip install` works system-wide as E2B's base
  image allows (PIP_BREAK_SYSTEM_PACKAGES=1: Debian's pip refuses otherwise).
- COPY [src, dest, owner?, mode?] + filesHash: the files the SDK uploaded for that hash,
  copied as Docker's COPY does (a directory's contents into dest; a file to dest, or into it
  when dest ends with `/`, is a directory or several sources match), owned by `owner`
  (default: the current USER) with `mode` if given.
- ENV [k1, v1, ...], WORKDIR [path], USER [name]: the context of later steps, and what a
  sandbox of the template starts with (its env vars, default user and working directory).

Cache keys: a RUN or COPY step's layer is named by a digest of the tenant, the layer below
it, the step (COPY's files by their hash) and the context it runs in, so a rebuild with the
same prefix finds every layer it made before and rebuilds from the first change on. A forced
step (`force`, the SDK's skip_cache) gets a unique key, and so does everything after it.

Bases: `from_template(...)` starts from another template's layers. A container image can
only be one that is exactly this gateway's base (`e2bdev/base`, or Debian at the base's own
release: `debian:bookworm` and `debian:12` on a bookworm base); any other image is a build
error naming the step, since nothing here pulls from a registry.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, replace

RUN, COPY, ENV, WORKDIR, USER = "RUN", "COPY", "ENV", "WORKDIR", "USER"
KINDS = (RUN, COPY, ENV, WORKDIR, USER)
# The SDK's names for the steps around the user's (e2b/template/consts.py).
BASE_STEP, FINALIZE_STEP = "base", "finalize"
DEFAULT_USER = "user"
DEFAULT_WORKDIR = "/home/user"
BASE_IMAGES = ("e2bdev/base", "e2bdev/base:latest")
# Inside the build sandbox: the step's files, log and exit status (`build_sandbox`).
STAGING = "/.agentcube-build"
_KEY_VERSION = 1
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MODE = re.compile(r"0?[0-7]{3,4}")
_OWNER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}(:[a-z_][a-z0-9_.-]{0,31})?")
_FILES_HASH = re.compile(r"[0-9a-f]{64}")
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What every RUN step's environment has before the template's own ENV.
_STEP_DEFAULTS = {
    "PATH": _PATH,
    "LANG": "C.UTF-8",
    "PIP_BREAK_SYSTEM_PACKAGES": "1",
    "DEBIAN_FRONTEND": "noninteractive",
}


class StepError(Exception):
    """A step that cannot run; `step` is its name for the SDK ("base", "1", "finalize")."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step
        self.message = message


@dataclass(frozen=True)
class Step:
    kind: str
    args: tuple[str, ...] = ()
    files_hash: str = ""
    force: bool = False


@dataclass(frozen=True)
class BuildSpec:
    """E2B's TemplateBuildStartV2."""

    from_image: str = ""
    from_template: str = ""
    # fromImageRegistry's `type`, when credentials were sent (never kept).
    registry: str = ""
    force: bool = False
    steps: tuple[Step, ...] = ()
    start_cmd: str = ""
    ready_cmd: str = ""


@dataclass(frozen=True)
class Context:
    """What a step runs with, changed by ENV, WORKDIR and USER."""

    env: tuple[tuple[str, str], ...] = ()
    user: str = DEFAULT_USER
    workdir: str = DEFAULT_WORKDIR

    def with_env(self, pairs: Mapping[str, str]) -> Context:
        merged = dict(self.env)
        merged.update(pairs)
        return replace(self, env=tuple(merged.items()))


def step_name(index: int) -> str:
    """The SDK's name of the step at `index` (0-based): its stack trace's index."""
    return str(index + 1)


def base_of(spec: BuildSpec, release: tuple[str, str]) -> str:
    """The template a build starts from; StepError("base") for an image this gateway
    cannot provide. `release`: the base's (codename, version), e.g. ("bookworm", "12")."""
    if spec.from_template:
        if spec.from_image:
            raise StepError(BASE_STEP, "set either fromImage or fromTemplate, not both")
        return spec.from_template
    image = spec.from_image or BASE_IMAGES[0]
    if spec.registry:
        raise StepError(
            BASE_STEP,
            f"image {image!r} from a private registry ({spec.registry}) cannot be used: this "
            "gateway has no container registry client; start from the base template or "
            "another template (from_template)",
        )
    name = image.removeprefix("docker.io/").removeprefix("library/")
    debian = {f"debian:{release[0]}", f"debian:{release[1]}"} if release[0] else set()
    if name in BASE_IMAGES or name in debian:
        return "base"
    accepted = ", ".join(sorted({BASE_IMAGES[0], *debian}))
    raise StepError(
        BASE_STEP,
        f"image {image!r} cannot be used: this gateway builds templates without a container "
        f"registry client, so a template starts from its base image ({accepted}) or from "
        "another template (from_template)",
    )


def _arg(step: Step, index: int, position: int) -> str:
    return step.args[position] if len(step.args) > position else ""


def check_step(step: Step, index: int) -> None:
    """StepError naming the step when it is malformed."""
    name = step_name(index)
    if step.kind not in KINDS:
        raise StepError(name, f"step {name}: unknown step type {step.kind!r}")
    if any("\0" in a for a in step.args):
        raise StepError(name, f"step {name}: arguments must not contain NUL characters")
    if step.kind == RUN and not _arg(step, index, 0).strip():
        raise StepError(name, f"step {name}: RUN needs a command")
    if step.kind == ENV:
        if len(step.args) % 2:
            raise StepError(name, f"step {name}: ENV needs name/value pairs")
        for key in step.args[::2]:
            if not _ENV_NAME.fullmatch(key):
                raise StepError(name, f"step {name}: invalid environment variable name {key!r}")
    if step.kind == WORKDIR and not _arg(step, index, 0):
        raise StepError(name, f"step {name}: WORKDIR needs a path")
    if step.kind == USER and not _OWNER.fullmatch(_arg(step, index, 0)):
        raise StepError(name, f"step {name}: invalid user {_arg(step, index, 0)!r}")
    if step.kind == COPY:
        if not _arg(step, index, 0) or not _arg(step, index, 1):
            raise StepError(name, f"step {name}: COPY needs a source and a destination")
        if not _FILES_HASH.fullmatch(step.files_hash):
            raise StepError(name, f"step {name}: COPY needs the files' sha256 (filesHash)")
        owner, mode = _arg(step, index, 2), _arg(step, index, 3)
        if owner and not _OWNER.fullmatch(owner):
            raise StepError(name, f"step {name}: invalid owner {owner!r}")
        if mode and not _MODE.fullmatch(mode):
            raise StepError(name, f"step {name}: invalid mode {mode!r}")


def apply_context(step: Step, context: Context) -> Context:
    """The context after an ENV, WORKDIR or USER step (others leave it as it is)."""
    if step.kind == ENV:
        return context.with_env(dict(zip(step.args[::2], step.args[1::2], strict=True)))
    if step.kind == WORKDIR:
        return replace(context, workdir=_absolute(step.args[0], context.workdir))
    if step.kind == USER:
        return replace(context, user=step.args[0])
    return context


def _absolute(path: str, workdir: str) -> str:
    return path if path.startswith("/") else f"{workdir.rstrip('/')}/{path}"


def describe(step: Step) -> str:
    """How the build log shows a step."""
    args = step.args
    if step.kind == RUN and len(args) > 1 and args[1]:
        return f"RUN {args[0]} (as {args[1]})"
    if step.kind == COPY:
        extra = "".join(f" ({label} {v})" for label, v in zip(("owner", "mode"), args[2:4],
                                                                  strict=False) if v)  # fmt: skip
        return f"COPY {' '.join(args[:2])}{extra}"
    if step.kind == ENV:
        return "ENV " + " ".join(f"{k}={v}" for k, v in zip(args[::2], args[1::2], strict=False))
    return f"{step.kind} {' '.join(args)}".strip()


def cache_key(tenant: str, below: str, step: Step, context: Context, forced: bool) -> str:
    """The id of the layer `step` makes on the layer `below` (see the module docstring)."""
    doc = [_KEY_VERSION, tenant, below, step.kind, list(step.args), step.files_hash,
           context.user, context.workdir, [list(p) for p in context.env]]  # fmt: skip
    if forced:
        doc.append(secrets.token_hex(16))
    return "b" + hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:40]


_PROLOGUE = """set -u
B={staging}
exec >"$B/log" 2>&1 </dev/null
fail() {{ echo "$*"; echo 125 >"$B/status"; exit 0; }}
"""


def _account(user: str) -> str:
    """Shell lines setting $uid, $gid and $home of `user` in the template, or failing."""
    return (
        f"u={shlex.quote(user)}\n"
        'entry=$(getent passwd "$u") || fail "user $u does not exist in the template"\n'
        'uid=$(printf %s "$entry" | cut -d: -f3); gid=$(printf %s "$entry" | cut -d: -f4)\n'
        'home=$(printf %s "$entry" | cut -d: -f6)\n'
    )


def run_script(command: str, user: str, context: Context) -> str:
    """The script a RUN step's build sandbox runs as its root (see `build_sandbox`)."""
    env = {**_STEP_DEFAULTS, **dict(context.env)}
    assignments = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
    return (
        _PROLOGUE.format(staging=STAGING)
        + _account(user)
        + f"w={shlex.quote(context.workdir)}\n"
        + 'mkdir -p -- "$w" && cd -- "$w" || fail "cannot enter the working directory $w"\n'
        + 'as=""; [ "$uid" = 0 ] || as="setpriv --reuid=$uid --regid=$gid --init-groups --"\n'
        + f'env -i HOME="$home" USER="$u" LOGNAME="$u" {assignments} '
        + f"$as /bin/sh -c {shlex.quote(command)}\n"
        + 'echo $? >"$B/status"\n'
    )


def copy_roots(members: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """The entries of an upload that its COPY's source matched: those whose directory is
    not itself in the archive (the SDK adds a matched directory and all it holds)."""
    names = {name for name, _ in members}
    roots = []
    for name, is_dir in members:
        parent = name.rpartition("/")[0]
        if not parent or parent not in names:
            roots.append((name, is_dir))
    return roots


def copy_script(step: Step, context: Context, roots: list[tuple[str, bool]]) -> str:
    """The script of a COPY step: the upload is at $B/files.tar (see the module docstring)."""
    dest = _absolute(step.args[1], context.workdir)
    owner = _arg(step, 0, 2) or context.user
    if ":" not in owner:
        owner += ":"
    mode = _arg(step, 0, 3)
    lines = [
        _PROLOGUE.format(staging=STAGING),
        _account(owner.partition(":")[0]),
        'mkdir "$B/ctx" && tar -xf "$B/files.tar" -C "$B/ctx" --no-same-owner '
        '|| fail "the uploaded files are not a readable tar archive"\n',
        f'chown -R {shlex.quote(owner)} "$B/ctx" || fail "cannot give the files to {owner}"\n',
    ]
    if mode:
        lines.append(f'chmod -R {shlex.quote(mode)} "$B/ctx" || fail "cannot set mode {mode}"\n')
    if not roots:
        lines.append('fail "no files were uploaded for this step"\n')
    into = dest.endswith("/") or len(roots) > 1
    quoted = shlex.quote(dest.rstrip("/") or "/")
    made = (
        f"[ -e {quoted} ] || {{ mkdir -p -- {quoted} && chown {shlex.quote(owner)} {quoted}; }}"
        f' || fail "cannot make {dest}"\n'
    )
    for name, is_dir in roots:
        source = '"$B/ctx/"' + shlex.quote(name)
        if is_dir:
            lines.append(made)
            lines.append(f'cp -a -- {source}/. {quoted}/ || fail "cannot copy {name}"\n')
        elif into:
            lines.append(made)
            lines.append(f'cp -a -- {source} {quoted}/ || fail "cannot copy {name}"\n')
        else:
            lines.append(
                f"if [ -d {quoted} ]; then cp -a -- {source} {quoted}/; else "
                f'mkdir -p -- "$(dirname -- {quoted})" && cp -a -- {source} {quoted}; fi '
                f'|| fail "cannot copy {name}"\n'
            )
    lines.append('echo 0 >"$B/status"\n')
    return "".join(lines)
