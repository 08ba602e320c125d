"""The Binding object in process: what a bind changes, persists and refuses; and the
binding file's format (core/binding_file.py), which the code interpreter reads too."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from extproc.core import binding_file, errors
from extproc.core.binding_file import FILE_NAME as STATE_FILE
from extproc.core.binding_file import SandboxBinding
from extproc.core.ids import new_sandbox_id
from extproc.picod.binding import Binding


def test_bind_once_then_only_repeat(tmp_path: Path) -> None:
    binding = Binding.load(None, None, tmp_path)
    a = new_sandbox_id()
    assert binding.bind(a, "tok") is True
    saved = tmp_path / STATE_FILE
    inode = saved.stat().st_ino
    assert binding.bind(a, "tok") is False  # a repeat writes nothing
    assert binding.bind(None, None) is False
    assert saved.stat().st_ino == inode
    with pytest.raises(errors.Unauthenticated):
        binding.bind(new_sandbox_id(), "tok")
    with pytest.raises(errors.Conflict):
        binding.bind(a, "other")
    assert (binding.sandbox_id, binding.access_token) == (a, "tok")
    assert binding.token_matches(b"tok") and not binding.token_matches(b"other")


@pytest.mark.parametrize(
    ("sandbox_id", "token"),
    [("UPPER" + "x" * 15, None), ("short", None), (None, ""), (None, "a b"), (None, "x" * 1025)],
)
def test_malformed_values_change_nothing(sandbox_id: str | None, token: str | None) -> None:
    binding = Binding()
    with pytest.raises(errors.InvalidArgument):
        binding.bind(sandbox_id, token)
    assert (binding.sandbox_id, binding.access_token) == (None, None)


def test_a_failed_write_changes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    binding = Binding.load(None, None, state)
    state.rmdir()
    state.write_text("")
    with pytest.raises(errors.Unavailable):
        binding.bind(new_sandbox_id(), "tok")
    assert (binding.sandbox_id, binding.access_token) == (None, None)
    assert not binding.token_matches(b"tok")


def test_a_token_added_to_a_flag_bound_picod_is_restored(tmp_path: Path) -> None:
    # An id from the flags is taken as given, even one shorter than generated ids.
    binding = Binding.load("flagid", None, tmp_path)
    assert binding.bind(None, "tok") is True
    assert json.loads((tmp_path / STATE_FILE).read_text()) == {
        "sandboxId": "flagid",
        "accessToken": "tok",
    }
    again = Binding.load("flagid", None, tmp_path)
    assert (again.sandbox_id, again.access_token) == ("flagid", "tok")
    with pytest.raises(ValueError, match="another sandbox"):
        Binding.load("otherflagid", None, tmp_path)
    # A token-only binding (no id yet) persists and restores too.
    other = tmp_path / "other"
    assert Binding.load(None, None, other).bind(None, "t2") is True
    restored = Binding.load(None, None, other)
    assert (restored.sandbox_id, restored.access_token) == (None, "t2")


# --- the file format, shared with the interpreter ----------------------------------------


def test_the_file_round_trips_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / STATE_FILE
    assert binding_file.read(path) is None  # no file: not bound, not an error
    a = new_sandbox_id()
    binding_file.write(path, SandboxBinding(a, "tok"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"sandboxId": a, "accessToken": "tok"}
    assert binding_file.read(path) == SandboxBinding(a, "tok")
    binding_file.write(path, SandboxBinding(None, None))
    assert binding_file.read(path) == SandboxBinding(None, None)
    assert not list(path.parent.glob("*.partial"))
    assert "tok" not in repr(SandboxBinding(a, "tok"))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "expected a JSON object"),
        (b'"binding"', "expected a JSON object"),
        (json.dumps({"sandboxId": "BAD-ID"}).encode(), "sandboxId is not a sandbox id"),
        (json.dumps({"sandboxId": 7}).encode(), "sandboxId is not a sandbox id"),
        (json.dumps({"sandboxId": "short"}).encode(), "sandboxId is not a sandbox id"),
        (json.dumps({"accessToken": ""}).encode(), "accessToken is not a usable token"),
        (json.dumps({"accessToken": "a b"}).encode(), "accessToken is not a usable token"),
        (json.dumps({"accessToken": "x" * 1025}).encode(), "accessToken is not a usable token"),
        (json.dumps({"accessToken": ["t"]}).encode(), "accessToken is not a usable token"),
    ],
)
def test_a_malformed_file_is_named_in_the_error(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / STATE_FILE
    path.write_bytes(content)
    with pytest.raises(ValueError, match=expected) as caught:
        binding_file.read(path)
    assert str(path) in str(caught.value)


def test_an_id_from_the_flags_is_taken_as_given(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    binding_file.write(path, SandboxBinding("flagid", "tok"))
    with pytest.raises(ValueError, match="sandboxId is not a sandbox id"):
        binding_file.read(path)  # a reader without that flag (the interpreter)
    assert binding_file.read(path, "flagid") == SandboxBinding("flagid", "tok")
    with pytest.raises(ValueError, match="another sandbox"):
        binding_file.read(path, new_sandbox_id())


def test_an_unreadable_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    path.mkdir()
    with pytest.raises(ValueError, match="cannot read the binding state"):
        binding_file.read(path)
