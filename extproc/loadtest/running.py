"""One load-test run: check, set up, snapshot, load, snapshot, clean up, report.

The order matters for honest figures. The admin and the gateway are checked before anything
is created, so a wrong key or address costs nothing. The data plane's sandboxes are made
before the first snapshot, so creating them is outside the window. Both snapshots are
settled (envoy_admin.py), so the window's histograms hold exactly its requests on a
gateway that serves nobody else. Ctrl-C ends the load early and still kills every sandbox
and reports (marked interrupted); a second Ctrl-C stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

import uvloop
from e2b import AsyncSandbox

from extproc.loadtest.data_plane import (
    PacedLoad,
    create_sandboxes,
    envd_target,
    kill_sandboxes,
)
from extproc.loadtest.envoy_admin import EnvoyAdmin
from extproc.loadtest.envoy_stats import StatsWindow
from extproc.loadtest.gateway_env import check_gateway, gateway_env, sdk_version
from extproc.loadtest.lifecycle_loop import LifecycleLoop
from extproc.loadtest.progress import Progress
from extproc.loadtest.recording import Recorder
from extproc.loadtest.report import EnvoyView, build_report, render_text
from extproc.loadtest.settings import DATA_PLANE, LoadtestSettings


def run_loadtest(settings: LoadtestSettings) -> tuple[dict[str, Any], str]:
    """The report as a dict and as text; LoadtestError when the run cannot be made."""
    return uvloop.run(_run(settings))


async def _run(settings: LoadtestSettings) -> tuple[dict[str, Any], str]:
    gateway = gateway_env()
    recorder = Recorder()
    progress = Progress(recorder, settings.duration_s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def first_interrupt() -> None:
        stop.set()
        progress.say("interrupted: finishing what is in flight (Ctrl-C again to stop at once)")
        loop.remove_signal_handler(signal.SIGINT)  # the next one raises KeyboardInterrupt

    loop.add_signal_handler(signal.SIGINT, first_interrupt)
    warnings: list[str] = []
    client: dict[str, Any] = {}
    try:
        async with EnvoyAdmin(settings.admins, settings.stat_prefix) as admin:
            await admin.check()
            await check_gateway(gateway)
            load, sandboxes = await _prepare(settings, recorder, stop, progress, client)
            try:
                progress.say("reading Envoy's stats before the load")
                before, _ = await admin.settled_snapshot(settings.histogram_wait_s)
                progress.say(f"{settings.scenario} load for {settings.duration_s:g} s")
                cpu_started, started = time.process_time(), loop.time()
                await _with_background(
                    load(settings.duration_s), admin.sample_peaks(), progress.show()
                )
                seconds = loop.time() - started
                cpu_s = time.process_time() - cpu_started
                progress.finish(seconds)
                wait_s = settings.histogram_wait_s
                progress.say(f"waiting for Envoy's histograms (at most {wait_s:g} s)")
                after, settled = await admin.settled_snapshot(wait_s)
            finally:
                if sandboxes:
                    warnings += await kill_sandboxes(sandboxes)
    finally:
        with contextlib.suppress(ValueError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
    view = EnvoyView(
        window=StatsWindow(before, after),
        stat_prefix=settings.stat_prefix,
        admins=settings.admins,
        settled=settled,
        histogram_wait_s=settings.histogram_wait_s,
        cx_active_peaks=admin.cx_active_peaks,
    )
    client |= {"cpu_s": round(cpu_s, 3), "cpu_cores": round(cpu_s / seconds, 3)}
    report = build_report(
        scenario=settings.scenario,
        settings=_settings_figures(settings),
        seconds=seconds,
        interrupted=stop.is_set(),
        view=view,
        recorder=recorder,
        client=client,
        warnings=warnings,
    )
    return report, render_text(report)


Load = Callable[[float], Awaitable[None]]


async def _prepare(
    settings: LoadtestSettings,
    recorder: Recorder,
    stop: asyncio.Event,
    progress: Progress,
    client: dict[str, Any],
) -> tuple[Load, list[AsyncSandbox]]:
    """The scenario's load, and the sandboxes made for it (to kill after)."""
    if settings.scenario != DATA_PLANE:
        looping = LifecycleLoop(
            settings.lifecycle, settings.template, settings.sandbox_timeout_s, recorder, stop
        )
        client["kind"] = f"e2b SDK {sdk_version()}, AsyncSandbox"
        client["clients"] = settings.lifecycle.clients
        return looping.run, []
    plane = settings.data_plane
    progress.say(f"creating {plane.sandboxes} sandboxes for the data plane")
    sandboxes = await create_sandboxes(
        plane.sandboxes, settings.template, settings.sandbox_timeout_s
    )
    targets = [envd_target(sandbox, plane.request) for sandbox in sandboxes]
    paced = PacedLoad(targets, plane, recorder, stop)
    client["kind"] = "HTTP/1.1 (httptools), open loop"

    async def load(duration_s: float) -> None:
        await paced.run(duration_s)
        client.update(
            target_rate_per_s=plane.rate,
            due=paced.due,
            dropped=paced.dropped,
            unfinished=paced.unfinished,
        )

    return load, sandboxes


async def _with_background(main: Awaitable[None], *background: Awaitable[None]) -> None:
    """`main` to its end, with `background` coroutines running beside it and cancelled
    after."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in background]
    try:
        await main
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _settings_figures(settings: LoadtestSettings) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "duration_s": settings.duration_s,
        "template": settings.template,
        "admins": list(settings.admins),
        "stat_prefix": settings.stat_prefix,
    }
    if settings.scenario == DATA_PLANE:
        figures |= asdict(settings.data_plane)
    else:
        figures |= asdict(settings.lifecycle)
    return figures
