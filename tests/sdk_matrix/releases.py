"""The SDK releases of the matrix and where each one's lock, scenario and environment live.

Why these releases (docs/compatibility.md, "SDK version matrix", says the same to users):
- The oldest of each SDK is the first release whose every call honours `E2B_SANDBOX_URL`,
  `up`'s plaintext, header-routed URL: Python `e2b` 2.7.0; `e2b-code-interpreter` 2.9.0 (its
  port 49999 calls); JS `e2b` 2.14.1 (2.7.0 to 2.14.0 send the routing headers on RPCs but not
  on `/health` and `/files`, which then reach the platform API and get 401). Older releases
  always dial `https://{port}-{id}.{domain}`: they need a gateway behind TLS with wildcard
  DNS, which `up` is not.
- The middle Python release, 2.50.0, is the last one that creates with `POST /sandboxes` and
  already speaks envd through `connectrpc` (0.11, not the suite's 0.12): 2.7.0 uses E2B's own
  Connect client, 2.63.0 creates with `POST /v2/sandboxes`.
- The oldest code interpreter is locked with the oldest `e2b` it accepts (2.26.0), as an
  install of its time would have been, which adds one more `e2b` release for free.
- The latest releases are the suite's pins (pyproject.toml `dev`, tests/js/package.json); a
  test fails when a pin moves without the matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
LOCKS_DIR = HERE / "locks"
JS_PACKAGES_DIR = HERE / "js"
SCENARIOS_DIR = HERE / "scenarios"
# Each release's venv or npm prefix, reused while its lock is unchanged (see installing.py).
CACHE_DIR = REPO_ROOT / ".cache" / "sdk-matrix"

Language = Literal["python", "js"]
Role = Literal["oldest", "middle", "latest"]

_SCENARIO_FILES: dict[tuple[Language, str], str] = {
    ("python", "e2b"): "e2b_sdk.py",
    ("python", "e2b-code-interpreter"): "code_interpreter.py",
    ("js", "e2b"): "e2b_sdk.cjs",
}


@dataclass(frozen=True)
class SdkRelease:
    """One SDK release of the matrix."""

    language: Language
    # The registry package: `e2b` or `e2b-code-interpreter` (PyPI), `e2b` (npm).
    package: str
    version: str
    role: Role
    # Python only: requirements compiled into the lock next to `package==version`.
    also_requires: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The test id, the lock's and the environment's name: `python-e2b-2.7.0`."""
        return f"{self.language}-{self.package}-{self.version}"

    @property
    def requirements(self) -> tuple[str, ...]:
        return (f"{self.package}=={self.version}", *self.also_requires)

    @property
    def scenario(self) -> Path:
        return SCENARIOS_DIR / _SCENARIO_FILES[(self.language, self.package)]

    @property
    def js_package_dir(self) -> Path:
        """JS only: the committed package.json and package-lock.json of this release."""
        return JS_PACKAGES_DIR / self.version

    @property
    def lock_files(self) -> tuple[Path, ...]:
        """The committed files an install reads, in the order their digest covers them."""
        if self.language == "python":
            return (LOCKS_DIR / f"{self.name}.txt",)
        return (self.js_package_dir / "package.json", self.js_package_dir / "package-lock.json")


RELEASES: tuple[SdkRelease, ...] = (
    SdkRelease("python", "e2b", "2.7.0", "oldest"),
    SdkRelease("python", "e2b", "2.50.0", "middle"),
    SdkRelease("python", "e2b", "2.63.0", "latest"),
    SdkRelease("python", "e2b-code-interpreter", "2.9.0", "oldest", also_requires=("e2b==2.26.0",)),
    SdkRelease("python", "e2b-code-interpreter", "2.11.5", "latest"),
    SdkRelease("js", "e2b", "2.14.1", "oldest"),
    SdkRelease("js", "e2b", "2.51.0", "latest"),
)


def by_name(names: list[str] | tuple[str, ...]) -> tuple[SdkRelease, ...]:
    """The releases named (all when `names` is empty); an unknown name is a ValueError."""
    if not names:
        return RELEASES
    known = {release.name: release for release in RELEASES}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown SDK release {unknown}; known: {sorted(known)}")
    return tuple(known[name] for name in names)
