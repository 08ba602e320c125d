import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SandboxState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SANDBOX_STATE_UNSPECIFIED: _ClassVar[SandboxState]
    SANDBOX_STATE_STARTING: _ClassVar[SandboxState]
    SANDBOX_STATE_RUNNING: _ClassVar[SandboxState]
    SANDBOX_STATE_PAUSED: _ClassVar[SandboxState]
    SANDBOX_STATE_ENDED: _ClassVar[SandboxState]

class TimeoutAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIMEOUT_ACTION_UNSPECIFIED: _ClassVar[TimeoutAction]
    TIMEOUT_ACTION_KILL: _ClassVar[TimeoutAction]
    TIMEOUT_ACTION_PAUSE: _ClassVar[TimeoutAction]

class PauseMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAUSE_MODE_UNSPECIFIED: _ClassVar[PauseMode]
    PAUSE_MODE_FULL: _ClassVar[PauseMode]
    PAUSE_MODE_FILESYSTEM: _ClassVar[PauseMode]

class ListOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIST_ORDER_UNSPECIFIED: _ClassVar[ListOrder]
    LIST_ORDER_DESC: _ClassVar[ListOrder]
    LIST_ORDER_ASC: _ClassVar[ListOrder]

class SandboxEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SANDBOX_EVENT_TYPE_UNSPECIFIED: _ClassVar[SandboxEventType]
    SANDBOX_EVENT_TYPE_EXISTING: _ClassVar[SandboxEventType]
    SANDBOX_EVENT_TYPE_SYNCED: _ClassVar[SandboxEventType]
    SANDBOX_EVENT_TYPE_CREATED: _ClassVar[SandboxEventType]
    SANDBOX_EVENT_TYPE_UPDATED: _ClassVar[SandboxEventType]
    SANDBOX_EVENT_TYPE_KILLED: _ClassVar[SandboxEventType]
    SANDBOX_EVENT_TYPE_EXPIRED: _ClassVar[SandboxEventType]
    SANDBOX_EVENT_TYPE_DIED: _ClassVar[SandboxEventType]

class TemplateKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TEMPLATE_KIND_UNSPECIFIED: _ClassVar[TemplateKind]
    TEMPLATE_KIND_TEMPLATE: _ClassVar[TemplateKind]
    TEMPLATE_KIND_SNAPSHOT: _ClassVar[TemplateKind]

class BuildStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUILD_STATUS_UNSPECIFIED: _ClassVar[BuildStatus]
    BUILD_STATUS_WAITING: _ClassVar[BuildStatus]
    BUILD_STATUS_BUILDING: _ClassVar[BuildStatus]
    BUILD_STATUS_READY: _ClassVar[BuildStatus]
    BUILD_STATUS_ERROR: _ClassVar[BuildStatus]
SANDBOX_STATE_UNSPECIFIED: SandboxState
SANDBOX_STATE_STARTING: SandboxState
SANDBOX_STATE_RUNNING: SandboxState
SANDBOX_STATE_PAUSED: SandboxState
SANDBOX_STATE_ENDED: SandboxState
TIMEOUT_ACTION_UNSPECIFIED: TimeoutAction
TIMEOUT_ACTION_KILL: TimeoutAction
TIMEOUT_ACTION_PAUSE: TimeoutAction
PAUSE_MODE_UNSPECIFIED: PauseMode
PAUSE_MODE_FULL: PauseMode
PAUSE_MODE_FILESYSTEM: PauseMode
LIST_ORDER_UNSPECIFIED: ListOrder
LIST_ORDER_DESC: ListOrder
LIST_ORDER_ASC: ListOrder
SANDBOX_EVENT_TYPE_UNSPECIFIED: SandboxEventType
SANDBOX_EVENT_TYPE_EXISTING: SandboxEventType
SANDBOX_EVENT_TYPE_SYNCED: SandboxEventType
SANDBOX_EVENT_TYPE_CREATED: SandboxEventType
SANDBOX_EVENT_TYPE_UPDATED: SandboxEventType
SANDBOX_EVENT_TYPE_KILLED: SandboxEventType
SANDBOX_EVENT_TYPE_EXPIRED: SandboxEventType
SANDBOX_EVENT_TYPE_DIED: SandboxEventType
TEMPLATE_KIND_UNSPECIFIED: TemplateKind
TEMPLATE_KIND_TEMPLATE: TemplateKind
TEMPLATE_KIND_SNAPSHOT: TemplateKind
BUILD_STATUS_UNSPECIFIED: BuildStatus
BUILD_STATUS_WAITING: BuildStatus
BUILD_STATUS_BUILDING: BuildStatus
BUILD_STATUS_READY: BuildStatus
BUILD_STATUS_ERROR: BuildStatus

class Sandbox(_message.Message):
    __slots__ = ("sandbox_id", "template_id", "alias", "tenant", "metadata", "env_vars", "started_at", "end_at", "state", "cpu_count", "memory_mb", "disk_size_mb", "envd_version", "envd_access_token", "endpoint_host", "on_timeout", "auto_resume", "secure", "allow_internet_access", "end_reason", "allow_public_traffic", "traffic_access_token", "pause_mode", "volume_mounts")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class EnvVarsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ENV_VARS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    END_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    DISK_SIZE_MB_FIELD_NUMBER: _ClassVar[int]
    ENVD_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENVD_ACCESS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_HOST_FIELD_NUMBER: _ClassVar[int]
    ON_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    AUTO_RESUME_FIELD_NUMBER: _ClassVar[int]
    SECURE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_INTERNET_ACCESS_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PUBLIC_TRAFFIC_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_ACCESS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PAUSE_MODE_FIELD_NUMBER: _ClassVar[int]
    VOLUME_MOUNTS_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    template_id: str
    alias: str
    tenant: str
    metadata: _containers.ScalarMap[str, str]
    env_vars: _containers.ScalarMap[str, str]
    started_at: _timestamp_pb2.Timestamp
    end_at: _timestamp_pb2.Timestamp
    state: SandboxState
    cpu_count: int
    memory_mb: int
    disk_size_mb: int
    envd_version: str
    envd_access_token: str
    endpoint_host: str
    on_timeout: TimeoutAction
    auto_resume: bool
    secure: bool
    allow_internet_access: bool
    end_reason: str
    allow_public_traffic: bool
    traffic_access_token: str
    pause_mode: PauseMode
    volume_mounts: _containers.RepeatedCompositeFieldContainer[VolumeMount]
    def __init__(self, sandbox_id: _Optional[str] = ..., template_id: _Optional[str] = ..., alias: _Optional[str] = ..., tenant: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., env_vars: _Optional[_Mapping[str, str]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[SandboxState, str]] = ..., cpu_count: _Optional[int] = ..., memory_mb: _Optional[int] = ..., disk_size_mb: _Optional[int] = ..., envd_version: _Optional[str] = ..., envd_access_token: _Optional[str] = ..., endpoint_host: _Optional[str] = ..., on_timeout: _Optional[_Union[TimeoutAction, str]] = ..., auto_resume: _Optional[bool] = ..., secure: _Optional[bool] = ..., allow_internet_access: _Optional[bool] = ..., end_reason: _Optional[str] = ..., allow_public_traffic: _Optional[bool] = ..., traffic_access_token: _Optional[str] = ..., pause_mode: _Optional[_Union[PauseMode, str]] = ..., volume_mounts: _Optional[_Iterable[_Union[VolumeMount, _Mapping]]] = ...) -> None: ...

class CreateSandboxRequest(_message.Message):
    __slots__ = ("tenant", "template_id", "timeout_seconds", "metadata", "env_vars", "on_timeout", "auto_resume", "secure", "allow_internet_access", "idempotency_key", "allow_public_traffic", "quota", "auto_pause_memory", "volume_mounts")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class EnvVarsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ENV_VARS_FIELD_NUMBER: _ClassVar[int]
    ON_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    AUTO_RESUME_FIELD_NUMBER: _ClassVar[int]
    SECURE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_INTERNET_ACCESS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PUBLIC_TRAFFIC_FIELD_NUMBER: _ClassVar[int]
    QUOTA_FIELD_NUMBER: _ClassVar[int]
    AUTO_PAUSE_MEMORY_FIELD_NUMBER: _ClassVar[int]
    VOLUME_MOUNTS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    template_id: str
    timeout_seconds: int
    metadata: _containers.ScalarMap[str, str]
    env_vars: _containers.ScalarMap[str, str]
    on_timeout: TimeoutAction
    auto_resume: bool
    secure: bool
    allow_internet_access: bool
    idempotency_key: str
    allow_public_traffic: bool
    quota: TenantQuota
    auto_pause_memory: bool
    volume_mounts: _containers.RepeatedCompositeFieldContainer[VolumeMount]
    def __init__(self, tenant: _Optional[str] = ..., template_id: _Optional[str] = ..., timeout_seconds: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ..., env_vars: _Optional[_Mapping[str, str]] = ..., on_timeout: _Optional[_Union[TimeoutAction, str]] = ..., auto_resume: _Optional[bool] = ..., secure: _Optional[bool] = ..., allow_internet_access: _Optional[bool] = ..., idempotency_key: _Optional[str] = ..., allow_public_traffic: _Optional[bool] = ..., quota: _Optional[_Union[TenantQuota, _Mapping]] = ..., auto_pause_memory: _Optional[bool] = ..., volume_mounts: _Optional[_Iterable[_Union[VolumeMount, _Mapping]]] = ...) -> None: ...

class TenantQuota(_message.Message):
    __slots__ = ("max_sandboxes", "creates_per_minute")
    MAX_SANDBOXES_FIELD_NUMBER: _ClassVar[int]
    CREATES_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    max_sandboxes: int
    creates_per_minute: int
    def __init__(self, max_sandboxes: _Optional[int] = ..., creates_per_minute: _Optional[int] = ...) -> None: ...

class CreateSandboxResponse(_message.Message):
    __slots__ = ("sandbox",)
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    sandbox: Sandbox
    def __init__(self, sandbox: _Optional[_Union[Sandbox, _Mapping]] = ...) -> None: ...

class GetSandboxRequest(_message.Message):
    __slots__ = ("sandbox_id", "tenant")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    tenant: str
    def __init__(self, sandbox_id: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class GetSandboxResponse(_message.Message):
    __slots__ = ("sandbox",)
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    sandbox: Sandbox
    def __init__(self, sandbox: _Optional[_Union[Sandbox, _Mapping]] = ...) -> None: ...

class ListSandboxesRequest(_message.Message):
    __slots__ = ("tenant", "states", "template_id", "metadata", "started_after", "started_before", "page_size", "page_token", "order")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TENANT_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    STARTED_AFTER_FIELD_NUMBER: _ClassVar[int]
    STARTED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    states: _containers.RepeatedScalarFieldContainer[SandboxState]
    template_id: str
    metadata: _containers.ScalarMap[str, str]
    started_after: _timestamp_pb2.Timestamp
    started_before: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    order: ListOrder
    def __init__(self, tenant: _Optional[str] = ..., states: _Optional[_Iterable[_Union[SandboxState, str]]] = ..., template_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., started_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., order: _Optional[_Union[ListOrder, str]] = ...) -> None: ...

class ListSandboxesResponse(_message.Message):
    __slots__ = ("sandboxes", "next_page_token", "total_running")
    SANDBOXES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_RUNNING_FIELD_NUMBER: _ClassVar[int]
    sandboxes: _containers.RepeatedCompositeFieldContainer[Sandbox]
    next_page_token: str
    total_running: int
    def __init__(self, sandboxes: _Optional[_Iterable[_Union[Sandbox, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_running: _Optional[int] = ...) -> None: ...

class KillSandboxRequest(_message.Message):
    __slots__ = ("sandbox_id", "tenant")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    tenant: str
    def __init__(self, sandbox_id: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class KillSandboxResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetSandboxTimeoutRequest(_message.Message):
    __slots__ = ("sandbox_id", "tenant", "timeout_seconds")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    tenant: str
    timeout_seconds: int
    def __init__(self, sandbox_id: _Optional[str] = ..., tenant: _Optional[str] = ..., timeout_seconds: _Optional[int] = ...) -> None: ...

class SetSandboxTimeoutResponse(_message.Message):
    __slots__ = ("sandbox",)
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    sandbox: Sandbox
    def __init__(self, sandbox: _Optional[_Union[Sandbox, _Mapping]] = ...) -> None: ...

class RefreshSandboxRequest(_message.Message):
    __slots__ = ("sandbox_id", "tenant", "duration_seconds")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    tenant: str
    duration_seconds: int
    def __init__(self, sandbox_id: _Optional[str] = ..., tenant: _Optional[str] = ..., duration_seconds: _Optional[int] = ...) -> None: ...

class RefreshSandboxResponse(_message.Message):
    __slots__ = ("sandbox",)
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    sandbox: Sandbox
    def __init__(self, sandbox: _Optional[_Union[Sandbox, _Mapping]] = ...) -> None: ...

class ConnectSandboxRequest(_message.Message):
    __slots__ = ("sandbox_id", "tenant", "timeout_seconds")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    tenant: str
    timeout_seconds: int
    def __init__(self, sandbox_id: _Optional[str] = ..., tenant: _Optional[str] = ..., timeout_seconds: _Optional[int] = ...) -> None: ...

class ConnectSandboxResponse(_message.Message):
    __slots__ = ("sandbox", "resumed")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    sandbox: Sandbox
    resumed: bool
    def __init__(self, sandbox: _Optional[_Union[Sandbox, _Mapping]] = ..., resumed: _Optional[bool] = ...) -> None: ...

class PauseSandboxRequest(_message.Message):
    __slots__ = ("sandbox_id", "tenant", "memory")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    tenant: str
    memory: bool
    def __init__(self, sandbox_id: _Optional[str] = ..., tenant: _Optional[str] = ..., memory: _Optional[bool] = ...) -> None: ...

class PauseSandboxResponse(_message.Message):
    __slots__ = ("sandbox",)
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    sandbox: Sandbox
    def __init__(self, sandbox: _Optional[_Union[Sandbox, _Mapping]] = ...) -> None: ...

class ResumeSandboxRequest(_message.Message):
    __slots__ = ("sandbox_id", "tenant", "timeout_seconds")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    tenant: str
    timeout_seconds: int
    def __init__(self, sandbox_id: _Optional[str] = ..., tenant: _Optional[str] = ..., timeout_seconds: _Optional[int] = ...) -> None: ...

class ResumeSandboxResponse(_message.Message):
    __slots__ = ("sandbox",)
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    sandbox: Sandbox
    def __init__(self, sandbox: _Optional[_Union[Sandbox, _Mapping]] = ...) -> None: ...

class GetSandboxMetricsRequest(_message.Message):
    __slots__ = ("sandbox_id", "tenant", "start", "end")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    tenant: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    def __init__(self, sandbox_id: _Optional[str] = ..., tenant: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SandboxMetric(_message.Message):
    __slots__ = ("timestamp", "cpu_count", "cpu_used_pct", "mem_used", "mem_total", "mem_cache", "disk_used", "disk_total")
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    CPU_USED_PCT_FIELD_NUMBER: _ClassVar[int]
    MEM_USED_FIELD_NUMBER: _ClassVar[int]
    MEM_TOTAL_FIELD_NUMBER: _ClassVar[int]
    MEM_CACHE_FIELD_NUMBER: _ClassVar[int]
    DISK_USED_FIELD_NUMBER: _ClassVar[int]
    DISK_TOTAL_FIELD_NUMBER: _ClassVar[int]
    timestamp: _timestamp_pb2.Timestamp
    cpu_count: int
    cpu_used_pct: float
    mem_used: int
    mem_total: int
    mem_cache: int
    disk_used: int
    disk_total: int
    def __init__(self, timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cpu_count: _Optional[int] = ..., cpu_used_pct: _Optional[float] = ..., mem_used: _Optional[int] = ..., mem_total: _Optional[int] = ..., mem_cache: _Optional[int] = ..., disk_used: _Optional[int] = ..., disk_total: _Optional[int] = ...) -> None: ...

class GetSandboxMetricsResponse(_message.Message):
    __slots__ = ("metrics",)
    METRICS_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.RepeatedCompositeFieldContainer[SandboxMetric]
    def __init__(self, metrics: _Optional[_Iterable[_Union[SandboxMetric, _Mapping]]] = ...) -> None: ...

class WatchSandboxesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchSandboxesResponse(_message.Message):
    __slots__ = ("type", "sandbox", "revision")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    type: SandboxEventType
    sandbox: Sandbox
    revision: int
    def __init__(self, type: _Optional[_Union[SandboxEventType, str]] = ..., sandbox: _Optional[_Union[Sandbox, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class Template(_message.Message):
    __slots__ = ("template_id", "aliases", "tenant", "public", "cpu_count", "memory_mb", "disk_size_mb", "envd_version", "created_at", "updated_at", "ports", "build_id", "build_status", "builds", "kind", "source_sandbox_id")
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    DISK_SIZE_MB_FIELD_NUMBER: _ClassVar[int]
    ENVD_VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    BUILD_ID_FIELD_NUMBER: _ClassVar[int]
    BUILD_STATUS_FIELD_NUMBER: _ClassVar[int]
    BUILDS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    template_id: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    tenant: str
    public: bool
    cpu_count: int
    memory_mb: int
    disk_size_mb: int
    envd_version: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    ports: _containers.RepeatedScalarFieldContainer[int]
    build_id: str
    build_status: BuildStatus
    builds: _containers.RepeatedCompositeFieldContainer[TemplateBuild]
    kind: TemplateKind
    source_sandbox_id: str
    def __init__(self, template_id: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., tenant: _Optional[str] = ..., public: _Optional[bool] = ..., cpu_count: _Optional[int] = ..., memory_mb: _Optional[int] = ..., disk_size_mb: _Optional[int] = ..., envd_version: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ports: _Optional[_Iterable[int]] = ..., build_id: _Optional[str] = ..., build_status: _Optional[_Union[BuildStatus, str]] = ..., builds: _Optional[_Iterable[_Union[TemplateBuild, _Mapping]]] = ..., kind: _Optional[_Union[TemplateKind, str]] = ..., source_sandbox_id: _Optional[str] = ...) -> None: ...

class ListTemplatesRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ListTemplatesResponse(_message.Message):
    __slots__ = ("templates",)
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    templates: _containers.RepeatedCompositeFieldContainer[Template]
    def __init__(self, templates: _Optional[_Iterable[_Union[Template, _Mapping]]] = ...) -> None: ...

class GetTemplateRequest(_message.Message):
    __slots__ = ("template_id", "tenant")
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    template_id: str
    tenant: str
    def __init__(self, template_id: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class GetTemplateResponse(_message.Message):
    __slots__ = ("template",)
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    template: Template
    def __init__(self, template: _Optional[_Union[Template, _Mapping]] = ...) -> None: ...

class CreateTemplateRequest(_message.Message):
    __slots__ = ("tenant", "template")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    template: Template
    def __init__(self, tenant: _Optional[str] = ..., template: _Optional[_Union[Template, _Mapping]] = ...) -> None: ...

class CreateTemplateResponse(_message.Message):
    __slots__ = ("template",)
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    template: Template
    def __init__(self, template: _Optional[_Union[Template, _Mapping]] = ...) -> None: ...

class UpdateTemplateRequest(_message.Message):
    __slots__ = ("tenant", "template_id", "public")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    template_id: str
    public: bool
    def __init__(self, tenant: _Optional[str] = ..., template_id: _Optional[str] = ..., public: _Optional[bool] = ...) -> None: ...

class UpdateTemplateResponse(_message.Message):
    __slots__ = ("template",)
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    template: Template
    def __init__(self, template: _Optional[_Union[Template, _Mapping]] = ...) -> None: ...

class DeleteTemplateRequest(_message.Message):
    __slots__ = ("tenant", "template_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    template_id: str
    def __init__(self, tenant: _Optional[str] = ..., template_id: _Optional[str] = ...) -> None: ...

class DeleteTemplateResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VolumeMount(_message.Message):
    __slots__ = ("name", "path")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class Volume(_message.Message):
    __slots__ = ("volume_id", "name", "tenant", "token", "created_at")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    name: str
    tenant: str
    token: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, volume_id: _Optional[str] = ..., name: _Optional[str] = ..., tenant: _Optional[str] = ..., token: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateVolumeRequest(_message.Message):
    __slots__ = ("tenant", "name")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class CreateVolumeResponse(_message.Message):
    __slots__ = ("volume",)
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    volume: Volume
    def __init__(self, volume: _Optional[_Union[Volume, _Mapping]] = ...) -> None: ...

class ListVolumesRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ListVolumesResponse(_message.Message):
    __slots__ = ("volumes",)
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    volumes: _containers.RepeatedCompositeFieldContainer[Volume]
    def __init__(self, volumes: _Optional[_Iterable[_Union[Volume, _Mapping]]] = ...) -> None: ...

class GetVolumeRequest(_message.Message):
    __slots__ = ("tenant", "volume_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    volume_id: str
    def __init__(self, tenant: _Optional[str] = ..., volume_id: _Optional[str] = ...) -> None: ...

class GetVolumeResponse(_message.Message):
    __slots__ = ("volume",)
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    volume: Volume
    def __init__(self, volume: _Optional[_Union[Volume, _Mapping]] = ...) -> None: ...

class DeleteVolumeRequest(_message.Message):
    __slots__ = ("tenant", "volume_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    volume_id: str
    def __init__(self, tenant: _Optional[str] = ..., volume_id: _Optional[str] = ...) -> None: ...

class DeleteVolumeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TemplateBuild(_message.Message):
    __slots__ = ("build_id", "status", "created_at", "finished_at", "tags", "cpu_count", "memory_mb", "reason", "reason_step")
    BUILD_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REASON_STEP_FIELD_NUMBER: _ClassVar[int]
    build_id: str
    status: BuildStatus
    created_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    tags: _containers.RepeatedScalarFieldContainer[str]
    cpu_count: int
    memory_mb: int
    reason: str
    reason_step: str
    def __init__(self, build_id: _Optional[str] = ..., status: _Optional[_Union[BuildStatus, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tags: _Optional[_Iterable[str]] = ..., cpu_count: _Optional[int] = ..., memory_mb: _Optional[int] = ..., reason: _Optional[str] = ..., reason_step: _Optional[str] = ...) -> None: ...

class TemplateBuildStep(_message.Message):
    __slots__ = ("type", "args", "files_hash", "force")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    FILES_HASH_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    type: str
    args: _containers.RepeatedScalarFieldContainer[str]
    files_hash: str
    force: bool
    def __init__(self, type: _Optional[str] = ..., args: _Optional[_Iterable[str]] = ..., files_hash: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class TemplateBuildSpec(_message.Message):
    __slots__ = ("from_image", "from_template", "registry_type", "force", "steps", "start_cmd", "ready_cmd")
    FROM_IMAGE_FIELD_NUMBER: _ClassVar[int]
    FROM_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_TYPE_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    START_CMD_FIELD_NUMBER: _ClassVar[int]
    READY_CMD_FIELD_NUMBER: _ClassVar[int]
    from_image: str
    from_template: str
    registry_type: str
    force: bool
    steps: _containers.RepeatedCompositeFieldContainer[TemplateBuildStep]
    start_cmd: str
    ready_cmd: str
    def __init__(self, from_image: _Optional[str] = ..., from_template: _Optional[str] = ..., registry_type: _Optional[str] = ..., force: _Optional[bool] = ..., steps: _Optional[_Iterable[_Union[TemplateBuildStep, _Mapping]]] = ..., start_cmd: _Optional[str] = ..., ready_cmd: _Optional[str] = ...) -> None: ...

class BuildLogEntry(_message.Message):
    __slots__ = ("timestamp", "level", "message", "step")
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    timestamp: _timestamp_pb2.Timestamp
    level: str
    message: str
    step: str
    def __init__(self, timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., level: _Optional[str] = ..., message: _Optional[str] = ..., step: _Optional[str] = ...) -> None: ...

class RequestTemplateBuildRequest(_message.Message):
    __slots__ = ("tenant", "name", "tags", "cpu_count", "memory_mb")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    cpu_count: int
    memory_mb: int
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., cpu_count: _Optional[int] = ..., memory_mb: _Optional[int] = ...) -> None: ...

class RequestTemplateBuildResponse(_message.Message):
    __slots__ = ("template", "build_id", "tags")
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    BUILD_ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    template: Template
    build_id: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, template: _Optional[_Union[Template, _Mapping]] = ..., build_id: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class GetTemplateFileUploadRequest(_message.Message):
    __slots__ = ("tenant", "template_id", "files_hash")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    FILES_HASH_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    template_id: str
    files_hash: str
    def __init__(self, tenant: _Optional[str] = ..., template_id: _Optional[str] = ..., files_hash: _Optional[str] = ...) -> None: ...

class GetTemplateFileUploadResponse(_message.Message):
    __slots__ = ("present", "upload_path")
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_PATH_FIELD_NUMBER: _ClassVar[int]
    present: bool
    upload_path: str
    def __init__(self, present: _Optional[bool] = ..., upload_path: _Optional[str] = ...) -> None: ...

class StartTemplateBuildRequest(_message.Message):
    __slots__ = ("tenant", "template_id", "build_id", "spec")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    BUILD_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    template_id: str
    build_id: str
    spec: TemplateBuildSpec
    def __init__(self, tenant: _Optional[str] = ..., template_id: _Optional[str] = ..., build_id: _Optional[str] = ..., spec: _Optional[_Union[TemplateBuildSpec, _Mapping]] = ...) -> None: ...

class StartTemplateBuildResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetTemplateBuildStatusRequest(_message.Message):
    __slots__ = ("tenant", "template_id", "build_id", "logs_offset", "limit", "level")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    BUILD_ID_FIELD_NUMBER: _ClassVar[int]
    LOGS_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    template_id: str
    build_id: str
    logs_offset: int
    limit: int
    level: str
    def __init__(self, tenant: _Optional[str] = ..., template_id: _Optional[str] = ..., build_id: _Optional[str] = ..., logs_offset: _Optional[int] = ..., limit: _Optional[int] = ..., level: _Optional[str] = ...) -> None: ...

class GetTemplateBuildStatusResponse(_message.Message):
    __slots__ = ("build", "log_entries")
    BUILD_FIELD_NUMBER: _ClassVar[int]
    LOG_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    build: TemplateBuild
    log_entries: _containers.RepeatedCompositeFieldContainer[BuildLogEntry]
    def __init__(self, build: _Optional[_Union[TemplateBuild, _Mapping]] = ..., log_entries: _Optional[_Iterable[_Union[BuildLogEntry, _Mapping]]] = ...) -> None: ...

class AssignTemplateTagsRequest(_message.Message):
    __slots__ = ("tenant", "target", "tags")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    target: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tenant: _Optional[str] = ..., target: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class AssignTemplateTagsResponse(_message.Message):
    __slots__ = ("build_id", "tags")
    BUILD_ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    build_id: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, build_id: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class RemoveTemplateTagsRequest(_message.Message):
    __slots__ = ("tenant", "name", "tags")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class RemoveTemplateTagsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateSnapshotRequest(_message.Message):
    __slots__ = ("tenant", "sandbox_id", "name")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    sandbox_id: str
    name: str
    def __init__(self, tenant: _Optional[str] = ..., sandbox_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class CreateSnapshotResponse(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: Template
    def __init__(self, snapshot: _Optional[_Union[Template, _Mapping]] = ...) -> None: ...

class ListSnapshotsRequest(_message.Message):
    __slots__ = ("tenant", "sandbox_id", "name")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    sandbox_id: str
    name: str
    def __init__(self, tenant: _Optional[str] = ..., sandbox_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ListSnapshotsResponse(_message.Message):
    __slots__ = ("snapshots",)
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    snapshots: _containers.RepeatedCompositeFieldContainer[Template]
    def __init__(self, snapshots: _Optional[_Iterable[_Union[Template, _Mapping]]] = ...) -> None: ...

class ForkSandboxRequest(_message.Message):
    __slots__ = ("tenant", "sandbox_id", "count", "timeout_seconds")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    sandbox_id: str
    count: int
    timeout_seconds: int
    def __init__(self, tenant: _Optional[str] = ..., sandbox_id: _Optional[str] = ..., count: _Optional[int] = ..., timeout_seconds: _Optional[int] = ...) -> None: ...

class ForkResult(_message.Message):
    __slots__ = ("sandbox", "error")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    sandbox: Sandbox
    error: ForkError
    def __init__(self, sandbox: _Optional[_Union[Sandbox, _Mapping]] = ..., error: _Optional[_Union[ForkError, _Mapping]] = ...) -> None: ...

class ForkError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ForkSandboxResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ForkResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ForkResult, _Mapping]]] = ...) -> None: ...
