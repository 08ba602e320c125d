"""What a template build needs from the local backend that runs it.

building.py and build_sandbox.py drive a build through these members only. Naming them here,
rather than importing the backend class, keeps the dependency one way: the local backend
knows its builds, the builds know only this.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from extproc.lifecycle.isolation import Isolation
from extproc.lifecycle.layers import LayerStore
from extproc.lifecycle.processes import Watched
from extproc.lifecycle.settings import LocalSettings
from extproc.lifecycle.templates import Catalog
from extproc.lifecycle.uploads import UploadStore


class BuildHost(Protocol):
    @property
    def settings(self) -> LocalSettings: ...

    @property
    def sandboxes_dir(self) -> Path: ...

    @property
    def seed(self) -> bytes:
        """The access-token seed, for the build sandbox's picod."""
        ...

    @property
    def isolation(self) -> Isolation | None: ...

    @property
    def layers(self) -> LayerStore: ...

    @property
    def uploads(self) -> UploadStore: ...

    def catalog_of(self) -> Catalog: ...

    def spawn_task(self, coro: Callable[[], object], name: str) -> None: ...

    async def refresh_template_pools(self) -> None: ...

    async def collect_layers(self) -> None: ...

    async def free(self, sandbox_id: str, host: str) -> None:
        """Free the addresses and directories a build sandbox took."""
        ...

    async def stop_processes(self, sandbox_id: str, process: Watched) -> None: ...
