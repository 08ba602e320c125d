"""process.Process through the real sync E2B SDK against a real picod subprocess."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from e2b import (
    AuthenticationException,
    CommandExitException,
    InvalidArgumentException,
    Sandbox,
    TimeoutException,
)

if TYPE_CHECKING:
    from conftest import PicodProcess


def eventually(check: Callable[[], bool], within: float = 5.0) -> bool:
    """Poll a condition another process makes true (no event to await across processes)."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_run_collects_stdout_and_stderr(sync_sandbox: Sandbox) -> None:
    result = sync_sandbox.commands.run("echo out; echo err >&2")
    assert (result.stdout, result.stderr, result.exit_code, result.error) == (
        "out\n",
        "err\n",
        0,
        None,
    )


def test_output_is_streamed_as_it_is_produced(sync_sandbox: Sandbox) -> None:
    # "two" is only printed after picod delivered "one" and the test answered it.
    handle = sync_sandbox.commands.run("echo one; read x; echo $x", background=True, stdin=True)
    events = iter(handle)
    assert next(events) == ("one\n", None, None)
    sync_sandbox.commands.send_stdin(handle.pid, "two\n")
    assert next(events) == ("two\n", None, None)
    assert handle.wait().stdout == "one\ntwo\n"


def test_nonzero_exit_raises_with_status(sync_sandbox: Sandbox) -> None:
    with pytest.raises(CommandExitException) as caught:
        sync_sandbox.commands.run("echo bad >&2; exit 3")
    assert caught.value.exit_code == 3
    assert caught.value.stderr == "bad\n"
    assert caught.value.error == "exit status 3"


def test_envs_cwd_and_default_environment(
    sync_sandbox: Sandbox, picod_sdk_env: PicodProcess
) -> None:
    result = sync_sandbox.commands.run("echo $FOO; pwd", envs={"FOO": "bar baz"}, cwd="/tmp")
    assert result.stdout == "bar baz\n/tmp\n"
    home = sync_sandbox.commands.run('pwd; echo "$HOME" "$USER"').stdout.split("\n")
    assert home[0] == str(picod_sdk_env.home)
    assert home[1] == f"{picod_sdk_env.home} user"


def test_relative_cwd_resolves_against_home(
    sync_sandbox: Sandbox, picod_sdk_env: PicodProcess
) -> None:
    (picod_sdk_env.home / "sub").mkdir(exist_ok=True)
    assert sync_sandbox.commands.run("pwd", cwd="sub").stdout == f"{picod_sdk_env.home}/sub\n"


def test_picods_own_environment_does_not_leak(sync_sandbox: Sandbox) -> None:
    env = sync_sandbox.commands.run("env").stdout
    assert "PYTEST" not in env
    assert "VIRTUAL_ENV" not in env


def test_missing_cwd_is_invalid_argument(sync_sandbox: Sandbox) -> None:
    with pytest.raises(InvalidArgumentException, match="does not exist"):
        sync_sandbox.commands.run("true", cwd="/no/such/dir")


def test_timeout_raises_and_kills_the_process(sync_sandbox: Sandbox, tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    with pytest.raises(TimeoutException):
        sync_sandbox.commands.run(f"echo $$ > {marker}; exec sleep 30", timeout=1)
    pid = int(marker.read_text())
    assert eventually(lambda: not Path(f"/proc/{pid}").exists())
    assert pid not in [p.pid for p in sync_sandbox.commands.list()]


def test_background_list_kill(sync_sandbox: Sandbox) -> None:
    handle = sync_sandbox.commands.run("sleep 30", background=True)
    listed = {p.pid: p for p in sync_sandbox.commands.list()}
    assert listed[handle.pid].cmd == "/bin/bash"
    assert listed[handle.pid].args == ["-l", "-c", "sleep 30"]
    assert sync_sandbox.commands.kill(handle.pid) is True
    with pytest.raises(CommandExitException) as caught:
        handle.wait()
    assert caught.value.exit_code == -1
    assert caught.value.error == "signal: killed"
    assert sync_sandbox.commands.kill(handle.pid) is False
    assert handle.pid not in [p.pid for p in sync_sandbox.commands.list()]


def test_stdin_send_and_close(sync_sandbox: Sandbox) -> None:
    handle = sync_sandbox.commands.run("cat; echo eof", background=True, stdin=True)
    sync_sandbox.commands.send_stdin(handle.pid, "hello\n")
    sync_sandbox.commands.send_stdin(handle.pid, b"bytes\n")
    sync_sandbox.commands.close_stdin(handle.pid)
    assert handle.wait().stdout == "hello\nbytes\neof\n"


def test_stream_input_is_ordered(sync_sandbox: Sandbox) -> None:
    handle = sync_sandbox.commands.run("cat", background=True, stdin=True)
    sync_sandbox.commands.stream_input(handle.pid, (f"{i}\n" for i in range(50)))
    sync_sandbox.commands.close_stdin(handle.pid)
    assert handle.wait().stdout == "".join(f"{i}\n" for i in range(50))


def test_stdin_false_means_eof_at_once(sync_sandbox: Sandbox) -> None:
    assert sync_sandbox.commands.run("cat; echo done").stdout == "done\n"


def test_send_stdin_without_stdin_fails(sync_sandbox: Sandbox) -> None:
    handle = sync_sandbox.commands.run("sleep 30", background=True)
    try:
        with pytest.raises(Exception, match="stdin"):
            sync_sandbox.commands.send_stdin(handle.pid, "x")
    finally:
        handle.kill()


def test_disconnect_keeps_the_process_and_connect_reattaches(sync_sandbox: Sandbox) -> None:
    handle = sync_sandbox.commands.run("read x; echo got $x", background=True, stdin=True)
    handle.disconnect()
    again = sync_sandbox.commands.connect(handle.pid)
    assert handle.pid in [p.pid for p in sync_sandbox.commands.list()]
    sync_sandbox.commands.send_stdin(handle.pid, "v\n")
    assert again.wait().stdout == "got v\n"


def test_several_clients_see_the_same_output(sync_sandbox: Sandbox) -> None:
    first = sync_sandbox.commands.run("cat", background=True, stdin=True)
    second = sync_sandbox.commands.connect(first.pid)
    third = sync_sandbox.commands.connect(first.pid)
    sync_sandbox.commands.send_stdin(first.pid, "shared\n")
    sync_sandbox.commands.close_stdin(first.pid)
    assert [h.wait().stdout for h in (first, second, third)] == ["shared\n"] * 3


def test_connect_after_exit_still_gets_end(sync_sandbox: Sandbox) -> None:
    handle = sync_sandbox.commands.run("exit 7", background=True)
    with pytest.raises(CommandExitException):
        handle.wait()
    late = sync_sandbox.commands.connect(handle.pid)
    with pytest.raises(CommandExitException) as caught:
        late.wait()
    assert caught.value.exit_code == 7


def test_connect_to_unknown_pid_is_not_found(sync_sandbox: Sandbox) -> None:
    with pytest.raises(Exception, match="not found"):
        sync_sandbox.commands.connect(2**31 - 1)


def test_large_output_arrives_whole(sync_sandbox: Sandbox) -> None:
    # More than a subscriber's queue bound: exercises backpressure, not just buffering.
    result = sync_sandbox.commands.run("head -c 12000000 /dev/zero | tr '\\0' a")
    assert len(result.stdout) == 12_000_000


def test_run_as_other_users(sync_sandbox: Sandbox) -> None:
    assert sync_sandbox.commands.run("id -un", user="root").stdout == "root\n"
    nobody = sync_sandbox.commands.run("id -u; echo $HOME", user="nobody", cwd="/tmp")
    assert nobody.stdout.split("\n")[0] == "65534"
    with pytest.raises(AuthenticationException, match="no account"):
        sync_sandbox.commands.run("true", user="no-such-user-x")


def test_sandbox_env_vars_from_flags_and_init(
    start_picod: Callable[..., PicodProcess],
    sdk_sandbox: Callable[..., Sandbox],
    http: httpx.Client,
) -> None:
    picod = start_picod(no_auth=True, env=["A=1", "B=from flag"])
    init = http.post(f"{picod.url}/init", json={"envVars": {"B": "from init", "C": "3"}})
    assert init.status_code == 204
    sandbox = sdk_sandbox(picod.url, {})
    result = sandbox.commands.run('echo "$A|$B|$C"', envs={"C": "request"})
    assert result.stdout == "1|from init|request\n"
