"""The pieces of template builds and snapshots that need no sandbox: steps, cache keys,
upload links and their server, the catalog's names, builds and tags, frozen layers'
ownership, and the check that keeps the host's writes inside a layered root."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from extproc.core.errors import AlreadyExists, Conflict, NotFound, ResourceExhausted
from extproc.lifecycle import build_steps as steps
from extproc.lifecycle.layers import NOBODY, shift_ownership
from extproc.lifecycle.mounting import check_root
from extproc.lifecycle.templates import DEFAULT_TAG, READY, SNAPSHOT, Build, Catalog, Template
from extproc.lifecycle.uploads import LINK_TTL_S, UploadServer, UploadStore

BOOKWORM = ("bookworm", "12")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (steps.BuildSpec(), "base"),
        (steps.BuildSpec(from_image="e2bdev/base"), "base"),
        (steps.BuildSpec(from_image="e2bdev/base:latest"), "base"),
        (steps.BuildSpec(from_image="debian:bookworm"), "base"),
        (steps.BuildSpec(from_image="docker.io/library/debian:12"), "base"),
        (steps.BuildSpec(from_template="my-env:v2"), "my-env:v2"),
    ],
)
def test_bases_this_gateway_can_provide(spec: steps.BuildSpec, expected: str) -> None:
    assert steps.base_of(spec, BOOKWORM) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (steps.BuildSpec(from_image="python:3.12"), "image 'python:3.12' cannot be used"),
        (steps.BuildSpec(from_image="debian:stable"), "debian:bookworm"),
        (steps.BuildSpec(from_image="e2bdev/base", registry="aws"), "private registry"),
        (steps.BuildSpec(from_image="x", from_template="y"), "not both"),
    ],
)
def test_other_bases_are_errors_of_the_base_step(spec: steps.BuildSpec, message: str) -> None:
    with pytest.raises(steps.StepError, match=message) as error:
        steps.base_of(spec, BOOKWORM)
    assert error.value.step == steps.BASE_STEP


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (steps.Step("FROB", ("x",)), "unknown step type"),
        (steps.Step("RUN", ("  ",)), "RUN needs a command"),
        (steps.Step("ENV", ("A",)), "name/value pairs"),
        (steps.Step("ENV", ("1BAD", "v")), "invalid environment variable name"),
        (steps.Step("USER", ("Root; rm",)), "invalid user"),
        (steps.Step("COPY", ("a", "/b"), "nothex"), "filesHash"),
        (steps.Step("COPY", ("a", "/b", "", "0999"), "a" * 64), "invalid mode"),
        (steps.Step("RUN", ("echo\0",)), "NUL"),
    ],
)
def test_malformed_steps_name_themselves(step: steps.Step, message: str) -> None:
    with pytest.raises(steps.StepError, match=message) as error:
        steps.check_step(step, 2)
    assert error.value.step == "3"  # the SDK's index of the third instruction


def test_cache_keys_follow_tenant_parent_step_and_context() -> None:
    run = steps.Step("RUN", ("make",))
    context = steps.Context()
    key = steps.cache_key("t", "template:base", run, context, forced=False)
    assert key == steps.cache_key("t", "template:base", run, context, forced=False)
    assert len({
        key,
        steps.cache_key("other", "template:base", run, context, forced=False),
        steps.cache_key("t", "b" + "0" * 40, run, context, forced=False),
        steps.cache_key("t", "template:base", steps.Step("RUN", ("make all",)), context, False),
        steps.cache_key("t", "template:base", run, context.with_env({"A": "1"}), False),
        steps.cache_key("t", "template:base", run, context, forced=True),
    }) == 6  # fmt: skip


def test_context_steps() -> None:
    context = steps.Context()
    for step in (steps.Step("ENV", ("A", "1", "B", "x y")), steps.Step("WORKDIR", ("app",)),
                 steps.Step("USER", ("root",)), steps.Step("ENV", ("A", "2"))):  # fmt: skip
        context = steps.apply_context(step, context)
    assert context == steps.Context(env=(("A", "2"), ("B", "x y")), user="root",
                                    workdir="/home/user/app")  # fmt: skip


def test_copy_roots_are_what_the_source_matched() -> None:
    members = [("app", True), ("app/a.py", False), ("app/sub", True), ("app/sub/b", False),
               ("docs/readme.md", False), ("x.txt", False)]  # fmt: skip
    assert steps.copy_roots(members) == [("app", True), ("docs/readme.md", False),
                                         ("x.txt", False)]  # fmt: skip


def test_step_scripts_quote_what_the_user_wrote() -> None:
    script = steps.run_script("echo '$(id)' > f", "user", steps.Context(env=(("K", "a b'c"),)))
    assert "/bin/sh -c 'echo '\"'\"'$(id)'\"'\"' > f'" in script
    assert "'K=a b'\"'\"'c'" in script
    copy = steps.copy_script(steps.Step("COPY", ("a b", "/dst dir/")), steps.Context(),
                             [("a b", False)])  # fmt: skip
    assert "\"$B/ctx/\"'a b' '/dst dir'/" in copy


def test_upload_links_are_signed_per_tenant_and_hash(tmp_path: Path) -> None:
    store = UploadStore(tmp_path)
    store.use_seed(b"s" * 32)
    files_hash = hashlib.sha256(b"x").hexdigest()
    now = time.time()
    link = store.link("tenant-a", files_hash, now)
    assert store.verify(link, now) == store.path("tenant-a", files_hash)
    assert store.path("tenant-a", files_hash) != store.path("tenant-b", files_hash)
    with pytest.raises(PermissionError, match="expired"):
        store.verify(link, now + LINK_TTL_S + 1)
    for forged in (link.replace("signature=", "signature=0"),
                   link.replace(files_hash, hashlib.sha256(b"y").hexdigest()),
                   link.replace("expires=", "expires=9")):  # fmt: skip
        with pytest.raises(PermissionError):
            store.verify(forged, now)
    other = UploadStore(tmp_path)
    other.use_seed(b"t" * 32)  # another gateway's seed
    with pytest.raises(PermissionError):
        other.verify(link, now)
    with pytest.raises(FileNotFoundError):
        store.verify("/_agentcube/template-files/../../etc/passwd?expires=1&signature=x", now)


async def _http(socket: Path, request: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(socket))
    writer.write(request)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


@pytest.fixture
async def upload_store(tmp_path: Path) -> AsyncIterator[UploadStore]:
    """A store whose server listens on `tmp_path / "uploads.sock"`."""
    store = UploadStore(tmp_path / "uploads")
    store.use_seed(b"s" * 32)
    server = UploadServer(store, tmp_path / "uploads.sock")
    await server.start()
    try:
        yield store
    finally:
        await server.close()


async def test_the_upload_server_stores_signed_uploads_only(
    upload_store: UploadStore, tmp_path: Path
) -> None:
    store = upload_store
    files_hash = hashlib.sha256(b"x").hexdigest()
    link = store.link("t", files_hash, time.time())
    sock = tmp_path / "uploads.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    plain = await _http(sock, f"PUT {link} HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello".encode())
    assert plain.startswith(b"HTTP/1.1 200")
    assert store.path("t", files_hash).read_bytes() == b"hello"
    chunked = (f"PUT {link} HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
               "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").encode()  # fmt: skip
    assert (await _http(sock, chunked)).startswith(b"HTTP/1.1 200")
    assert store.path("t", files_hash).read_bytes() == b"abcde"
    forged = link.replace("signature=", "signature=f")
    cases = {
        f"PUT {forged} HTTP/1.1\r\ncontent-length: 1\r\n\r\nx": b"403",
        f"GET {link} HTTP/1.1\r\n\r\n": b"405",
        f"PUT {link} HTTP/1.1\r\n\r\n": b"411",
        "PUT /elsewhere HTTP/1.1\r\ncontent-length: 1\r\n\r\nx": b"404",
    }
    for request, status in cases.items():
        assert (await _http(sock, request.encode())).split(b" ")[1] == status, request
    assert store.path("t", files_hash).read_bytes() == b"abcde"  # untouched


async def test_a_refused_upload_is_answered_though_its_body_comes_after(
    upload_store: UploadStore, tmp_path: Path
) -> None:
    # Envoy forwards the headers, then the body as it arrives; the answer comes before the
    # body is read, and a server that closed at once failed that write: Envoy made a 503
    forged = upload_store.link("t", hashlib.sha256(b"x").hexdigest(), time.time()) + "0"
    reader, writer = await asyncio.open_unix_connection(str(tmp_path / "uploads.sock"))
    writer.write(f"PUT {forged} HTTP/1.1\r\ncontent-length: 65536\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403")
    writer.write(b"x" * 65536)
    await writer.drain()  # no broken pipe
    assert b'"code":403' in await reader.read()
    writer.close()


def _catalog(tmp_path: Path) -> Catalog:
    return Catalog.load(tmp_path / "templates.json")


def _ready(build_id: str, layers: tuple[str, ...] = (), tags: tuple[str, ...] = ()) -> Build:
    return Build(build_id, status=READY, layers=layers, tags=tags or (DEFAULT_TAG,))


def test_names_are_per_tenant_and_other_tenants_see_nothing(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    for tenant, template_id in (("a", "aaaaaaaaaaaaaaaaaaaa"), ("b", "bbbbbbbbbbbbbbbbbbbb")):
        catalog.start_build(tenant, Template(template_id, aliases=("env",), public=False),
                            Build("1" + template_id))  # fmt: skip
        catalog.finish_build(template_id, _ready("1" + template_id, (f"layer-{tenant}",)))
    assert catalog.resolve("env", "a")[0].layers == ("layer-a",)
    assert catalog.resolve("env", "b")[0].layers == ("layer-b",)
    for name in ("aaaaaaaaaaaaaaaaaaaa", "env:default"):
        with pytest.raises(NotFound):
            catalog.resolve(name, "c")
    with pytest.raises(NotFound):
        catalog.resolve("aaaaaaaaaaaaaaaaaaaa", "b")
    with pytest.raises(NotFound):
        catalog.delete("b", "aaaaaaaaaaaaaaaaaaaa")
    with pytest.raises(AlreadyExists):
        catalog.start_build("a", Template("cccccccccccccccccccc", aliases=("base",)), Build("x"))
    assert catalog.layers_in_use() == {"layer-a", "layer-b"}


def test_a_tenant_keeps_at_most_its_share_of_templates_and_snapshots(tmp_path: Path) -> None:
    # each keeps layers of up to a sandbox's disk: uncapped, one tenant fills the host's
    catalog = Catalog.load(tmp_path / "templates.json", max_per_tenant=2)
    catalog.create("a", Template("aaaaaaaaaaaaaaaaaaa1", public=False))
    snapshot = Template("aaaaaaaaaaaaaaaaaaa2", public=False, kind=SNAPSHOT)
    catalog.start_build("a", snapshot, Build("s1"))
    catalog.finish_build(snapshot.template_id, _ready("s1"))
    for refused in (
        lambda: catalog.create("a", Template("aaaaaaaaaaaaaaaaaaa3", public=False)),
        lambda: catalog.start_build("a", Template("aaaaaaaaaaaaaaaaaaa4"), Build("x")),
    ):
        with pytest.raises(ResourceExhausted, match="at most 2 templates and snapshots"):
            refused()
    catalog.start_build("a", snapshot, Build("s2"))  # a new build of one it has: no new one
    catalog.create("b", Template("bbbbbbbbbbbbbbbbbbb1", public=False))  # its own share
    catalog.delete("a", "aaaaaaaaaaaaaaaaaaa1")
    catalog.create("a", Template("aaaaaaaaaaaaaaaaaaa3", public=False))
    # the built-ins are nobody's, and a reload keeps the cap it is given
    reloaded = Catalog.load(tmp_path / "templates.json", max_per_tenant=2)
    with pytest.raises(ResourceExhausted):
        reloaded.create("a", Template("aaaaaaaaaaaaaaaaaaa5", public=False))


def test_tags_move_to_the_newest_build_and_pick_what_starts(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    template = Template("dddddddddddddddddddd", aliases=("env",), public=False)
    catalog.start_build("a", template, Build("one"))
    catalog.finish_build(template.template_id, _ready("one", ("l1",), ("default", "v1")))
    catalog.start_build("a", template, Build("two", status="building"))
    with pytest.raises(Conflict):  # one build of a template at a time
        catalog.start_build("a", template, Build("three"))
    catalog.finish_build(template.template_id, _ready("two", ("l2",)))
    assert catalog.resolve("env", "a")[0].layers == ("l2",)
    assert catalog.resolve("env:v1", "a")[0].layers == ("l1",)
    catalog.assign_tags("a", "env:v1", ["stable"])
    assert catalog.resolve("env:stable", "a")[0].layers == ("l1",)
    catalog.remove_tags("a", "env", ["v1"])
    with pytest.raises(NotFound):
        catalog.resolve("env:v1", "a")
    reloaded = _catalog(tmp_path)  # on disk: survives a restart
    assert reloaded.resolve("env:stable", "a")[0].layers == ("l1",)


def test_a_build_running_at_a_restart_has_failed(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    catalog.start_build("a", Template("eeeeeeeeeeeeeeeeeeee", aliases=("env",)),
                        Build("b1", status="building"))  # fmt: skip
    reloaded = _catalog(tmp_path)
    _, build = reloaded.get_build("eeeeeeeeeeeeeeeeeeee", "b1", "a")
    assert (build.status, build.reason_step) == ("error", "finalize")
    assert "interrupted" in build.reason


def test_frozen_layers_hold_the_ids_the_sandbox_saw(tmp_path: Path) -> None:
    base = 9 * 65536
    tree = tmp_path / "tree"
    (tree / "home").mkdir(parents=True)
    owned = {"home": (base, base), "home/f": (base + 1000, base + 1000),
             "suid": (base, base), "host": (0, 0)}  # fmt: skip
    (tree / "home" / "f").write_text("x")
    (tree / "suid").write_text("#!/bin/sh\n")
    (tree / "host").write_text("made by the host")
    (tree / "link").symlink_to("/etc/passwd")
    os.lchown(tree / "link", base + 5, base + 5)
    for name, (uid, gid) in owned.items():
        os.chown(tree / name, uid, gid)
    (tree / "suid").chmod(0o4755)
    shift_ownership(tree, base)
    assert (tree / "home" / "f").stat().st_uid == 1000
    assert (tree / "home").stat().st_uid == 0
    assert stat.S_IMODE((tree / "suid").stat().st_mode) == 0o4755
    assert (tree / "host").stat().st_uid == NOBODY
    assert os.lstat(tree / "link").st_uid == 5
    assert Path("/etc/passwd").stat().st_uid == 0  # the link was not followed


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda r: (r / "var").mkdir() or (r / "var" / "log").symlink_to("/etc"),
         "/var/log is a symlink"),
        (lambda r: (r / "opt").symlink_to("/"), "/opt is a symlink"),
        (lambda r: (r / "etc").mkdir() or (r / "etc" / "hosts").symlink_to("/etc/shadow"),
         "/etc/hosts is a symlink"),
        (lambda r: (r / "proc").write_text("x"), "/proc is not a directory"),
    ],
)  # fmt: skip
def test_the_host_never_writes_through_a_layers_symlink(
    tmp_path: Path, make: object, reason: str
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    assert check_root(root) == ""
    make(root)  # type: ignore[operator]
    assert check_root(root) == reason
