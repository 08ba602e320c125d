"""Templates users build, snapshots and fork, with the real Python SDK through `up`.

One template is built once for the module (COPY of a file and of a wheel made here,
pip_install of that wheel, set_envs, run_cmd) and used by every test; the rebuild test
checks that the same template builds again from cached layers only.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from e2b import (
    BuildException,
    NotFoundException,
    Sandbox,
    SandboxException,
    Template,
    TemplateClass,
    TemplateException,
)

from support.gateway import Gateway
from support.processes import wait_until

WHEEL_MODULE = "agentcube_tinypkg"


def _tiny_wheel(directory: Path) -> Path:
    """A pure-Python wheel with one module (no build backend needed)."""
    dist = f"{WHEEL_MODULE}-0.1.0"
    files = {
        f"{WHEEL_MODULE}/__init__.py": b"VALUE = 42\n",
        f"{dist}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {WHEEL_MODULE}\nVersion: 0.1.0\n".encode()
        ),
        f"{dist}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = directory / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return wheel


def _template(context: Path, wheel: Path) -> TemplateClass:
    return (
        Template(file_context_path=str(context))
        .from_base_image()
        .copy("app/hello.txt", "/home/user/hello.txt")
        .copy(f"wheels/{wheel.name}", "/tmp/")
        .pip_install(f"/tmp/{wheel.name}")
        .set_envs({"GREETING": "hi there"})
        .run_cmd("echo built-by-$GREETING > /home/user/built.txt")
    )


@dataclass(frozen=True)
class Built:
    name: str
    template: TemplateClass
    template_id: str
    build_id: str
    logs: list[str]


@pytest.fixture(scope="module")
def built(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    context = tmp_path_factory.mktemp("template-context")
    (context / "app").mkdir()
    (context / "app" / "hello.txt").write_text("hello from the build context\n")
    (context / "wheels").mkdir()
    wheel = _tiny_wheel(context / "wheels")
    name = f"e2e-{uuid.uuid4().hex[:10]}"
    template = _template(context, wheel)
    logs: list[str] = []
    info = Template.build(template, name, on_build_logs=lambda entry: logs.append(str(entry)))
    yield Built(name, template, info.template_id, info.build_id, logs)
    httpx.delete(f"{gateway.url}/templates/{info.template_id}",
                 headers={"x-api-key": gateway.api_key})  # fmt: skip


def test_a_built_template_has_its_files_packages_and_env(built: Built) -> None:
    assert any("Successfully installed agentcube-tinypkg" in line for line in built.logs)
    with Sandbox.create(built.name, timeout=120) as sandbox:
        result = sandbox.commands.run(
            "cat /home/user/hello.txt /home/user/built.txt; "
            f"python3 -c 'import {WHEEL_MODULE}; print({WHEEL_MODULE}.VALUE)'; "
            'echo "greeting=$GREETING"; stat -c %U /home/user/hello.txt'
        )
    assert result.stdout.splitlines() == [
        "hello from the build context",
        "built-by-hi there",
        "42",
        "greeting=hi there",
        "user",
    ]
    assert Template.exists(built.name)


def test_a_rebuild_takes_every_layer_from_the_cache(built: Built) -> None:
    logs: list[str] = []
    info = Template.build(built.template, built.name, on_build_logs=lambda e: logs.append(str(e)))
    assert info.template_id == built.template_id
    assert info.build_id != built.build_id
    cached = [line for line in logs if "CACHED [" in line]
    # The two COPYs, the pip install and the RUN: every step that makes files.
    assert len(cached) == 4, logs
    assert sum("Skipping upload" in line for line in logs) == 2
    status = Template.get_build_status(info)
    assert status.status.value == "ready"
    tags = Template.get_tags(built.name)
    assert [(t.tag, t.build_id) for t in tags] == [("default", info.build_id)]


def test_a_snapshot_restores_in_a_new_sandbox_and_fork_works(gateway: Gateway) -> None:
    with Sandbox.create(timeout=120) as source:
        source.files.write("/home/user/notes/state.txt", "written before the snapshot")
        snapshot = source.create_snapshot()
        source.files.write("/home/user/notes/state.txt", "changed after the snapshot")
        try:
            with Sandbox.create(snapshot.snapshot_id, timeout=120) as restored:
                assert restored.files.read("/home/user/notes/state.txt") == (
                    "written before the snapshot"
                )
            listed = Sandbox.list_snapshots(sandbox_id=source.sandbox_id).next_items()
            assert [s.snapshot_id for s in listed] == [snapshot.snapshot_id]
        finally:
            assert Sandbox.delete_snapshot(snapshot.snapshot_id) is True
        assert Sandbox.delete_snapshot(snapshot.snapshot_id) is False
        (fork,) = source.fork(timeout=60)
        assert isinstance(fork, Sandbox), fork
        try:
            assert fork.files.read("/home/user/notes/state.txt") == "changed after the snapshot"
            assert fork.sandbox_id != source.sandbox_id
        finally:
            fork.kill()
        assert source.is_running()


def test_a_registry_image_is_a_build_error_naming_the_base_step(gateway: Gateway) -> None:
    template = Template().from_image("python:3.12").run_cmd("true")
    with pytest.raises(BuildException, match=r"image 'python:3.12' cannot be used"):
        Template.build(template, f"e2e-{uuid.uuid4().hex[:10]}")


def test_another_tenant_can_neither_see_nor_use_templates_or_snapshots(
    gateway: Gateway, built: Built
) -> None:
    other = gateway.create_key(namespace="templates-other-team")
    headers = {"x-api-key": other}
    wait_until(  # the key index reloads within 250 ms of the key file's change
        lambda: httpx.get(f"{gateway.url}/templates", headers=headers).status_code == 200, 5
    )
    listed = httpx.get(f"{gateway.url}/templates", headers=headers).json()
    assert built.template_id not in {t["templateID"] for t in listed}
    for path in (
        f"/templates/{built.template_id}",
        f"/templates/{built.template_id}/builds/{built.build_id}/status",
        f"/templates/{built.template_id}/files/{'0' * 64}",
        f"/templates/{built.template_id}/tags",
        f"/templates/aliases/{built.name}",
    ):
        answer = httpx.get(gateway.url + path, headers=headers)
        assert (answer.status_code, answer.json()["code"]) == (404, 404), path
    assert not Template.exists(built.name, api_key=other)
    for template in (built.name, built.template_id):
        with pytest.raises(SandboxException, match="404"):
            Sandbox.create(template, api_key=other)
    for method in ("DELETE", "PATCH"):
        answer = httpx.request(method, f"{gateway.url}/templates/{built.template_id}",
                               headers=headers, json={"public": True})  # fmt: skip
        assert answer.status_code == 404, method
    with pytest.raises(TemplateException, match="404"):
        Template.assign_tags(f"{built.name}:default", "mine", api_key=other)
    with Sandbox.create(timeout=120) as sandbox:
        snapshot = sandbox.create_snapshot()
        try:
            assert Sandbox.list_snapshots(api_key=other).next_items() == []
            with pytest.raises(SandboxException, match="404"):
                Sandbox.create(snapshot.snapshot_id, api_key=other)
            assert Sandbox.delete_snapshot(snapshot.snapshot_id, api_key=other) is False
            with pytest.raises(NotFoundException):
                Sandbox.create_snapshot(sandbox.sandbox_id, api_key=other)
            with pytest.raises(NotFoundException):
                Sandbox.fork(sandbox.sandbox_id, api_key=other)
        finally:
            Sandbox.delete_snapshot(snapshot.snapshot_id)
    # The template is untouched, and still the owner's.
    assert Template.exists(built.name)


def test_upload_links_are_the_askers_alone(gateway: Gateway, built: Built) -> None:
    files_hash = hashlib.sha256(b"upload-link-test").hexdigest()
    link = httpx.get(
        f"{gateway.url}/templates/{built.template_id}/files/{files_hash}",
        headers={"x-api-key": gateway.api_key},
    ).json()
    assert link["present"] is False
    url = link["url"]
    assert url.startswith(gateway.url + "/")
    forged = url.replace("signature=", "signature=0")
    other_hash = url.replace(files_hash, hashlib.sha256(b"another").hexdigest())
    for wrong in (forged, other_hash):
        answer = httpx.put(wrong, content=b"not mine")
        assert answer.status_code in (403, 404), (wrong, answer.text)
    assert httpx.put(url, content=b"a tar would go here").status_code == 200
    again = httpx.get(
        f"{gateway.url}/templates/{built.template_id}/files/{files_hash}",
        headers={"x-api-key": gateway.api_key},
    ).json()
    assert again["present"] is True
