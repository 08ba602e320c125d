"""Progress on stderr while the load runs: a bar redrawn in place on a terminal, a plain line
every few seconds otherwise (a CI log or a file gets no carriage returns), then one summary
line."""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from extproc.loadtest.recording import Recorder

_BAR_CELLS = 24
_TTY_EVERY_S = 0.25
_LINE_EVERY_S = 5.0


class Progress:
    def __init__(self, recorder: Recorder, duration_s: float, out: TextIO | None = None) -> None:
        self.recorder = recorder
        self.duration_s = duration_s
        self.out = sys.stderr if out is None else out  # as it is now, not at import
        self.tty = self.out.isatty()

    def say(self, text: str) -> None:
        """A phase of the run (creating sandboxes, waiting for Envoy): its own line."""
        print(f"loadtest: {text}", file=self.out, flush=True)

    async def show(self) -> None:
        """Until cancelled."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        last_done, last_at = 0, started
        every = _TTY_EVERY_S if self.tty else _LINE_EVERY_S
        try:
            while True:
                await asyncio.sleep(every)
                now = loop.time()
                done = self.recorder.ok + self.recorder.failed
                rate = (done - last_done) / max(now - last_at, 1e-9)
                last_done, last_at = done, now
                self._draw(now - started, rate)
        finally:
            if self.tty:
                self.out.write("\r\x1b[K")
                self.out.flush()

    def _draw(self, elapsed_s: float, rate: float) -> None:
        shown = min(elapsed_s, self.duration_s)
        counts = (
            f"{shown:5.1f}/{self.duration_s:g} s  {self.recorder.ok:,} ok  "
            f"{self.recorder.failed:,} errors  {rate:,.0f}/s"
        )
        if self.tty:
            filled = int(_BAR_CELLS * shown / self.duration_s) if self.duration_s else _BAR_CELLS
            bar = "#" * filled + "." * (_BAR_CELLS - filled)
            self.out.write(f"\r\x1b[K[{bar}] {counts}")
        else:
            self.out.write(f"loadtest: {counts}\n")
        self.out.flush()

    def finish(self, elapsed_s: float) -> None:
        done = self.recorder.ok + self.recorder.failed
        share = 100 * self.recorder.failed / done if done else 0.0
        self.say(
            f"done in {elapsed_s:.1f} s: {self.recorder.ok:,} ok, {self.recorder.failed:,} "
            f"errors ({share:.2f}%), {done / max(elapsed_s, 1e-9):,.1f} operations/s"
        )
