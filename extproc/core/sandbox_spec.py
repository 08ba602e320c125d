"""What the lifecycle service tells the zygote's fork about the sandbox it is to become.

The spec travels as JSON in a sealed memfd next to the sandbox's other fds
(`SPEC_FDS`), so the zygote passes it on without reading it: the access token and env vars
in it reach only the forked process, never the zygote's heap, which every later fork
copies (extproc/picod/zygote.py). Standard library only.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field

# The fds a fork request carries, in this order, then one `cgroup.procs` file per cgroup
# the sandbox joins. "ready" is a pipe's write end picod writes to once it serves.
SPEC_FDS = ("spec", "log", "netns", "userns", "root", "ready")


@dataclass(frozen=True)
class SandboxSpec:
    sandbox_id: str
    # The supervisor's `$0`, by which a restarted lifecycle service finds it
    # (`spawning.marker`).
    marker: str
    # RLIMIT_AS per process (KiB) and RLIMIT_NPROC per sandbox uid.
    address_space_kib: int
    max_processes: int
    # picod's flags: picod runs as a fork of the zygote. None: no picod fork (a build step).
    picod_args: tuple[str, ...] | None
    # Commands exec'd beside it under the sandbox's pid 1: the code interpreter, a custom
    # picod command, a template build step. The sandbox ends when any server exits.
    commands: tuple[tuple[str, ...], ...] = ()
    # The servers' environment: PATH and the like, the access token, the sandbox's env vars.
    env: dict[str, str] = field(default_factory=dict)
    # Niceness while the sandbox runs until the lifecycle service resets it: warm-pool
    # refills start at a low priority (pooling.py).
    nice: int = 0

    def encode(self) -> bytes:
        return json.dumps({
            "sandbox_id": self.sandbox_id, "marker": self.marker,
            "address_space_kib": self.address_space_kib, "max_processes": self.max_processes,
            "picod_args": None if self.picod_args is None else list(self.picod_args),
            "commands": [list(c) for c in self.commands], "env": self.env, "nice": self.nice,
        }).encode()  # fmt: skip

    @classmethod
    def decode(cls, raw: bytes) -> SandboxSpec:
        """Parse a spec; ValueError names what is wrong."""
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("sandbox spec: expected an object")
        picod = data.get("picod_args")
        commands = data.get("commands", [])
        env = data.get("env", {})
        ints = [data.get(k) for k in ("address_space_kib", "max_processes", "nice")]
        if not (
            isinstance(data.get("sandbox_id"), str)
            and isinstance(data.get("marker"), str)
            and all(isinstance(i, int) for i in ints)
            and (picod is None or _strings(picod))
            and isinstance(commands, list)
            and all(_strings(c) and c for c in commands)
            and isinstance(env, dict)
            and _strings(list(env)) and _strings(list(env.values()))
        ):  # fmt: skip
            raise ValueError("sandbox spec: a field is missing or of the wrong type")
        return cls(
            sandbox_id=data["sandbox_id"], marker=data["marker"],
            address_space_kib=data["address_space_kib"], max_processes=data["max_processes"],
            picod_args=None if picod is None else tuple(picod),
            commands=tuple(tuple(c) for c in commands), env=dict(env), nice=data["nice"],
        )  # fmt: skip


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(s, str) for s in value)


def write_spec(spec: SandboxSpec) -> int:
    """A sealed memfd holding `spec`, positioned at its start (the caller closes it)."""
    fd = os.memfd_create("sandbox-spec", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        data = spec.encode()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        # No one downstream can change what the lifecycle service wrote.
        seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_spec(fd: int) -> SandboxSpec:
    """The spec in memfd `fd` (read from the start; the fd stays open)."""
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return SandboxSpec.decode(b"".join(chunks))
