"""Issue 14's "any image can be a template", the whole path: the real SDK's `Template.build`
of `from_image` an image with no Python at all, through Envoy, the edge and the lifecycle
service in Kubernetes mode, becomes a CodeInterpreter; a sandbox of it runs the image with
picod injected (the gateway image's bundle, copied by an init container: the fake kubelet
runs both images as containers, support/python_less.py), with the template's env and its
start and ready commands applied before Sandbox.create returns; another tenant neither sees
it nor starts from it."""

from __future__ import annotations

import uuid

import pytest
from e2b import NotFoundException, Sandbox, SandboxException, Template

from e2e_k8s.conftest import GATEWAY_IMAGE, Cluster, Gateway
from e2e_k8s.kubelet import push_image
from support import python_less

# The newest agent-sandbox release only: past the Sandbox CR (written in both releases'
# schemas by tests/lifecycle_k8s/test_templates.py) nothing here depends on the release.
pytestmark = pytest.mark.newest_release_only

BUSYBOX_IMAGE = "registry.test/busybox:stable"


@pytest.fixture(scope="package")
def images(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The gateway image and busybox pushed to the node (the bundle built once a session)."""
    python_less.require_tools()
    gateway, busybox = python_less.image_roots(tmp_path_factory)
    push_image(cluster.images, GATEWAY_IMAGE, gateway)
    push_image(cluster.images, BUSYBOX_IMAGE, busybox)


def test_an_image_with_no_python_is_a_template_of_the_tenant(
    gateway: Gateway, images: None
) -> None:
    name = f"tiny-{uuid.uuid4().hex[:8]}"
    template = (
        Template()
        .from_image(BUSYBOX_IMAGE)
        .set_envs({"GREETING": "hello"})
        # slow to leave its mark: only a ready command that was waited on sees it
        .set_start_cmd("sleep 1; echo started > /tmp/mark; sleep 600", "test -s /tmp/mark")
    )
    Template.build(template, name, cpu_count=1, memory_mb=512)
    assert Template.exists(name)
    sbx = Sandbox.create(name, timeout=120)
    try:
        result = sbx.commands.run(
            'echo "$GREETING"; cat /tmp/mark; command -v python3 || echo none'
        )
        assert (result.exit_code, result.stdout) == (0, "hello\nstarted\nnone\n")
    finally:
        sbx.kill()
    assert not sbx.is_running()

    other = gateway.other_tenant_key
    assert not Template.exists(name, api_key=other)
    with pytest.raises((NotFoundException, SandboxException), match="not found"):
        Sandbox.create(name, timeout=60, api_key=other)
