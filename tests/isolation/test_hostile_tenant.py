"""A hostile tenant inside a real sandbox, through the real SDK and `up`: what it can reach,
read and break. Each test is one of issue 9's acceptance items."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import CommandExitException, Sandbox

from isolation.conftest import INTERNET_ADDRESS, INTERNET_PORT
from support.gateway import Gateway

REPO = Path(__file__).resolve().parents[2]

# Connects to each (host, port) in argv[1] (JSON) from inside the sandbox; prints the ones
# that accepted.
_CONNECT_ALL = """
import json, socket, sys
accepted = []
for host, port in json.loads(sys.argv[1]):
    s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)
    s.settimeout(0.3)
    try:
        s.connect((host, port))
        accepted.append([host, port])
    except OSError:
        pass
    finally:
        s.close()
print(json.dumps(accepted))
"""


def _run(sbx: Sandbox, command: str, **kwargs: object) -> str:
    return str(sbx.commands.run(command, **kwargs).stdout)  # type: ignore[arg-type]


@contextlib.contextmanager
def _sandbox(**kwargs: object) -> Iterator[Sandbox]:
    sbx = Sandbox.create(timeout=300, **kwargs)  # type: ignore[arg-type]
    try:
        yield sbx
    finally:
        sbx.kill()


def _host_listeners() -> list[tuple[str, int]]:
    """Every TCP socket listening in this (the host's) network namespace."""
    found = []
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            raw, port = fields[1].split(":")
            packed = bytes.fromhex(raw)
            # /proc prints each 32-bit word in host (little-endian) order
            words = b"".join(packed[i : i + 4][::-1] for i in range(0, len(packed), 4))
            found.append((socket.inet_ntop(family, words), int(port, 16)))
    return found


def _host_addresses() -> list[str]:
    out = subprocess.run(["ip", "-j", "addr"], capture_output=True, check=True).stdout
    return [a["local"] for link in json.loads(out) for a in link.get("addr_info", [])]


def test_no_listener_of_the_host_accepts_from_inside(gateway: Gateway) -> None:
    listeners = _host_listeners()
    assert listeners, "the gateway itself listens: the enumeration found nothing"
    addresses = _host_addresses()
    own_ports = {49983, 49999}  # the sandbox's own servers answer on its own loopback
    targets = set()
    for host, port in listeners:
        wildcard = host in ("0.0.0.0", "::")
        for address in addresses if wildcard else [host]:
            loopback = address.startswith("127.") or address == "::1"
            if loopback and port in own_ports:
                continue
            targets.add((address.split("%")[0], port))
    with _sandbox() as sbx:
        sbx.files.write("/tmp/connect_all.py", _CONNECT_ALL)
        out = _run(sbx, f"python3 /tmp/connect_all.py '{json.dumps(sorted(targets))}'")
    assert json.loads(out) == [], f"host listeners reachable from a sandbox: {out}"


def test_no_other_sandbox_is_reachable_from_inside(gateway: Gateway) -> None:
    with _sandbox() as first, _sandbox() as second:
        address = _run(second, "ip -4 -o addr show eth0").split()[3].split("/")[0]
        hub = _run(first, "ip route show default").split()[2]
        targets = [[address, 49983], [address, 49999], [hub, 49983], [hub, 22], [hub, 80]]
        first.files.write("/tmp/connect_all.py", _CONNECT_ALL)
        out = _run(first, f"python3 /tmp/connect_all.py '{json.dumps(targets)}'")
        assert json.loads(out) == [], f"reachable from another sandbox: {out}"


def test_state_checkout_work_and_homes_are_invisible(gateway: Gateway) -> None:
    secrets = [
        gateway.state_dir,
        gateway.state_dir / "identity",
        gateway.state_dir / "keys",
        gateway.state_dir / "lifecycle" / "token-seed",
        REPO,
        REPO / ".venv",
        Path("/work"),
        Path("/root/.pyenv"),
    ]
    with _sandbox() as sbx:
        for path in secrets:
            probe = sbx.commands.run(f"test -e {path} && echo VISIBLE || echo absent", user="root")
            assert probe.stdout.strip() == "absent", f"{path} is visible inside the sandbox"
        found = _run(sbx, "find / -xdev -name token-seed -o -name 'e2b-api-keys*' 2>/dev/null",
                     user="root")  # fmt: skip
        assert found.strip() == ""


def test_ps_shows_no_process_of_another_sandbox(gateway: Gateway) -> None:
    with _sandbox() as first, _sandbox() as second:
        first.commands.run("sleep 4242", background=True)
        assert "sleep 4242" in _run(first, "ps -eo args")
        seen = _run(second, "ps -eo args")
        assert "sleep 4242" not in seen
        assert first.sandbox_id not in seen
        # Each sandbox's ids are host ids of its own, none of them root's.
        maps = [_run(s, "cat /proc/self/uid_map").split() for s in (first, second)]
        assert maps[0][:1] == maps[1][:1] == ["0"]
        assert maps[0][1] != maps[1][1]
        assert all(int(m[1]) > 65535 for m in maps)


@pytest.mark.timeout(180)
def test_a_process_storm_leaves_others_responsive(gateway: Gateway) -> None:
    storm = (
        "import os, time\n"
        "started = 0\n"
        "for _ in range(1500):\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(120); os._exit(0)\n"
        "        started += 1\n"
        "    except OSError:\n"
        "        break\n"
        "print(started, flush=True)\n"
        "time.sleep(120)\n"
    )
    with _sandbox() as noisy, _sandbox() as quiet:
        noisy.files.write("/tmp/storm.py", storm)
        noisy.commands.run("python3 /tmp/storm.py > /tmp/storm.out 2>&1", background=True)
        started = ""
        for _ in range(150):  # read by picod itself: the noisy sandbox cannot fork any more
            with contextlib.suppress(Exception):
                started = str(noisy.files.read("/tmp/storm.out")).strip()
            if started:
                break
            time.sleep(0.2)
        assert started and int(started.split()[0]) < 1500, "no process limit stopped the storm"
        assert _run(quiet, "echo still here", timeout=10).strip() == "still here"
        ids = {s.sandbox_id for s in Sandbox.list().next_items()}
        assert quiet.sandbox_id in ids


def test_a_memory_hog_fails_and_the_sandbox_lives_on(gateway: Gateway) -> None:
    with _sandbox() as sbx:
        with pytest.raises(CommandExitException):
            sbx.commands.run("python3 -c 'bytearray(6 * 1024 ** 3)'", timeout=60)
        assert _run(sbx, "echo alive").strip() == "alive"


def _serve(sbx: Sandbox, port: int, bind: str, text: str) -> None:
    sbx.commands.run(f"mkdir -p /tmp/www{port} && echo {text} > /tmp/www{port}/index.html")
    sbx.commands.run(
        f"python3 -m http.server {port} --bind {bind} --directory /tmp/www{port}",
        background=True,
    )


def _fetch(gateway: Gateway, client: httpx.Client, port: int, sandbox_id: str) -> httpx.Response:
    host = f"{port}-{sandbox_id}.{gateway.domain}"
    response = client.get("/", headers={"host": host})
    for _ in range(100):  # the server starts in the background
        if response.status_code != 502:
            break
        time.sleep(0.05)
        response = client.get("/", headers={"host": host})
    return response


@pytest.fixture
def host_listener() -> Iterator[int]:
    """A server of the host's own on 0.0.0.0: no route may ever reach it."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"host secret")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_ports_are_each_sandboxs_own(gateway: Gateway, host_listener: int) -> None:
    with _sandbox() as first, _sandbox() as second, httpx.Client(base_url=gateway.url) as client:
        _serve(first, 8080, "0.0.0.0", "first")
        _serve(second, 8080, "0.0.0.0", "second")
        _serve(first, 8081, "127.0.0.1", "loopback-only")
        assert _fetch(gateway, client, 8080, first.sandbox_id).text.strip() == "first"
        assert _fetch(gateway, client, 8080, second.sandbox_id).text.strip() == "second"
        assert _fetch(gateway, client, 8081, first.sandbox_id).text.strip() == "loopback-only"
        for sbx in (first, second):
            leaked = client.get("/", headers={"host": f"{host_listener}-{sbx.sandbox_id}.x"})
            response = client.get(
                "/", headers={"host": f"{host_listener}-{sbx.sandbox_id}.{gateway.domain}"}
            )
            assert response.status_code == 502, response.text
            assert b"host secret" not in response.content + leaked.content


def test_users_sudo_and_a_writable_root_of_its_own(gateway: Gateway) -> None:
    marker = f"/etc/agentcube-isolation-{id(gateway)}"
    with _sandbox() as sbx, _sandbox() as other:
        assert _run(sbx, "whoami").strip() == "user"
        assert _run(sbx, "id -u", user="root").strip() == "0"
        assert _run(sbx, "sudo -n id -u").strip() == "0"
        sbx.files.write("written-by-sdk.txt", "hi")
        owner = _run(sbx, "stat -c %U:%G /home/user/written-by-sdk.txt")
        assert owner.strip() == "user:user"
        assert _run(sbx, f"touch {marker} && echo ok", user="root").strip() == "ok"
        assert _run(sbx, "sudo -n apt-get --version | head -1").startswith("apt ")
        assert not Path(marker).exists(), "a sandbox's root wrote to the host's /etc"
        assert _run(other, f"test -e {marker} && echo seen || echo absent").strip() == "absent"
        with pytest.raises(CommandExitException):
            sbx.commands.run(f"touch {marker}-as-user")  # `user` is no root without sudo


def test_no_token_or_env_secret_in_any_argv(gateway: Gateway) -> None:
    secret = "s3cr3t-value-that-must-not-leak"
    with _sandbox(envs={"TENANT_SECRET": secret}) as sbx:
        assert _run(sbx, "echo $TENANT_SECRET").strip() == secret
        token = sbx._envd_access_token
        assert token
        args = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert secret not in args
        assert token not in args
        assert gateway.api_key not in args


def test_env_vars_at_rest_are_the_gateways_alone(gateway: Gateway) -> None:
    state = gateway.state_dir / "lifecycle"
    assert state.stat().st_mode & 0o777 == 0o700
    for private in (state / "lifecycle.sqlite3", state / "token-seed"):
        assert private.stat().st_mode & 0o077 == 0, private


def test_internet_access_follows_the_flag(gateway: Gateway) -> None:
    url = f"http://{INTERNET_ADDRESS}:{INTERNET_PORT}/"
    fetch = f"curl -s -m 3 {url} || echo unreachable"
    with _sandbox(allow_internet_access=True) as online:
        assert _run(online, fetch).strip() == "internet"
    with _sandbox(allow_internet_access=False) as offline:
        assert _run(offline, fetch).strip() == "unreachable"
