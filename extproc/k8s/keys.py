"""The API key index from the cluster: informers on Secret `e2b-api-keys` and ConfigMap
`e2b-api-key-config`, each watched by name so RBAC can grant `resourceNames` only.

It offers what the edge's Check reads from the file-based KeyStore: `index` (an immutable
KeyIndex swapped in whole, so Check reads one attribute and never sees half a rebuild) and
`loaded`. The index is rebuilt on the loop thread inside the watch event's handler, so a key
revoked in the Secret is refused from the next Check after the event arrives.

Nothing is published until both documents are synced: with only the Secret, every key would
resolve to the default namespace, i.e. the wrong tenant. A document that does not parse keeps
the last good index (logged once per distinct problem); a deleted Secret empties the index.
The ConfigMap's `quotas` key (core/quotas.py) rides along: if it does not parse, the keys
still load and the default quotas apply (logged once per distinct problem).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

from kubernetes.client import ApiClient, CoreV1Api

from extproc.core.api_keys import parse_key_documents
from extproc.core.errors import InvalidArgument
from extproc.core.key_source import KeySource
from extproc.k8s.informing import Informer
from extproc.k8s.listwatch import KubeObject, WatchTarget, field_selector_for_name
from extproc.k8s.settings import InformerSettings, KeySourceSettings

log = logging.getLogger(__name__)


def _only_data(obj: KubeObject) -> KubeObject:
    """Keep what the parser and the informer read; drop managedFields and annotations."""
    metadata = obj.get("metadata") or {}
    kept: KubeObject = {
        "metadata": {
            key: metadata[key]
            for key in ("name", "namespace", "resourceVersion")
            if key in metadata
        }
    }
    for field in ("data", "stringData"):
        if field in obj:
            kept[field] = obj[field]
    return kept


class KeyInformers(KeySource):
    def __init__(
        self,
        client: ApiClient,
        keys: KeySourceSettings,
        settings: InformerSettings,
    ) -> None:
        super().__init__()
        core = CoreV1Api(client)

        # `list_namespaced`: the client's list method for the kind, namespace still unbound.
        def informer(kind: str, name: str, list_namespaced: Callable[..., Any]) -> Informer:
            target = WatchTarget(
                name=f"{kind}/{name}",
                list_call=functools.partial(list_namespaced, keys.namespace),
                field_selector=field_selector_for_name(name),
                transform=_only_data,
            )
            return Informer(target, settings, [self])

        self.secret = informer("secret", keys.secret_name, core.list_namespaced_secret)
        self.config = informer("configmap", keys.config_name, core.list_namespaced_config_map)

    async def watch(self) -> None:
        """Run both informers until cancelled (the KeyStore.watch counterpart)."""
        async with asyncio.TaskGroup() as group:
            for informer in (self.secret, self.config):
                group.create_task(informer.run(), name=f"informer-{informer.target.name}")
            # Handlers skip rebuilding until both are synced; the first index is built here.
            await self.secret.synced.wait()
            await self.config.synced.wait()
            self._rebuild()

    @property
    def connected(self) -> bool:
        return self.secret.status.connected and self.config.status.connected

    def status(self) -> dict[str, Any]:
        return {
            "secret": self.secret.status.as_dict(),
            "config": self.config.status.as_dict(),
            "keys": len(self.index),
        }

    # InformerHandler: any change to either document rebuilds the whole (small) index.
    def on_add(self, obj: KubeObject) -> None:
        self._rebuild()

    def on_update(self, old: KubeObject, new: KubeObject) -> None:
        self._rebuild()

    def on_delete(self, obj: KubeObject) -> None:
        self._rebuild()

    def _rebuild(self) -> None:
        if not (self.secret.synced.is_set() and self.config.synced.is_set()):
            return
        secret = next(iter(self.secret.store.values()), None)
        config = next(iter(self.config.store.values()), None)
        try:
            index = parse_key_documents(secret, config)
        except InvalidArgument as error:
            self.keep_previous(error.message)
            return
        if self.publish(index):
            log.info("loaded %d API keys from the cluster", len(index))
