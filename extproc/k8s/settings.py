"""Informer settings: one frozen dataclass, every field with its unit and default."""

from __future__ import annotations

from dataclasses import dataclass

from extproc.core.api_keys import CONFIG_NAME, SECRET_NAME
from extproc.core.backoff import Backoff

INFORMER_BACKOFF = Backoff(initial_s=0.5, max_s=30.0, jitter=0.5)


@dataclass(frozen=True, slots=True)
class InformerSettings:
    # Seconds the API server keeps one watch open (`timeoutSeconds`); the informer then
    # re-watches from its resourceVersion without relisting. Default 120.
    watch_timeout_s: int = 120
    # Seconds to open a TCP connection to the API server. Default 5.0.
    connect_timeout_s: float = 5.0
    # Seconds of silence on a watch, beyond `watch_timeout_s`, before the connection is taken
    # as dead (a half-open TCP connection sends nothing). Also the read timeout of a list.
    # Default 15.0.
    read_grace_s: float = 15.0
    # Objects per list page (`limit`, with `continue` tokens). Default 500.
    page_size: int = 500
    # Seconds between retries after a failed list or watch: doubling from 0.5 to 30, each
    # jittered down by up to half, so replicas do not retry in step.
    backoff: Backoff = INFORMER_BACKOFF

    def __post_init__(self) -> None:
        if self.watch_timeout_s < 1:
            raise ValueError(f"watch_timeout_s must be >= 1, got {self.watch_timeout_s}")
        if self.page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {self.page_size}")


@dataclass(frozen=True, slots=True)
class KeySourceSettings:
    # Namespace holding the two key documents. Default agentcube-system.
    namespace: str = "agentcube-system"
    # Secret of sha256(key) -> status. Default e2b-api-keys.
    secret_name: str = SECRET_NAME
    # ConfigMap of sha256(key) -> namespace, plus defaultNamespace. Default e2b-api-key-config.
    config_name: str = CONFIG_NAME
