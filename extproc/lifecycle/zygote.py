"""The lifecycle service's side of the zygote (extproc/picod/zygote.py): starting it, and
asking it to fork a sandbox.

The zygote is started once per isolation start, as host root in a mount namespace of its
own whose root is the base image, read-only, with the runtime bound at /opt/agentcube (the
shell below, run by `unshare --mount`). It answers on a SOCK_SEQPACKET socket pair: the
lifecycle service sends `fork` with the sandbox's fds, the zygote answers with the
supervisor's pid, start time and a pidfd. Requests are served one at a time (a fork costs
about a millisecond). If the zygote dies, the next request starts a new one; running
sandboxes do not depend on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
from pathlib import Path

from extproc.core.errors import Unavailable
from extproc.core.readable import when_readable

log = logging.getLogger(__name__)

# Run by `unshare --mount --propagation private` as host root: $1 the base image, $2 this
# package, $3 its site-packages; the rest are the zygote's own flags.
_START = """set -e
B=$1 PACKAGE=$2 SITE=$3
shift 3
mount --bind "$B" "$B"
mount -o remount,bind,ro,nosuid,nodev "$B"
mount -t proc -o nosuid,nodev,noexec proc "$B/proc"
mount -t tmpfs -o nosuid,mode=0755,size=64k dev "$B/dev"
for d in null zero full random urandom tty; do
  : > "$B/dev/$d"; mount --bind "/dev/$d" "$B/dev/$d"
done
mount -t tmpfs -o nosuid,nodev,noexec,mode=0755,size=64k run "$B/run"
mkdir "$B/run/sandbox-root" "$B/run/host"
mount -t tmpfs -o nosuid,nodev,noexec,mode=0755,size=64k opt "$B/opt"
mkdir -p "$B/opt/agentcube/lib/extproc" "$B/opt/agentcube/site-packages"
mount --bind -o ro "$PACKAGE" "$B/opt/agentcube/lib/extproc"
mount --bind -o ro "$SITE" "$B/opt/agentcube/site-packages"
cd "$B"
pivot_root . run/host
cd /
/run/host/bin/umount -l /run/host
rmdir /run/host
exec /usr/bin/python3 -P -m extproc.picod.zygote "$@"
"""
_READY_TIMEOUT_S = 60.0
_ANSWER_TIMEOUT_S = 30.0


class Zygote:
    def __init__(self, base: Path, runtime: tuple[Path, Path], env: dict[str, str],
                 log_path: Path, preload_jwt: bool) -> None:  # fmt: skip
        self._base = base
        self._runtime = runtime
        self._env = env
        self._log_path = log_path
        self._preload_jwt = preload_jwt
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the zygote and wait until it has imported picod (blocking: a thread)."""
        self.close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        package, site = self._runtime
        flags = ["--control-fd", str(theirs.fileno())]
        if self._preload_jwt:
            flags.append("--preload-jwt")
        argv = ["unshare", "--mount", "--propagation", "private", "--",
                "/bin/sh", "-c", _START, "zygote-init", str(self._base), str(package),
                str(site), *flags]  # fmt: skip
        output = os.open(self._log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self._process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=output, stderr=output, close_fds=True,
                pass_fds=[theirs.fileno()], env=self._env, start_new_session=True,
            )  # fmt: skip
        finally:
            os.close(output)
            theirs.close()
        self._socket = ours
        ours.settimeout(_READY_TIMEOUT_S)
        try:
            hello = json.loads(ours.recv(4096) or b"{}")
        except (OSError, ValueError):
            hello = {}
        if not hello.get("ready"):
            self.close()
            if hello.get("error"):  # the kernel lacks something (CONFIG_CHECKPOINT_RESTORE)
                raise Unavailable(f"sandbox isolation: {hello['error']}")
            raise Unavailable(
                f"the sandbox zygote did not start; its log ({self._log_path}) ends with: "
                f"{log_tail(self._log_path)}"
            )
        ours.setblocking(False)
        log.info("sandbox zygote %d ready (python %s)", self._process.pid, hello.get("python"))

    def _alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    async def fork(self, fds: list[int]) -> tuple[int, int, int]:
        """Ask for a sandbox made of `fds` (sandbox_spec.SPEC_FDS, then cgroups), which this
        call owns and closes: its supervisor's (pid, start ticks, pidfd; the caller closes
        the pidfd). A cancelled call still collects the answer and kills what was forked,
        so no sandbox is left that nobody knows of."""
        exchange = asyncio.ensure_future(self._exchange(fds))
        try:
            return await asyncio.shield(exchange)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                pid, _, pidfd = await exchange
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    os.killpg(pid, signal.SIGKILL)
                os.close(pidfd)
            raise

    async def _exchange(self, fds: list[int]) -> tuple[int, int, int]:
        try:
            async with self._lock:
                if not self._alive():
                    log.warning("the sandbox zygote is not running; starting it again")
                    await asyncio.to_thread(self.start)
                control = self._socket
                if control is None:
                    raise Unavailable("the sandbox zygote is not running")
                try:
                    async with asyncio.timeout(_ANSWER_TIMEOUT_S):
                        socket.send_fds(control, [b"fork"], fds)
                        for fd in fds:
                            os.close(fd)
                        fds = []
                        message, pidfds = await _receive(control)
                except (OSError, TimeoutError) as error:
                    await asyncio.to_thread(self.close)  # broken: the next request restarts it
                    raise Unavailable(f"the sandbox zygote failed: {error}") from error
        finally:
            for fd in fds:
                os.close(fd)
        answer = json.loads(message or b"{}")
        if "pid" not in answer or len(pidfds) != 1:
            for fd in pidfds:
                os.close(fd)
            raise Unavailable(f"the sandbox zygote refused: {answer.get('error', 'no answer')}")
        return int(answer["pid"]), int(answer["ticks"]), pidfds[0]

    def close(self) -> None:
        """Stop the zygote (it exits when its socket closes); sandboxes keep running."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._process is not None:
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


async def _receive(control: socket.socket) -> tuple[bytes, list[int]]:
    """One message and the fds it carries, without blocking the loop."""
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 4096, 4)
        except BlockingIOError:
            async with when_readable(control) as readable:
                await readable
            continue
        if not message:
            raise ConnectionResetError("the sandbox zygote closed its socket")
        return message, fds


def log_tail(path: Path, size: int = 2048) -> str:
    """The last `size` bytes of a log, as text ("" when unreadable)."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, 2) - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""
