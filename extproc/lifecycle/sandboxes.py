"""What the lifecycle service knows about one sandbox, and the events it publishes.

Transport-free: the gRPC servicer converts these to protobuf, backends produce them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from extproc.core.tokens import traffic_access_token


class State(enum.IntEnum):
    # Values equal the proto's SandboxState numbers, so conversion is a cast.
    STARTING = 1
    RUNNING = 2
    PAUSED = 3
    ENDED = 4


class OnTimeout(enum.IntEnum):
    KILL = 1
    PAUSE = 2


class PauseMode(enum.IntEnum):
    # Values equal the proto's PauseMode numbers. FULL stops the processes where they are
    # (SIGSTOP locally); FILESYSTEM ends them and keeps the files, and a resume starts the
    # sandbox afresh on those files (E2B's "filesystem" snapshot, a cold boot).
    FULL = 1
    FILESYSTEM = 2


class EventType(enum.IntEnum):
    # Values equal the proto's SandboxEventType numbers.
    EXISTING = 1
    SYNCED = 2
    CREATED = 3
    UPDATED = 4
    KILLED = 5
    EXPIRED = 6
    DIED = 7


@dataclass(frozen=True)
class VolumeMount:
    """A volume of the sandbox's tenant (by name) and the absolute path it appears at."""

    name: str
    path: str


@dataclass(frozen=True)
class Sandbox:
    """One sandbox. Times are unix seconds (floats)."""

    sandbox_id: str
    template_id: str
    alias: str
    tenant: str
    metadata: dict[str, str]
    env_vars: dict[str, str]
    started_at: float
    end_at: float
    state: State
    cpu_count: int
    memory_mb: int
    disk_size_mb: int
    envd_version: str
    envd_access_token: str
    endpoint_host: str
    on_timeout: OnTimeout = OnTimeout.KILL
    auto_resume: bool = False
    secure: bool = True
    allow_internet_access: bool = True
    end_reason: str = ""
    idempotency_key: str = ""
    # E2B's network.allowPublicTraffic: when False, every port but envd's needs the token.
    allow_public_traffic: bool = True
    # What a pause on timeout keeps (E2B's autoPauseMemory: true is FULL).
    timeout_pause_mode: PauseMode = PauseMode.FULL
    # What the current pause kept; meaningful only while PAUSED.
    pause_mode: PauseMode = PauseMode.FULL
    # E2B's volumeMounts, as asked for at create (kept by the volumes' own store).
    volume_mounts: tuple[VolumeMount, ...] = ()

    @property
    def traffic_access_token(self) -> str:
        """The E2B-Traffic-Access-Token; "" while public traffic is allowed. Never stored."""
        if self.allow_public_traffic:
            return ""
        return traffic_access_token(self.envd_access_token, self.sandbox_id)


@dataclass(frozen=True)
class CreateSpec:
    """A validated CreateSandbox request (timeout already resolved to seconds)."""

    tenant: str
    template: str
    timeout_s: int
    # False when the caller left the timeout out and `timeout_s` is the gateway's default: a
    # template with a default of its own (a CodeInterpreter's sessionTimeout) may replace it.
    timeout_requested: bool = True
    metadata: dict[str, str] = field(default_factory=dict)
    env_vars: dict[str, str] = field(default_factory=dict)
    on_timeout: OnTimeout = OnTimeout.KILL
    auto_resume: bool = False
    secure: bool = True
    allow_internet_access: bool = True
    idempotency_key: str = ""
    allow_public_traffic: bool = True
    timeout_pause_mode: PauseMode = PauseMode.FULL
    # The tenant's quota as the edge read it (core/quotas.py); 0 means the backend default.
    max_sandboxes: int = 0  # running + paused at once; 0: only the gateway's max applies
    creates_per_minute: int = 0  # admitted creates per minute; 0: core.quotas.BUILTIN's
    # E2B's volumeMounts as sent (names and paths are checked by the backend).
    volume_mounts: tuple[VolumeMount, ...] = ()


@dataclass(frozen=True)
class ListQuery:
    tenant: str
    states: frozenset[State] = frozenset({State.RUNNING, State.PAUSED})
    template: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    # Inclusive bounds (unix seconds) at microsecond precision, the precision of startedAt.
    started_after: float | None = None
    started_before: float | None = None
    page_size: int = 100
    page_token: str = ""
    ascending: bool = False


@dataclass(frozen=True)
class Page:
    sandboxes: list[Sandbox]
    next_page_token: str
    total_running: int


@dataclass(frozen=True)
class Metric:
    timestamp: float
    cpu_count: int
    cpu_used_pct: float
    mem_used: int
    mem_total: int
    mem_cache: int
    disk_used: int
    disk_total: int


@dataclass(frozen=True)
class Event:
    type: EventType
    sandbox: Sandbox | None
    revision: int
