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

class Sandbox(_message.Message):
    __slots__ = ("sandbox_id", "template_id", "alias", "tenant", "metadata", "env_vars", "started_at", "end_at", "state", "cpu_count", "memory_mb", "disk_size_mb", "envd_version", "envd_access_token", "endpoint_host", "on_timeout", "auto_resume", "secure", "allow_internet_access", "end_reason", "allow_public_traffic", "traffic_access_token", "pause_mode")
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
    def __init__(self, sandbox_id: _Optional[str] = ..., template_id: _Optional[str] = ..., alias: _Optional[str] = ..., tenant: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., env_vars: _Optional[_Mapping[str, str]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[SandboxState, str]] = ..., cpu_count: _Optional[int] = ..., memory_mb: _Optional[int] = ..., disk_size_mb: _Optional[int] = ..., envd_version: _Optional[str] = ..., envd_access_token: _Optional[str] = ..., endpoint_host: _Optional[str] = ..., on_timeout: _Optional[_Union[TimeoutAction, str]] = ..., auto_resume: _Optional[bool] = ..., secure: _Optional[bool] = ..., allow_internet_access: _Optional[bool] = ..., end_reason: _Optional[str] = ..., allow_public_traffic: _Optional[bool] = ..., traffic_access_token: _Optional[str] = ..., pause_mode: _Optional[_Union[PauseMode, str]] = ...) -> None: ...

class CreateSandboxRequest(_message.Message):
    __slots__ = ("tenant", "template_id", "timeout_seconds", "metadata", "env_vars", "on_timeout", "auto_resume", "secure", "allow_internet_access", "idempotency_key", "allow_public_traffic", "quota", "auto_pause_memory")
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
    def __init__(self, tenant: _Optional[str] = ..., template_id: _Optional[str] = ..., timeout_seconds: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ..., env_vars: _Optional[_Mapping[str, str]] = ..., on_timeout: _Optional[_Union[TimeoutAction, str]] = ..., auto_resume: _Optional[bool] = ..., secure: _Optional[bool] = ..., allow_internet_access: _Optional[bool] = ..., idempotency_key: _Optional[str] = ..., allow_public_traffic: _Optional[bool] = ..., quota: _Optional[_Union[TenantQuota, _Mapping]] = ..., auto_pause_memory: _Optional[bool] = ...) -> None: ...

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
    __slots__ = ("template_id", "aliases", "tenant", "public", "cpu_count", "memory_mb", "disk_size_mb", "envd_version", "created_at", "updated_at", "ports")
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
    def __init__(self, template_id: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., tenant: _Optional[str] = ..., public: _Optional[bool] = ..., cpu_count: _Optional[int] = ..., memory_mb: _Optional[int] = ..., disk_size_mb: _Optional[int] = ..., envd_version: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ports: _Optional[_Iterable[int]] = ...) -> None: ...

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
