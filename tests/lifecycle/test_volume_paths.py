"""Mount paths and content paths, checked before anything touches a file (no sandboxes)."""

from __future__ import annotations

import pytest

from extproc.core.errors import InvalidArgument
from extproc.core.volumes import check_volume_token, volume_token
from extproc.lifecycle.sandboxes import VolumeMount
from extproc.lifecycle.volume_paths import checked_mounts, content_path, mount_path


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ("/data", "/data"),
        ("/home/user/work/", "/home/user/work"),
        ("//mnt//./a", "/mnt/a"),
        ("/optional", "/optional"),  # a sibling of /opt, not inside it
        ("/run/x", "/run/x"),
    ],
)
def test_mount_paths_are_normalised(raw: str, path: str) -> None:
    assert mount_path(raw) == path


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("data", "absolute"),
        ("", "absolute"),
        ("/", "at /"),
        ("/./", "at /"),
        ("/a/../b", "'..'"),
        ("/proc", "/proc"),
        ("/sys/kernel", "/sys"),
        ("/dev/shm", "/dev"),
        ("/opt", "/opt/agentcube"),
        ("/opt/agentcube", "/opt/agentcube"),
        ("/opt/agentcube/site-packages", "/opt/agentcube"),
        ("/a\x00b", "NUL"),
        ("/" + "a" * 256, "longer than 255"),
        ("/a" * 2049, "longer than 4096"),
    ],
)
def test_bad_mount_paths(raw: str, why: str) -> None:
    with pytest.raises(InvalidArgument, match=why):
        mount_path(raw)


@pytest.mark.parametrize(
    ("mounts", "why"),
    [
        ([("a", "/x"), ("b", "/x/")], "two volumes are mounted at '/x'"),
        ([("a", "/x"), ("b", "/x/y")], "nested"),
        ([("a", "/x/y"), ("b", "/x")], "nested"),
        ([("a b", "/x")], "invalid volume name"),
        ([("a", f"/m{i}") for i in range(17)], "at most 16"),
    ],
)
def test_bad_mount_sets(mounts: list[tuple[str, str]], why: str) -> None:
    with pytest.raises(InvalidArgument, match=why):
        checked_mounts([VolumeMount(name, path) for name, path in mounts])


def test_one_volume_may_be_mounted_twice_and_siblings_may_share_a_prefix() -> None:
    asked = [VolumeMount("a", "/x"), VolumeMount("a", "/xy/"), VolumeMount("b", "/y")]
    assert [m.path for m in checked_mounts(asked)] == ["/x", "/xy", "/y"]


@pytest.mark.parametrize(
    ("raw", "parts"),
    [("/", ()), ("a", ("a",)), ("/a//b/./c/", ("a", "b", "c")), ("./a", ("a",))],
)
def test_content_paths_are_relative_to_the_volume_root(raw: str, parts: tuple[str, ...]) -> None:
    assert content_path(raw) == parts


@pytest.mark.parametrize("raw", ["", "..", "/a/../../etc", "a/..", "\x00"])
def test_content_paths_never_leave_the_volume(raw: str) -> None:
    with pytest.raises(InvalidArgument):
        content_path(raw)


def test_volume_tokens_are_per_volume_and_never_an_envd_token() -> None:
    seed = b"s" * 32
    token = volume_token(seed, "a" * 20)
    assert token.startswith("vol_") and len(token) == 68
    assert check_volume_token(seed, "a" * 20, token)
    assert not check_volume_token(seed, "b" * 20, token)
    assert not check_volume_token(b"t" * 32, "a" * 20, token)
    from extproc.core.tokens import access_token

    assert access_token(seed, "a" * 20) not in token
