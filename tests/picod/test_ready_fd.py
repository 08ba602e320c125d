"""`picod --ready-fd`: one byte once it serves, then the fd is closed (how the lifecycle
service learns that a forked sandbox is up without polling it)."""

from __future__ import annotations

import os
import select
import subprocess
from pathlib import Path

import httpx

from picod.conftest import PICOD
from support.processes import environ_without, free_port


def test_ready_fd_gets_one_byte_once_serving_then_closes(tmp_path: Path) -> None:
    port = free_port()
    read, write = os.pipe()
    argv = [PICOD, "picod", "--listen", f"127.0.0.1:{port}", "--home", str(tmp_path),
            "--no-auth", "--ready-fd", str(write)]  # fmt: skip
    proc = subprocess.Popen(argv, pass_fds=[write], env=environ_without("AGENTCUBE_E2B_PICOD_"))
    os.close(write)
    try:
        assert select.select([read], [], [], 15)[0], "no word from picod"
        assert os.read(read, 16) == b"1"
        # Serving already when it said so: no retry needed.
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 204
        assert select.select([read], [], [], 5)[0]
        assert os.read(read, 16) == b"", "picod kept the fd open"
    finally:
        os.close(read)
        proc.terminate()
        proc.wait(10)


def test_a_ready_fd_that_is_no_number_is_refused(tmp_path: Path) -> None:
    argv = [PICOD, "picod", "--listen", f"127.0.0.1:{free_port()}", "--home", str(tmp_path),
            "--no-auth", "--ready-fd", "x"]  # fmt: skip
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=30,
        env=environ_without("AGENTCUBE_E2B_PICOD_"),
    )  # fmt: skip
    assert done.returncode == 2
    assert "--ready-fd" in done.stderr
