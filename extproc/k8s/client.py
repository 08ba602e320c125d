"""Building the official client's ApiClient: in-cluster service account, else a kubeconfig."""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import config
from kubernetes.client import ApiClient, Configuration


def api_client(kubeconfig: Path | None = None, context: str | None = None) -> ApiClient:
    """In a pod (KUBERNETES_SERVICE_HOST set, no kubeconfig given) use the service account;
    otherwise load `kubeconfig` (default ~/.kube/config or $KUBECONFIG) and `context`."""
    configuration = Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        # kubernetes.config is untyped (the generated client is typed, the loaders are not).
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig else None,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    return ApiClient(configuration)
