"""Contexts: E2B's name for a kernel with a language and a working directory.

Each language has a default context, made on first use (Python's at boot, so the first
`run_code` finds a warm kernel); `POST /contexts` makes more. Which languages are served, and
by which kernel, is kernel_specs' to say; asking for any other gets InvalidArgument naming
the language and what is installed, never a kernel that cannot start.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extproc.core.errors import InvalidArgument, NotFound
from extproc.interpreter.kernel_specs import KernelSpecs
from extproc.interpreter.kernels import Kernel
from extproc.interpreter.settings import InterpreterSettings


@dataclass
class Context:
    id: str
    language: str
    cwd: Path
    kernel: Kernel

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "language": self.language, "cwd": str(self.cwd)}


class Contexts:
    def __init__(self, settings: InterpreterSettings, runtime_dir: Path) -> None:
        self._settings = settings
        self._runtime_dir = runtime_dir
        self._specs = KernelSpecs(settings, runtime_dir)
        self._contexts: dict[str, Context] = {}
        self._defaults: dict[str, str] = {}  # language -> context id
        self._default_lock = asyncio.Lock()

    def spec_for(self, language: str | None) -> tuple[str, str]:
        """(language, kernelspec name) for a request's language, or InvalidArgument."""
        return self._specs.resolve(language)

    async def create(self, language: str | None, cwd: str | None) -> Context:
        name, spec = self.spec_for(language)
        directory = self._settings.cwd / cwd if cwd else self._settings.cwd
        if not directory.is_dir():
            raise InvalidArgument(f"cwd {str(directory)!r} is not an existing directory")
        context_id = str(uuid.uuid4())
        kernel = Kernel(self._specs, spec, directory, self._runtime_dir / context_id[:8])
        await kernel.start(self._settings.kernel_start_timeout)
        context = Context(context_id, name, directory, kernel)
        self._contexts[context_id] = context
        return context

    async def default(self, language: str | None) -> Context:
        """The language's default context, started now if it has none (or it was removed)."""
        name, _ = self.spec_for(language)
        context = self._contexts.get(self._defaults.get(name, ""))
        if context is not None:
            return context
        async with self._default_lock:  # two first calls must not start two kernels
            context = self._contexts.get(self._defaults.get(name, ""))
            if context is None:
                context = await self.create(name, None)
                self._defaults[name] = context.id
            return context

    def get(self, context_id: str) -> Context:
        context = self._contexts.get(context_id)
        if context is None:
            raise NotFound(f"context {context_id!r} not found")
        return context

    def list(self) -> list[Context]:
        return list(self._contexts.values())

    async def remove(self, context_id: str) -> None:
        context = self.get(context_id)
        del self._contexts[context_id]
        await context.kernel.shutdown()

    async def restart(self, context_id: str) -> None:
        context = self.get(context_id)
        if context.kernel.lock.locked():
            # A running execution holds the kernel: stop it, then wait out its cleanup.
            await context.kernel.interrupt()
        async with context.kernel.lock:
            await context.kernel.restart(self._settings.kernel_start_timeout)

    async def close(self) -> None:
        contexts, self._contexts = list(self._contexts.values()), {}
        for context in contexts:
            with contextlib.suppress(Exception):
                await context.kernel.shutdown()
