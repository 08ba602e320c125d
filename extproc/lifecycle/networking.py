"""Sandbox networks: one network namespace per sandbox, joined to a hub only the host enters.

Why this shape. A tenant's code must reach nothing of the host, yet Envoy must reach every
port of the sandbox, including servers bound to 127.0.0.1 (E2B's envd forwards those), and
two sandboxes must be able to serve the same port. So:

- Each sandbox has its own network namespace (`ip netns`, `e2b<hash>-<id>`), owned by the
  host's user namespace, so root inside the sandbox cannot change its addresses or rules.
  Its only link is a veth pair to the hub; its `eth0` has 10.213.x.y/31.
- Inside the sandbox an nftables rule DNATs every TCP connection arriving on `eth0` to
  127.0.0.1 (with `route_localnet`), so a server bound to 127.0.0.1 or to 0.0.0.0 answers
  alike, and `{port}-{id}` keeps E2B's meaning.
- The hub (`e2b<hash>-hub`) is a namespace the lifecycle service creates. It holds the host
  ends of the veth pairs, listens on nothing, and forwards nothing between sandboxes.
  Envoy's sandbox cluster creates its upstream sockets in the hub
  (`upstream_bind_config.source_address.network_namespace_filepath`), and so do the
  lifecycle service's own probes (`HubSockets`), so the host side reaches in and nothing
  reaches out: the host's loopback and listeners are in another namespace altogether.
- Outbound traffic (E2B's `allow_internet_access`) leaves through one uplink of the hub:
  `pasta` (user-mode networking: connections are re-made from the host's sockets) or a veth
  into a namespace the operator names. The hub forwards only sources in its `internet` set
  (sandboxes created with access on), never to the host's own addresses, loopback,
  link-local or the sandbox subnet, and masquerades.

The hash in the names is of the state directory, so two gateways on one machine never share
a namespace, and a restarted lifecycle service finds its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from extproc.core import namespaces
from extproc.core.errors import ResourceExhausted, Unavailable
from extproc.lifecycle import nftables
from extproc.lifecycle.rtnetlink import Rtnetlink

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
SUBNET = ipaddress.IPv4Network("10.213.0.0/16")
# The egress veth (netns uplink), inside the hub and the operator's namespace only.
UPLINK_HUB, UPLINK_PEER = "10.214.0.1", "10.214.0.2"
UPLINK_IF = "up0"
# Index 0 is the subnet's first pair; pairs are (hub, sandbox) = (2i, 2i + 1).
FIRST_INDEX, LAST_INDEX = 1, SUBNET.num_addresses // 2 - 1
_CLONE_NEWNET = 0x40000000
_ALWAYS_BLOCKED = ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3", str(SUBNET))


def netns_prefix(state_dir: Path) -> str:
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8]
    return f"e2b{digest}"


def hub_netns_path(state_dir: Path) -> Path:
    """The hub of the lifecycle service whose state directory is `state_dir`."""
    return NETNS_DIR / f"{netns_prefix(state_dir)}-hub"


def sandbox_netns_name(state_dir: Path, sandbox_id: str) -> str:
    return f"{netns_prefix(state_dir)}-{sandbox_id}"


def addresses_of(index: int) -> tuple[str, str]:
    """(hub end, sandbox end) of pair `index`."""
    base = int(SUBNET.network_address) + 2 * index
    return str(ipaddress.IPv4Address(base)), str(ipaddress.IPv4Address(base + 1))


def index_of(sandbox_address: str) -> int | None:
    try:
        address = ipaddress.IPv4Address(sandbox_address)
    except ValueError:
        return None
    if address not in SUBNET:
        return None
    index = (int(address) - int(SUBNET.network_address)) // 2
    return index if FIRST_INDEX <= index <= LAST_INDEX else None


def _run(argv: list[str], stdin: str = "") -> None:
    done = subprocess.run(argv, input=stdin.encode(), capture_output=True, check=False)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
        raise Unavailable(f"sandbox network: {' '.join(argv[:4])}: {message}")


def _host_addresses() -> list[str]:
    done = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, check=False)
    try:
        links = json.loads(done.stdout or b"[]")
    except ValueError:
        return []
    return [a["local"] for link in links for a in link.get("addr_info", []) if "local" in a]


def _hub_rules(blocked: list[str]) -> str:
    elements = ", ".join(dict.fromkeys([*_ALWAYS_BLOCKED, *(f"{a}/32" for a in blocked)]))
    return f"""
table inet e2b_hub {{
  set internet {{ type ipv4_addr; }}
  set blocked {{ type ipv4_addr; flags interval; auto-merge; elements = {{ {elements} }} }}
  chain input {{
    type filter hook input priority filter; policy drop;
    ct state established,related accept
    iif lo accept
  }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "vh*" oifname "{UPLINK_IF}" ip saddr @internet ip daddr != @blocked accept
  }}
}}
table ip e2b_hub_nat {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "{UPLINK_IF}" masquerade
  }}
}}
"""


def ensure_hub(path: Path) -> None:
    """Create the hub namespace with its rules if it does not exist yet (idempotent)."""
    if path.exists():
        if path.stat().st_dev != NETNS_DIR.stat().st_dev:
            return  # a namespace is bound there: the hub exists
        path.unlink()  # the mount point of a hub whose namespace is gone
    name = path.name
    _run(["ip", "netns", "add", name])
    inside = ["nsenter", f"--net={path}", "--"]
    try:
        _run([*inside, "ip", "link", "set", "lo", "up"])
        # Hosts' own addresses are reachable through pasta's sockets: never forward to them.
        _run([*inside, "nft", "-f", "-"], _hub_rules(_host_addresses()))
        _run([*inside, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
    except BaseException:
        remove_netns(name)  # never a hub without its rules
        raise


def remove_netns(name: str) -> None:
    """What `ip netns del` does, in-process: the namespace goes once no process holds it."""
    path = NETNS_DIR / name
    with contextlib.suppress(OSError):  # not mounted (a crashed create), or gone
        namespaces.unmount(str(path))
    path.unlink(missing_ok=True)


@contextlib.contextmanager
def _thread_inside(netns_fd: int) -> Iterator[None]:
    """Run the block with this thread (only it) in the network namespace `netns_fd`."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        namespaces.setns(netns_fd, _CLONE_NEWNET)
        try:
            yield
        finally:
            namespaces.setns(own, _CLONE_NEWNET)
    finally:
        os.close(own)


def _new_netns(path: Path) -> int:
    """A new network namespace mounted at `path` (as `ip netns add`); an fd of it.

    The calling thread unshares into the new namespace for the mount and steps back; the
    hub's creation (`ip netns add`) has made NETNS_DIR the shared mount point `ip` expects.
    """
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0))
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        namespaces.unshare(_CLONE_NEWNET)
        try:
            namespaces.mount("/proc/thread-self/ns/net", str(path), "", namespaces.MS_BIND)
        finally:
            namespaces.setns(own, _CLONE_NEWNET)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(own)
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def _sysctl(name: str, value: str) -> None:
    """Set a sysctl of this thread's network namespace."""
    knob = os.open(f"/proc/sys/{name.replace('.', '/')}", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(knob, value.encode())
    finally:
        os.close(knob)


@dataclass(frozen=True)
class SandboxLink:
    sandbox_id: str
    index: int
    netns: str
    hub_address: str
    address: str

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    @property
    def hub_interface(self) -> str:
        return f"vh{self.index}"


def _sandbox_rules(address: str) -> str:
    return f"""
table ip e2b_sandbox {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname "eth0" ip daddr {address} dnat to 127.0.0.1
  }}
}}
"""


class Networks:
    """Network namespaces and addresses of one lifecycle service's sandboxes."""

    def __init__(self, state_dir: Path, egress: str) -> None:
        self.state_dir = state_dir
        self.hub = hub_netns_path(state_dir)
        self.egress = egress
        self._used: set[int] = set()
        self._next = FIRST_INDEX
        # Indices whose address is in the hub's `internet` set (read at start).
        self._internet: set[int] = set()
        self._lock = threading.Lock()
        self._pasta_pid_file = state_dir / "pasta.pid"

    # -- the hub and its uplink -----------------------------------------------------------

    def start(self) -> None:
        ensure_hub(self.hub)
        self._start_uplink()
        self._read_internet()

    def _start_uplink(self) -> None:
        inside = ["nsenter", f"--net={self.hub}", "--"]
        has_uplink = subprocess.run(
            [*inside, "ip", "link", "show", UPLINK_IF], capture_output=True, check=False
        )
        if has_uplink.returncode == 0 or self.egress == "none":
            return
        if self.egress == "pasta":
            # User-mode networking: no address of the host's namespace is touched. No port
            # forwarding either way (-t/-u: host to hub, -T/-U: hub to host loopback), and
            # the gateway address is not mapped to the host (--no-map-gw). pasta daemonises
            # once the hub is configured and outlives this process on purpose (sandboxes
            # that survive a restart keep their uplink); its pid file is how it is stopped.
            _run(["pasta", "--runas", "0:0", "--netns", str(self.hub), "--config-net",
                  "--no-map-gw", "-I", UPLINK_IF, "-t", "none", "-u", "none", "-T", "none",
                  "-U", "none", "-q", "-P", str(self._pasta_pid_file)])  # fmt: skip
            return
        peer = self.egress.removeprefix("netns:")
        _run(["ip", "-n", self.hub.name, "link", "add", UPLINK_IF, "type", "veth", "peer",
              "name", "e2b-egress", "netns", peer])  # fmt: skip
        batch_hub = (
            f"addr add {UPLINK_HUB}/30 dev {UPLINK_IF}\nlink set {UPLINK_IF} up\n"
            f"route add default via {UPLINK_PEER}\n"
        )
        _run(["ip", "-n", self.hub.name, "-batch", "-"], batch_hub)
        _run(["ip", "-n", peer, "-batch", "-"],
             f"addr add {UPLINK_PEER}/30 dev e2b-egress\nlink set e2b-egress up\n")  # fmt: skip

    def remove_hub(self) -> None:
        """Remove the hub (and with it the uplink); only when no sandbox is left."""
        self.stop()
        remove_netns(self.hub.name)

    def stop(self) -> None:
        """Stop this hub's pasta, if it runs (checked by its command line: a pid file can
        outlive its process and the pid be reused)."""
        try:
            pid = int(self._pasta_pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if b"pasta" in cmdline and str(self.hub).encode() in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        self._pasta_pid_file.unlink(missing_ok=True)

    # -- addresses ------------------------------------------------------------------------

    def take(self, address: str) -> None:
        index = index_of(address)
        if index is not None:
            with self._lock:
                self._used.add(index)

    def _allocate(self) -> int:
        # Round robin: a freed pair is reused last, so a stale client of a dead sandbox is
        # unlikely to reach the next one. Creates run in several threads at once.
        with self._lock:
            for _ in range(LAST_INDEX - FIRST_INDEX + 1):
                index = self._next
                self._next = FIRST_INDEX if index >= LAST_INDEX else index + 1
                if index not in self._used:
                    self._used.add(index)
                    return index
        raise ResourceExhausted(f"no free sandbox address left in {SUBNET}")

    def link_of(self, sandbox_id: str, address: str) -> SandboxLink | None:
        index = index_of(address)
        if index is None:
            return None
        hub, mine = addresses_of(index)
        return SandboxLink(sandbox_id, index, sandbox_netns_name(self.state_dir, sandbox_id),
                           hub, mine)  # fmt: skip

    # -- one sandbox ----------------------------------------------------------------------

    def create(self, sandbox_id: str) -> SandboxLink:
        """Allocate an address pair and build the sandbox's namespace (blocking: a thread)."""
        index = self._allocate()
        hub, mine = addresses_of(index)
        link = SandboxLink(sandbox_id, index, sandbox_netns_name(self.state_dir, sandbox_id),
                           hub, mine)  # fmt: skip
        try:
            self._build(link)
        except BaseException:
            self.release(link)
            raise
        return link

    def _build(self, link: SandboxLink) -> None:
        """The namespace, its veth pair into the hub, addresses, route, sysctls and DNAT
        rule, all from this thread (rtnetlink, libnftables): no process is started."""
        remove_netns(link.netns)
        veth = link.hub_interface
        hub = os.open(self.hub, os.O_RDONLY | os.O_CLOEXEC)
        sandbox = None
        try:
            sandbox = _new_netns(link.netns_path)
            with _thread_inside(hub), Rtnetlink() as rtnl:
                rtnl.delete_link(veth)  # a leftover of a crashed start, if any
                rtnl.add_veth(veth, "eth0", sandbox)
                rtnl.add_address(veth, ipaddress.IPv4Interface(f"{link.hub_address}/31"))
                rtnl.set_up(veth)
            with _thread_inside(sandbox), Rtnetlink() as rtnl:
                rtnl.add_address("eth0", ipaddress.IPv4Interface(f"{link.address}/31"))
                rtnl.set_up("lo")
                rtnl.set_up("eth0")
                rtnl.add_default_route(ipaddress.IPv4Address(link.hub_address))
                # route_localnet lets the DNAT to 127.0.0.1 through; ports below 1024 and
                # ping are for root inside, who has no capability in this (host-owned)
                # namespace.
                _sysctl("net.ipv4.conf.eth0.route_localnet", "1")
                _sysctl("net.ipv4.ip_unprivileged_port_start", "0")
                _sysctl("net.ipv4.ping_group_range", "0 2147483647")
                nftables.run(_sandbox_rules(link.address), "sandbox network")
        except OSError as error:
            raise Unavailable(f"sandbox network: {error}") from error
        finally:
            os.close(hub)
            if sandbox is not None:
                os.close(sandbox)

    def _read_internet(self) -> None:
        """Which addresses the hub's `internet` set holds (it outlives a restart)."""
        hub = os.open(self.hub, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with _thread_inside(hub):
                listed = nftables.run("list set inet e2b_hub internet", "hub", as_json=True)
        finally:
            os.close(hub)
        with self._lock:
            self._internet = {i for a in nftables.set_elements(listed)
                              if (i := index_of(a)) is not None}  # fmt: skip

    def allow_internet(self, link: SandboxLink, allowed: bool) -> None:
        """Add or delete the address in the hub's `internet` set. The set's contents are
        read at start and tracked, so an address is deleted whenever it is there, also
        after a crash between create and release (a stale element would otherwise give
        the next sandbox at this address internet it did not ask for), and nft runs only
        when something changes."""
        with self._lock:
            present = link.index in self._internet
        if allowed == present:
            return
        verb = "add" if allowed else "delete"
        command = f"{verb} element inet e2b_hub internet {{ {link.address} }}\n"
        hub = os.open(self.hub, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with _thread_inside(hub):
                nftables.run(command, "sandbox internet access")
        finally:
            os.close(hub)
        with self._lock:
            if allowed:
                self._internet.add(link.index)
            else:
                self._internet.discard(link.index)

    def release(self, link: SandboxLink) -> None:
        """Remove the namespace (its veth pair goes with it) and free the address pair."""
        remove_netns(link.netns)
        self.allow_internet(link, False)
        with self._lock:
            self._used.discard(link.index)


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, path: Path) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns({path}): {os.strerror(err)}")


def enter_netns(path: Path) -> None:
    """Move the calling thread (only it) into the network namespace at `path`."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(fd, path)
    finally:
        os.close(fd)


class HubSockets:
    """Sockets created in the hub namespace, for the lifecycle service's own probes.

    A socket belongs to the network namespace its creating thread was in when it was made,
    so the event loop's thread steps into the hub for the one `socket()` call and straight
    back (two setns calls; nothing else runs on the loop in between, and other threads are
    not affected). No worker thread: a socket handed across threads would leak whenever the
    awaiting request was cancelled in between.
    """

    def __init__(self, hub: Path) -> None:
        self._hub = hub
        self._fds: tuple[int, int] | None = None  # (hub, this thread's own namespace)

    def _socket(self) -> socket.socket:
        if self._fds is None:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            self._fds = (os.open(self._hub, os.O_RDONLY | os.O_CLOEXEC), own)
        hub, own = self._fds
        _setns(hub, self._hub)
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            _setns(own, Path("/proc/thread-self/ns/net"))
        sock.setblocking(False)
        return sock

    async def open_connection(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = self._socket()
        try:
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            return await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise

    def close(self) -> None:
        if self._fds is not None:
            for fd in self._fds:
                os.close(fd)
            self._fds = None


def egress_choice(requested: str) -> str:
    """The egress actually used: `pasta` falls back to `none` (logged) without the binary."""
    if requested == "pasta" and shutil.which("pasta") is None:
        log.warning(
            "no outbound network for sandboxes: pasta is not installed (Debian package "
            "'passt'); sandboxes created with allow_internet_access get no connectivity"
        )
        return "none"
    return requested
