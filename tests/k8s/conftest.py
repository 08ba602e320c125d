"""Fixtures: a kmock-served FakeApi, the official client pointed at it, and informer runners
that cancel their task and check the worker thread has ended."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import pytest
from kubernetes.client import ApiClient, Configuration

from extproc.core.backoff import Backoff
from extproc.k8s.settings import InformerSettings
from support.kubeapi import FakeApi, served

# Fast retries so recovery tests take milliseconds; the logic is the production one.
FAST = InformerSettings(
    watch_timeout_s=30,
    connect_timeout_s=1.0,
    backoff=Backoff(initial_s=0.02, max_s=0.1, jitter=0.5),
)
WAIT_S = 5.0


@pytest.fixture
async def api() -> AsyncIterator[FakeApi]:
    async with served(lambda fake: fake.install("secrets", "configmaps", "pods")) as fake:
        yield fake


@pytest.fixture
def client(api: FakeApi) -> Iterator[ApiClient]:
    configuration = Configuration(host=api.url)
    configuration.retries = 0  # connection refused surfaces at once; the informer retries
    with ApiClient(configuration) as api_client:
        yield api_client


Runner = Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]


@pytest.fixture
async def run() -> AsyncIterator[Runner]:
    """Start coroutines as tasks; at teardown cancel them and wait for informer threads."""
    tasks: list[asyncio.Task[None]] = []

    def start(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        tasks.append(task)
        return task

    yield start
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for thread in threading.enumerate():
        if thread.name.startswith("informer-"):
            await asyncio.to_thread(thread.join, WAIT_S)
            assert not thread.is_alive(), f"informer thread {thread.name} still running"
