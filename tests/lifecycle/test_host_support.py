"""What the isolation needs from the host: binaries looked up on PATH, each missing one
named with its Debian package, and one `apt-get` line for exactly those packages."""

from __future__ import annotations

from pathlib import Path

import pytest

from extproc.lifecycle.host_support import BINARIES, apt_install_line, missing_for_isolation

REPO = Path(__file__).resolve().parents[2]
TOOLS = [binary for binary, _, _ in BINARIES]


def _path_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **scripts: str) -> None:
    """PATH = one directory holding a stand-in executable per name (printing its text)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, output in scripts.items():
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\necho '{output}'\n")
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


def _packaged(missing: list[str]) -> list[str]:
    return [sentence for sentence in missing if "Debian package" in sentence]


def test_a_path_without_nft_names_nftables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _path_with(tmp_path, monkeypatch, **{name: "" for name in TOOLS if name != "nft"})
    missing = missing_for_isolation()
    assert len(_packaged(missing)) == 1, missing
    assert "`nft`" in _packaged(missing)[0] and "nftables" in _packaged(missing)[0]
    assert apt_install_line(missing) == "apt-get install -y nftables"


def test_an_empty_path_lists_every_package_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _path_with(tmp_path, monkeypatch)
    missing = missing_for_isolation()
    assert len(_packaged(missing)) == len(TOOLS)
    assert apt_install_line(missing) == (
        "apt-get install -y mmdebstrap nftables iproute2 util-linux mount e2fsprogs"
    )


def test_bubblewrap_is_not_needed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # It sets no_new_privs, under which sudo cannot run: the isolation does without it.
    _path_with(tmp_path, monkeypatch, **{name: "" for name in TOOLS})
    assert _packaged(missing_for_isolation()) == []


def test_apt_line_ignores_what_no_package_fixes() -> None:
    assert apt_install_line([]) == ""
    assert apt_install_line(["the gateway is not running as root: ..."]) == ""


def test_every_package_named_is_in_the_one_install_list() -> None:
    text = (REPO / "packaging" / "debian-packages.txt").read_text()
    listed = {line.split("#")[0].strip() for line in text.splitlines()} - {""}
    assert {package for _, package, _ in BINARIES} <= listed
