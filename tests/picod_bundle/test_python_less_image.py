"""picod's bundle in an image with no Python and no libc, driven through the real E2B SDK.

The image is busybox alone (support/python_less.py); the bundle is mounted where the
Kubernetes init container puts it and started with the launcher the Sandbox manifest uses.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2b import ConnectionConfig, Sandbox
from packaging.version import Version

from extproc.lifecycle.manifests import BUNDLE_MOUNT
from extproc.picod_bundle import launcher
from support import python_less
from support.processes import NotHealthy, free_port, wait_healthy

TOKEN = "bundle-test-token"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    python_less.require_tools()
    return python_less.session_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def picod_url(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = python_less.busybox_root(tmp_path_factory.mktemp("image"))
    port = free_port()
    argv = [*launcher(BUNDLE_MOUNT), "picod", "--listen", f"127.0.0.1:{port}",
            "--access-token", TOKEN, "--home", "/home/user"]  # fmt: skip
    # What an image and a pod might set: none of it may reach picod's Python or its children.
    env = {"PATH": "/bin", "PYTHONPATH": "/nowhere", "PYTHONHOME": "/nowhere"}
    log = (root / "picod.log").open("wb")
    proc = subprocess.Popen(
        python_less.in_root(root, {BUNDLE_MOUNT: bundle}, argv, env),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}/health", 204, timeout_s=20, interval_s=0.05)
        yield f"http://127.0.0.1:{port}"
    except NotHealthy as error:
        raise AssertionError(f"{error}\n{(root / 'picod.log').read_text()}") from None
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def _sandbox(url: str) -> Sandbox:
    return Sandbox(
        sandbox_id="sbxbundle", sandbox_domain=None, envd_version=Version("0.6.4"),
        envd_access_token=TOKEN, traffic_access_token=None,
        connection_config=ConnectionConfig(sandbox_url=url,
                                           extra_sandbox_headers={"X-Access-Token": TOKEN}),
    )  # fmt: skip


def test_the_image_has_no_python(picod_url: str) -> None:
    sandbox = _sandbox(picod_url)
    assert sandbox.commands.run("echo hi").stdout == "hi\n"
    probe = sandbox.commands.run("ls /bin; ls /lib /usr 2>&1; command -v python3 || echo none")
    assert "python" not in probe.stdout.replace("none", ""), probe.stdout
    assert probe.stdout.strip().endswith("none")


def test_the_bundle_leaks_nothing_into_commands(picod_url: str) -> None:
    env = _sandbox(picod_url).commands.run("env").stdout
    assert not [line for line in env.splitlines() if line.startswith(("PYTHON", "LD_"))], env
    assert BUNDLE_MOUNT not in env


def test_files_round_trip(picod_url: str) -> None:
    sandbox = _sandbox(picod_url)
    sandbox.files.write("/home/user/hello.txt", "from the bundle\n")
    assert sandbox.commands.run("cat /home/user/hello.txt").stdout == "from the bundle\n"
    assert sandbox.files.read("/home/user/hello.txt") == "from the bundle\n"
