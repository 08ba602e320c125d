"""Each SDK release of the matrix runs its scenario through `up`, from its own environment.

The scenario prints one JSON line; a failure names the release (the test id) and the step that
broke. The tests without a gateway keep the matrix honest: the latest releases are the suite's
pins, and every lock pins its release with hashes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from sdk_matrix.installing import (
    STAMP_NAME,
    Environment,
    InstallError,
    install,
    is_current,
    lock_digest,
)
from sdk_matrix.releases import RELEASES, REPO_ROOT, SdkRelease, by_name
from support.gateway import Gateway

SCENARIO_TIMEOUT_S = 150

# What every release's scenario must report, by package (Python and JS `e2b` alike).
EXPECTED_STEPS: dict[str, dict[str, Any]] = {
    "e2b": {
        "create": {"running": True},
        "commands.run": {"stdout": "matrix\n/home/user\n", "exit_code": 0},
        "files": {"read": "hello matrix", "listed": ["hello.txt"]},
        "pty": {"output": True, "killed": True, "ended_nonzero": True, "listed_after_kill": False},
        "list": {"ids": ["<this sandbox>"]},
        "kill": {"killed": True, "running_after": False, "kill_again": False},
    },
    "e2b-code-interpreter": {
        "create": {"running": True},
        "run_code": {
            "stdout": ["interpreter 42\n"],
            "stderr": [],
            "results": ["42"],
            "error": None,
        },
        "kill": {"killed": True, "running_after": False},
    },
}


def scenario_report(release: SdkRelease, result: subprocess.CompletedProcess[str]) -> Any:
    """The JSON line the scenario printed last; a failure that shows its output otherwise."""
    lines = result.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        pytest.fail(
            f"{release.name}: the scenario exited {result.returncode} without its report\n"
            f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-4000:]}"
        )


@pytest.mark.slow
@pytest.mark.timeout(SCENARIO_TIMEOUT_S + 60)
@pytest.mark.parametrize("release", RELEASES, ids=lambda release: release.name)
def test_release_runs_the_scenario_through_up(
    release: SdkRelease, gateway: Gateway, environments: dict[str, Environment]
) -> None:
    environment = environments[release.name]
    result = subprocess.run(
        environment.scenario_argv(),
        env=environment.scenario_env(os.environ, gateway.env),
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT_S,
        check=False,
    )
    report = scenario_report(release, result)
    failed = report["failed"]
    assert failed is None, (
        f"{release.name} broke at step {failed['step']!r}: {failed['error']}\n"
        f"steps before it: {report['steps']}\nstderr: {result.stderr[-4000:]}"
    )
    # The environment really holds the release (not, say, the suite's own SDK).
    assert report["versions"][release.package] == release.version
    assert report["steps"] == EXPECTED_STEPS[release.package], release.name
    assert result.returncode == 0, result.stderr[-4000:]


def _pinned_python_versions() -> dict[str, str]:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    groups = pyproject["project"]["optional-dependencies"].values()
    return dict(pin.split("==", 1) for pins in groups for pin in pins if pin.startswith("e2b"))


def test_the_latest_releases_are_the_suites_pins() -> None:
    latest = {(r.language, r.package): r.version for r in RELEASES if r.role == "latest"}
    js_pins = json.loads((REPO_ROOT / "tests" / "js" / "package.json").read_text())["dependencies"]
    python_pins = _pinned_python_versions()
    assert latest == {
        ("python", "e2b"): python_pins["e2b"],
        ("python", "e2b-code-interpreter"): python_pins["e2b-code-interpreter"],
        ("js", "e2b"): js_pins["e2b"],
    }


def test_every_sdk_has_an_oldest_and_a_latest_release() -> None:
    roles: dict[tuple[str, str], set[str]] = {}
    for release in RELEASES:
        roles.setdefault((release.language, release.package), set()).add(release.role)
    assert roles == {
        ("python", "e2b"): {"oldest", "middle", "latest"},
        ("python", "e2b-code-interpreter"): {"oldest", "latest"},
        ("js", "e2b"): {"oldest", "latest"},
    }
    assert len({release.name for release in RELEASES}) == len(RELEASES)


_PIN = re.compile(r"^([A-Za-z0-9._-]+)==(\S+) \\$")


@pytest.mark.parametrize(
    "release", [r for r in RELEASES if r.language == "python"], ids=lambda r: r.name
)
def test_a_python_lock_pins_every_requirement_with_hashes(release: SdkRelease) -> None:
    (lock,) = release.lock_files
    lines = lock.read_text().splitlines()
    pins = {m[1].lower(): m[2] for m in map(_PIN.match, lines) if m}
    for requirement in release.requirements:
        name, version = requirement.split("==")
        assert pins.get(name) == version, f"{lock.name} does not pin {requirement}"
    # Each pin is followed by its hashes (pip then refuses anything unhashed or different).
    for index, line in enumerate(lines):
        if _PIN.match(line):
            assert lines[index + 1].strip().startswith("--hash=sha256:"), line
    assert not any(line.startswith(("-e ", "--index-url", "--extra-index-url")) for line in lines)


@pytest.mark.parametrize(
    "release", [r for r in RELEASES if r.language == "js"], ids=lambda r: r.name
)
def test_a_js_lock_pins_the_release(release: SdkRelease) -> None:
    package_json, package_lock = (json.loads(path.read_text()) for path in release.lock_files)
    assert package_json["dependencies"] == {release.package: release.version}
    packages = package_lock["packages"]
    assert packages[""]["dependencies"] == {release.package: release.version}
    assert packages[f"node_modules/{release.package}"]["version"] == release.version
    assert all("integrity" in entry for key, entry in packages.items() if key)


def test_an_environment_is_rebuilt_only_when_its_lock_digest_changes(tmp_path: Path) -> None:
    first, second = RELEASES[0], RELEASES[1]
    digest = lock_digest(first)
    assert digest == lock_digest(first)
    assert digest != lock_digest(second)
    assert not is_current(tmp_path, digest)
    (tmp_path / STAMP_NAME).write_text(digest + "\n")
    assert is_current(tmp_path, digest)
    assert not is_current(tmp_path, lock_digest(second))


def test_an_install_without_its_lock_fails_naming_the_release(tmp_path: Path) -> None:
    unlocked = SdkRelease("python", "e2b", "0.0.1", "oldest")
    with pytest.raises(InstallError, match=r"python-e2b-0\.0\.1: missing lock files"):
        install(unlocked, tmp_path)
    assert not (tmp_path / unlocked.name).exists()


def test_releases_are_chosen_by_exact_name() -> None:
    assert by_name([]) == RELEASES
    (oldest_js,) = by_name(["js-e2b-2.14.1"])
    assert (oldest_js.language, oldest_js.package, oldest_js.version) == ("js", "e2b", "2.14.1")
    with pytest.raises(ValueError, match=r"python-e2b-9\.9\.9"):
        by_name(["python-e2b-9.9.9"])
