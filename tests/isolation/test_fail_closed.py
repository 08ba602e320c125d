"""Without what the isolation needs, `up` refuses to run sandboxes and says what to install."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from support.gateway import CLI
from support.processes import free_port


def _path_without(tmp_path: Path, hidden: str) -> str:
    """A PATH holding every executable of this one except `hidden`."""
    shown = tmp_path / "bin"
    shown.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not Path(directory).is_dir():
            continue
        for tool in Path(directory).iterdir():
            target = shown / tool.name
            if tool.name != hidden and not target.exists() and os.access(tool, os.X_OK):
                target.symlink_to(tool)
    return str(shown)


def test_up_without_nftables_exits_with_the_install_line(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": _path_without(tmp_path, "nft")}
    argv = [*CLI, "up", "--state-dir", str(tmp_path / "state"), "--ready-timeout", "60",
            "--listen", f"127.0.0.1:{free_port()}"]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "ready" not in done.stdout.split()
    assert "nftables" in done.stderr
    assert "apt-get install -y nftables" in done.stderr
    assert "--isolation none" in done.stderr
