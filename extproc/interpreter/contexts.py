"""Contexts: E2B's name for a kernel with a language and a working directory.

Each language has a default context, made on first use (Python's at boot, so the first
`run_code` finds a warm kernel); `POST /contexts` makes more. A language is served when an
installed kernelspec declares it (`python3` declares `python`); asking for any other gets
InvalidArgument naming the language and what is installed, never a kernel that cannot start.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager

from extproc.core.errors import InvalidArgument, NotFound
from extproc.interpreter.kernels import Kernel
from extproc.interpreter.settings import InterpreterSettings

DEFAULT_LANGUAGE = "python"
# Extra kernel arguments per language. IPython's SQLite history commits every cell, which
# costs ~8 ms of a ~15 ms `1+1`; In/Out and execution counts are kept in memory without it.
KERNEL_ARGUMENTS: dict[str, tuple[str, ...]] = {"python": ("--HistoryManager.enabled=False",)}


@dataclass
class Context:
    id: str
    language: str
    cwd: Path
    kernel: Kernel

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "language": self.language, "cwd": str(self.cwd)}


def installed_languages() -> dict[str, str]:
    """language -> kernelspec name, from the kernelspecs on this machine."""
    languages: dict[str, str] = {}
    for name, found in sorted(KernelSpecManager().get_all_specs().items()):
        language = str(found.get("spec", {}).get("language", "")).lower()
        # Several specs for one language: the first by name wins, deterministically.
        if language and language not in languages:
            languages[language] = name
    return languages


class Contexts:
    def __init__(self, settings: InterpreterSettings, runtime_dir: Path) -> None:
        self._settings = settings
        self._runtime_dir = runtime_dir
        self._languages = installed_languages()
        self._contexts: dict[str, Context] = {}
        self._defaults: dict[str, str] = {}  # language -> context id
        self._default_lock = asyncio.Lock()

    def spec_for(self, language: str | None) -> tuple[str, str]:
        """(language, kernelspec name) for a request's language, or InvalidArgument."""
        wanted = (language or DEFAULT_LANGUAGE).strip().lower()
        spec = self._languages.get(wanted)
        if spec is None:
            installed = ", ".join(sorted(self._languages)) or "none"
            raise InvalidArgument(
                f"language {wanted!r} is not supported here: no kernel for it is installed "
                f"(installed: {installed})"
            )
        return wanted, spec

    async def create(self, language: str | None, cwd: str | None) -> Context:
        name, spec = self.spec_for(language)
        directory = self._settings.cwd / cwd if cwd else self._settings.cwd
        if not directory.is_dir():
            raise InvalidArgument(f"cwd {str(directory)!r} is not an existing directory")
        context_id = str(uuid.uuid4())
        kernel = Kernel(
            spec, directory, self._runtime_dir / context_id[:8], KERNEL_ARGUMENTS.get(name, ())
        )
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
