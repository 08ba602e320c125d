"""Start-up in Kubernetes mode: the flags, what the edge reads through the API before it
serves, and the one-line refusal (never a traceback) of both commands when a Secret is
missing or forbidden."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from extproc.edge import command as edge_command
from extproc.k8s import lifecycle_tls
from extproc.k8s.identity import SecretMissing, SecretUnavailable
from extproc.lifecycle import command as lifecycle_command
from support.crds import load_crds
from support.kubeapi import FakeApi, served

SYSTEM = "agentcube-system"
AGENTCUBE = "agentcube"
CLI = [sys.executable, "-m", "extproc.cli"]


def parse(module: Any, *argv: str) -> Any:
    parser = argparse.ArgumentParser()
    module.register(parser)
    return module.settings_from_args(parser.parse_args(list(argv)))


@pytest.fixture
def no_namespace_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AGENTCUBE_NAMESPACE", "POD_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    for prefix in ("AGENTCUBE_E2B_LIFECYCLE_", "AGENTCUBE_E2B_EDGE_"):
        for name in ("IDENTITY_NAMESPACE", "NAMESPACE", "LIFECYCLE_TLS_SECRET"):
            monkeypatch.delenv(prefix + name, raising=False)


# -- flags --------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_namespace_env")
@pytest.mark.parametrize("module", [lifecycle_command, edge_command])
def test_identity_namespace_defaults_to_agentcubes(
    module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert parse(module).kubernetes.identity_namespace == "agentcube"
    monkeypatch.setenv("AGENTCUBE_NAMESPACE", "ac")  # AgentCube's own variable
    assert parse(module).kubernetes.identity_namespace == "ac"
    assert parse(module, "--identity-namespace", "other").kubernetes.identity_namespace == "other"
    with pytest.raises(ValueError, match="--identity-namespace"):
        parse(module, "--identity-namespace", "Not_A_Namespace")


@pytest.mark.usefixtures("no_namespace_env")
def test_lifecycle_kubernetes_flags() -> None:
    kube = parse(lifecycle_command).kubernetes
    assert (kube.create_identity, kube.agent_sandbox_version) == (False, "auto")
    assert (kube.proof_secret, kube.lifecycle_tls_secret) == (
        "e2b-object-proof-key", "e2b-lifecycle-tls"
    )  # fmt: skip
    kube = parse(
        lifecycle_command, "--create-identity", "--agent-sandbox-version", "v1beta1",
        "--proof-secret", "p", "--lifecycle-tls-secret", "",
    ).kubernetes  # fmt: skip
    assert (kube.create_identity, kube.agent_sandbox_version) == (True, "v1beta1")
    assert (kube.proof_secret, kube.lifecycle_tls_secret) == ("p", "")
    with pytest.raises(ValueError, match="--proof-secret"):
        parse(lifecycle_command, "--proof-secret", "")
    with pytest.raises(SystemExit):
        parse(lifecycle_command, "--agent-sandbox-version", "v2")
    server = parse(lifecycle_command, "--health-listen", "0.0.0.0:9003").server
    assert server.health_listen == "0.0.0.0:9003"
    with pytest.raises(ValueError, match="--health-listen"):
        parse(lifecycle_command, "--listen", "127.0.0.1:9002", "--health-listen", "127.0.0.1:9002")


def _tls_files(directory: Path, data: dict[str, bytes]) -> Path:
    directory.mkdir()
    for name in ("ca.crt", "client.crt", "client.key"):
        (directory / name).write_bytes(data[name])
    return directory


def test_lifecycle_tls_from_files(tmp_path: Path) -> None:
    data = lifecycle_tls.new_secret_data(SYSTEM)
    directory = _tls_files(tmp_path / "tls", data)
    tls = parse(edge_command, "--lifecycle-tls-dir", str(directory)).directory.lifecycle_tls
    assert (tls.ca_pem, tls.cert_pem, tls.key_pem) == (
        data["ca.crt"], data["client.crt"], data["client.key"]
    )  # fmt: skip
    assert parse(edge_command).directory.lifecycle_tls is None
    (directory / "client.key").write_bytes(lifecycle_tls.new_secret_data(SYSTEM)["client.key"])
    with pytest.raises(ValueError, match=r"--lifecycle-tls-dir: .*does not match"):
        parse(edge_command, "--lifecycle-tls-dir", str(directory))
    with pytest.raises(ValueError, match="--lifecycle-tls-dir"):
        parse(edge_command, "--lifecycle-tls-dir", str(tmp_path / "absent"))


# -- what the edge reads at start --------------------------------------------------------


def _secret(namespace: str, name: str, data: dict[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace},
        "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
    }  # fmt: skip


def identity_data() -> dict[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "private.pem": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
        "public.pem": key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }


@pytest.fixture
async def api() -> AsyncIterator[FakeApi]:
    def setup(fake: FakeApi) -> None:
        fake.install("secrets", "configmaps", writable=True)
        for crd in load_crds("agent-sandbox-v0.4.6", "agentcube"):
            fake.install_crd(crd)

    async with served(setup) as fake:
        yield fake


@pytest.fixture
def kubeconfig(api: FakeApi, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
        "users": [{"name": "fake", "user": {}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
    }))  # fmt: skip
    yield path


def edge_settings(kubeconfig: Path, *extra: str) -> Any:
    return parse(
        edge_command, "--keys-source", "kubernetes", "--directory-source", "kubernetes",
        "--kubeconfig", str(kubeconfig), "--namespace", SYSTEM, "--identity-namespace",
        AGENTCUBE, "--secret-wait", "0", *extra,
    )  # fmt: skip


@pytest.mark.usefixtures("no_namespace_env")
async def test_the_edge_reads_identity_tls_and_proof_key(api: FakeApi, kubeconfig: Path) -> None:
    identity, tls = identity_data(), lifecycle_tls.new_secret_data(SYSTEM)
    api.put("secrets", _secret(AGENTCUBE, "picod-router-identity", identity))
    api.put("secrets", _secret(SYSTEM, "e2b-lifecycle-tls", tls))
    api.put("secrets", _secret(SYSTEM, "e2b-object-proof-key", {"key": b"k" * 32}))
    settings = await edge_command.with_cluster_secrets(edge_settings(kubeconfig))
    assert settings.tokens.identity.private_pem == identity["private.pem"]
    assert settings.tokens.identity.public_pem == identity["public.pem"]
    edge_tls = settings.directory.lifecycle_tls
    assert (edge_tls.ca_pem, edge_tls.cert_pem, edge_tls.key_pem) == (
        tls["ca.crt"], tls["client.crt"], tls["client.key"]
    )  # fmt: skip
    assert settings.kubernetes.proof_key == b"k" * 32
    assert b"k" * 32 not in repr(settings).encode()  # secrets stay out of reprs and logs
    assert api.writes("secrets") == []  # the edge only reads


@pytest.mark.usefixtures("no_namespace_env")
async def test_plaintext_edge_skips_the_tls_secret(api: FakeApi, kubeconfig: Path) -> None:
    api.put("secrets", _secret(AGENTCUBE, "picod-router-identity", identity_data()))
    api.put("secrets", _secret(SYSTEM, "e2b-object-proof-key", {"key": b"k" * 32}))
    settings = await edge_command.with_cluster_secrets(
        edge_settings(kubeconfig, "--lifecycle-tls-secret", "")
    )
    assert settings.directory.lifecycle_tls is None


@pytest.mark.usefixtures("no_namespace_env")
@pytest.mark.parametrize(
    ("present", "missing"),
    [
        ((), f"Secret {AGENTCUBE}/picod-router-identity not found"),
        (("identity",), f"Secret {SYSTEM}/e2b-lifecycle-tls not found"),
        (("identity", "tls"), f"Secret {SYSTEM}/e2b-object-proof-key not found"),
    ],
)
async def test_the_edge_names_the_missing_secret(
    api: FakeApi, kubeconfig: Path, present: tuple[str, ...], missing: str
) -> None:
    if "identity" in present:
        api.put("secrets", _secret(AGENTCUBE, "picod-router-identity", identity_data()))
    if "tls" in present:
        tls = lifecycle_tls.new_secret_data(SYSTEM)
        api.put("secrets", _secret(SYSTEM, "e2b-lifecycle-tls", tls))
    with pytest.raises(SecretMissing, match=missing):
        await edge_command.with_cluster_secrets(edge_settings(kubeconfig))


async def test_start_up_waits_for_a_secret_being_created(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edge_command, "_SECRET_POLL_S", 0.0)
    calls = 0

    async def appears_third() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise SecretMissing("Secret a/b not found: soon")
        return "made"

    assert await edge_command._when_created(appears_third, 5.0) == "made"
    assert calls == 3

    async def forbidden() -> str:
        raise SecretUnavailable("reading Secret a/b is forbidden")

    with pytest.raises(SecretUnavailable, match="forbidden"):  # not waited for
        await edge_command._when_created(forbidden, 3600.0)

    async def never() -> str:
        raise SecretMissing("Secret a/b not found")

    monkeypatch.setattr(edge_command, "_SECRET_POLL_S", 0.01)
    with pytest.raises(SecretMissing):
        await edge_command._when_created(never, 0.05)


# -- the commands refuse in one line ---------------------------------------------------


async def run_cli(*argv: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *CLI, *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[1])},
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


def refusal(stderr: str, command: str) -> str:
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"agentcube-e2b {command}: "), stderr
    return last


async def test_edge_without_agentcubes_identity_exits_with_one_line(kubeconfig: Path) -> None:
    code, stderr = await run_cli(
        "edge", "--listen", "127.0.0.1:0", "--metrics-listen", "", "--keys-source", "kubernetes",
        "--directory-source", "kubernetes", "--kubeconfig", str(kubeconfig), "--secret-wait", "0",
    )  # fmt: skip
    assert code == 1
    line = refusal(stderr, "edge")
    assert "Secret agentcube/picod-router-identity not found" in line
    assert "--create-identity" in line


async def test_lifecycle_without_agentcubes_identity_exits_with_one_line(
    api: FakeApi, kubeconfig: Path
) -> None:
    code, stderr = await run_cli(
        "lifecycle", "--backend", "kubernetes", "--kubeconfig", str(kubeconfig),
        "--listen", "127.0.0.1:0", "--namespace", SYSTEM,
    )  # fmt: skip
    assert code == 1
    line = refusal(stderr, "lifecycle")
    assert "Secret agentcube/picod-router-identity not found" in line
    assert "--identity-namespace" in line and "--create-identity" in line
    assert api.get("secrets", AGENTCUBE, "picod-router-identity") is None


async def test_lifecycle_forbidden_to_make_its_tls_secret_exits_with_one_line(
    api: FakeApi, kubeconfig: Path
) -> None:
    api.fail("POST", "secrets", 403)
    code, stderr = await run_cli(
        "lifecycle", "--backend", "kubernetes", "--kubeconfig", str(kubeconfig),
        "--listen", "127.0.0.1:0", "--namespace", SYSTEM,
    )  # fmt: skip
    assert code == 1
    line = refusal(stderr, "lifecycle")
    assert f"creating Secret {SYSTEM}/e2b-lifecycle-tls is forbidden" in line
