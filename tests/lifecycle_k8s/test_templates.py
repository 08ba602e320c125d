"""Template builds in Kubernetes mode: `from_image` becomes a CodeInterpreter with picod
injected, and a sandbox of it runs in an image with no Python at all (busybox alone, run by
the fake kubelet as a container: support/python_less.py); any other step is refused naming
it. Names, tags, get, list, delete, and another tenant seeing none of it."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import httpx
import pytest

from e2e_k8s.kubelet import PICOD_PORT
from extproc.core.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    Unavailable,
    Unimplemented,
)
from extproc.lifecycle import kube_templates as kt
from extproc.lifecycle import manifests as m
from extproc.lifecycle.build_steps import BuildSpec, Step
from extproc.lifecycle.kubernetes import KubernetesBackend
from extproc.lifecycle.sandboxes import Sandbox, State
from extproc.lifecycle.templates import FAILED, READY
from support import python_less

from .conftest import COLD, Cluster, identity

GATEWAY_IMAGE = "registry.test/agentcube-e2b:test"
BUSYBOX_IMAGE = "registry.test/busybox:stable"

pytestmark = pytest.mark.asyncio(loop_scope="package")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The two images as root filesystems (python_less.image_roots)."""
    python_less.require_tools()
    gateway, busybox = python_less.image_roots(tmp_path_factory)
    return {GATEWAY_IMAGE: gateway, BUSYBOX_IMAGE: busybox}


async def _builder(cluster: Cluster, images: dict[str, Path]) -> KubernetesBackend:
    cluster.fake.kubelet.images.update(images)
    return await cluster.backends.start(picod_bundle_image=GATEWAY_IMAGE)


async def _build(
    backend: KubernetesBackend, tenant: str, name: str, spec: BuildSpec, tags: tuple[str, ...] = ()
) -> tuple[str, str]:
    template, build = await backend.request_build(tenant, name, list(tags), 0, 0)
    await backend.start_build(tenant, template.template_id, build.build_id, spec)
    return template.template_id, build.build_id


async def _run(sandbox: Sandbox, command: str) -> tuple[int | None, str]:
    """`command` through envd's process.Process/Start, as the SDK sends it (its JWT and
    token, the user in the Basic header): (exit code, stdout)."""
    body = json.dumps({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", command]}}).encode()
    headers = {
        "Content-Type": "application/connect+json", "Connect-Protocol-Version": "1",
        "Authorization": f"Bearer {identity().jwt(sandbox.sandbox_id)}",
        "X-Access-Token": sandbox.envd_access_token,
    }  # fmt: skip
    url = f"http://{sandbox.endpoint_host}:{PICOD_PORT}/process.Process/Start"
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        raw = (
            await client.post(url, headers=headers, content=struct.pack(">BI", 0, len(body)) + body)
        ).content
    code, out, offset = None, "", 0
    while offset + 5 <= len(raw):
        flags, size = struct.unpack(">BI", raw[offset : offset + 5])
        event = json.loads(raw[offset + 5 : offset + 5 + size]).get("event", {})
        offset += 5 + size
        if not flags & 0x02:
            out += base64.b64decode(event.get("data", {}).get("stdout", "")).decode()
            code = int(event["end"].get("exitCode", 0)) if "end" in event else code
    return code, out


async def test_an_image_with_no_python_becomes_a_template(
    cluster: Cluster, images: dict[str, Path]
) -> None:
    backend = await _builder(cluster, images)
    spec = BuildSpec(from_image=BUSYBOX_IMAGE, steps=(Step("ENV", ("GREETING", "hello")),))
    template_id, build_id = await _build(backend, cluster.tenant, "tiny", spec, ("v1",))
    build, logs = await backend.build_status(cluster.tenant, template_id, build_id, 0, 100, "")
    assert (build.status, build.tags) == (READY, ("v1",)), logs
    ci = cluster.stored("codeinterpreters", template_id)
    assert ci is not None and ci["spec"]["template"]["image"] == BUSYBOX_IMAGE
    assert ci["metadata"]["annotations"][m.PICOD_BUNDLE_IMAGE] == GATEWAY_IMAGE

    found = await backend.get_template("tiny", cluster.tenant)
    assert (found.template_id, found.aliases, found.build_id) == (template_id, ("tiny",), build_id)
    listed = {t.template_id for t in await backend.list_templates(cluster.tenant)}
    assert listed == {template_id, COLD}

    sandbox = await backend.create(cluster.spec("tiny:v1"))
    assert sandbox.state is State.RUNNING and sandbox.template_id == template_id
    pod = cluster.stored("sandboxes", m.object_name(sandbox.sandbox_id))
    assert pod is not None
    pod_spec = pod["spec"]["podTemplate"]["spec"]
    assert [c["image"] for c in pod_spec["initContainers"]] == [GATEWAY_IMAGE]
    assert pod_spec["volumes"] == [{"name": m.BUNDLE_VOLUME, "emptyDir": {}}]
    code, out = await _run(sandbox, 'echo "$GREETING"; command -v python3 || echo no python')
    assert (code, out) == (0, "hello\nno python\n")


async def test_steps_that_need_a_builder_are_refused_naming_the_step(
    cluster: Cluster, images: dict[str, Path]
) -> None:
    backend = await _builder(cluster, images)
    steps = (Step("ENV", ("A", "1")), Step("RUN", ("pip install numpy", "")))
    template, build = await backend.request_build(cluster.tenant, "heavy", [], 0, 0)
    with pytest.raises(Unimplemented, match=r"step 2 \(RUN pip install numpy\)"):
        await backend.start_build(cluster.tenant, template.template_id, build.build_id,
                                  BuildSpec(from_image=BUSYBOX_IMAGE, steps=steps))  # fmt: skip
    failed, logs = await backend.build_status(
        cluster.tenant, template.template_id, build.build_id, 0, 100, ""
    )
    assert (failed.status, failed.reason_step) == (FAILED, "2")
    assert "in-cluster builder" in logs[-1].message
    template, build = await backend.request_build(cluster.tenant, "heavy", [], 0, 0)
    with pytest.raises(Unimplemented, match=r"from_template"):
        await backend.start_build(cluster.tenant, template.template_id, build.build_id,
                                  BuildSpec(from_template="base"))  # fmt: skip
    assert cluster.names("codeinterpreters") == {COLD}


@pytest.mark.newest_release_only  # the CR's release is covered above
async def test_start_and_ready_commands_run_before_the_sandbox_is_handed_out(
    cluster: Cluster, images: dict[str, Path]
) -> None:
    backend = await _builder(cluster, images)
    steps = (Step("ENV", ("GREETING", "hello")), Step("USER", ("user",)),
             Step("WORKDIR", ("/tmp",)))  # fmt: skip
    # The start command is slow to leave its mark: only a ready command that was waited for
    # hands the sandbox out after it.
    spec = BuildSpec(from_image=BUSYBOX_IMAGE, steps=steps,
                     start_cmd='sleep 1; echo "$GREETING" > started; sleep 600',
                     ready_cmd="test -s started")  # fmt: skip
    template_id, _ = await _build(backend, cluster.tenant, "served", spec)
    await backend.assign_tags(cluster.tenant, "served", ["v2"])  # the record keeps them
    found = await backend.get_template("served:v2", cluster.tenant)
    assert (found.user, found.workdir, found.start_cmd, found.ready_cmd) == (
        "user", "/tmp", spec.start_cmd, spec.ready_cmd)  # fmt: skip

    sandbox = await backend.create(cluster.spec("served:v2"))
    assert sandbox.state is State.RUNNING and sandbox.template_id == template_id
    code, out = await _run(sandbox, "cat started; pwd")
    assert (code, out) == (0, "hello\n/tmp\n")
    # A resume starts a new pod (nothing of the old one's processes or files): the start
    # command runs again, and the resume too returns only once the ready command succeeds.
    await backend.pause(sandbox.sandbox_id, cluster.tenant)
    resumed = await backend.resume(sandbox.sandbox_id, cluster.tenant, None)
    code, out = await _run(resumed, "cat started")
    assert (code, out) == (0, "hello\n")


@pytest.mark.newest_release_only  # the CR's release is covered above
async def test_a_ready_command_that_never_succeeds_fails_the_create(
    cluster: Cluster, images: dict[str, Path]
) -> None:
    cluster.fake.kubelet.images.update(images)
    backend = await cluster.backends.start(picod_bundle_image=GATEWAY_IMAGE, ready_timeout_s=8.0)
    spec = BuildSpec(from_image=BUSYBOX_IMAGE, ready_cmd="echo not yet; false")
    await _build(backend, cluster.tenant, "never", spec)
    with pytest.raises(Unavailable, match=r"ready command did not succeed within .*not yet"):
        await backend.create(cluster.spec("never"))
    assert cluster.names("sandboxes") == set()  # rolled back


async def test_an_injected_template_has_no_warm_pool() -> None:
    # AgentCube's pool pods come from the CodeInterpreter alone: no init container, no picod.
    ci = {"metadata": {"annotations": {m.PICOD_BUNDLE_IMAGE: GATEWAY_IMAGE}},
          "spec": {"warmPoolSize": 3, "template": {"image": BUSYBOX_IMAGE}}}  # fmt: skip
    assert m.warm_pool_size(ci) == 0
    assert m.warm_pool_size({"spec": {"warmPoolSize": 3}}) == 3


async def test_without_a_bundle_image_from_image_is_refused(
    cluster: Cluster, backend: KubernetesBackend
) -> None:
    template, build = await backend.request_build(cluster.tenant, "plain", [], 0, 0)
    with pytest.raises(Unimplemented, match="--picod-bundle-image"):
        await backend.start_build(cluster.tenant, template.template_id, build.build_id,
                                  BuildSpec(from_image=BUSYBOX_IMAGE))  # fmt: skip


async def test_a_bad_image_reference_fails_the_base_step(
    cluster: Cluster, images: dict[str, Path]
) -> None:
    backend = await _builder(cluster, images)
    for image in ("busybox\n:latest", "x" * 600):
        template, build = await backend.request_build(cluster.tenant, "bad", [], 0, 0)
        with pytest.raises(InvalidArgument, match="not an image reference"):
            await backend.start_build(cluster.tenant, template.template_id, build.build_id,
                                      BuildSpec(from_image=image))  # fmt: skip
        failed, _ = await backend.build_status(
            cluster.tenant, template.template_id, build.build_id, 0, 100, "")  # fmt: skip
        assert (failed.status, failed.reason_step) == (FAILED, "base")
    assert cluster.names("codeinterpreters") == {COLD}


@pytest.mark.newest_release_only  # the CR's release is covered above
async def test_names_tags_and_delete_stay_in_the_tenant(
    cluster: Cluster, images: dict[str, Path]
) -> None:
    backend = await _builder(cluster, images)
    template_id, _ = await _build(backend, cluster.tenant, "mine", BuildSpec(from_image="a:1"))
    # Another tenant: nothing by name or id, and its own name is free.
    for name in ("mine", template_id):
        with pytest.raises(NotFound):
            await backend.get_template(name, cluster.other)
        with pytest.raises(NotFound):
            await backend.delete_template(cluster.other, name)
    theirs, _ = await _build(backend, cluster.other, "mine", BuildSpec(from_image="b:1"))
    assert theirs != template_id
    # A rebuild keeps the id and moves the image; tags follow local mode's rules.
    again, _ = await _build(backend, cluster.tenant, "mine", BuildSpec(from_image="a:2"))
    assert again == template_id
    assert (await backend.assign_tags(cluster.tenant, "mine", ["prod"])).tags == (
        "default", "prod")  # fmt: skip
    await backend.remove_tags(cluster.tenant, "mine", ["default"])
    with pytest.raises(NotFound):
        await backend.get_template("mine:default", cluster.tenant)
    assert (await backend.get_template("mine:prod", cluster.tenant)).template_id == template_id
    # An operator's CodeInterpreter is not the API's to change, nor its name to take.
    with pytest.raises(Unimplemented, match="operator"):
        await backend.delete_template(cluster.tenant, COLD)
    with pytest.raises(AlreadyExists, match="operator"):
        await backend.request_build(cluster.tenant, COLD, [], 0, 0)
    await backend.delete_template(cluster.tenant, "mine")
    assert cluster.names("codeinterpreters") == {COLD}
    assert kt.template_view(
        cluster.stored("codeinterpreters", theirs, cluster.other) or {}
    ).aliases == ("mine",)
