"""Informer settings: one frozen dataclass, every field with its unit and default."""

from __future__ import annotations

from dataclasses import dataclass

from extproc.core.api_keys import CONFIG_NAME, SECRET_NAME


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
    # First and largest seconds between retries after a failed list or watch (doubling,
    # then jittered down by up to `backoff_jitter` of the delay). Defaults 0.5 and 30.0.
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    # Fraction in [0, 1] of each delay removed at random, so replicas do not retry in step.
    # Default 0.5.
    backoff_jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.watch_timeout_s < 1:
            raise ValueError(f"watch_timeout_s must be >= 1, got {self.watch_timeout_s}")
        if self.page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {self.page_size}")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError(
                "backoff must satisfy 0 < backoff_initial_s <= backoff_max_s, got "
                f"{self.backoff_initial_s} and {self.backoff_max_s}"
            )
        if not 0.0 <= self.backoff_jitter <= 1.0:
            raise ValueError(f"backoff_jitter must be in [0, 1], got {self.backoff_jitter}")


@dataclass(frozen=True, slots=True)
class KeySourceSettings:
    # Namespace holding the two key documents. Default agentcube-system.
    namespace: str = "agentcube-system"
    # Secret of sha256(key) -> status. Default e2b-api-keys.
    secret_name: str = SECRET_NAME
    # ConfigMap of sha256(key) -> namespace, plus defaultNamespace. Default e2b-api-key-config.
    config_name: str = CONFIG_NAME
