"""The runtime state the picod services share.

Settings are frozen at start, but E2B's orchestrator changes some of them later through
`POST /init` (the sandbox's env vars, the default user and working directory), and a
warm-pool sandbox is started before it knows them. This object holds that mutable part; it
is created once per app and handed to every service and endpoint explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from extproc.picod.settings import PicodSettings


@dataclass
class Environment:
    # Env vars every new process gets, below the request's own (the sandbox's envVars).
    env_vars: dict[str, str] = field(default_factory=dict)
    # The user a request without a user choice runs as, and that user's home.
    default_user: str = "user"
    home: Path = Path("/home/user")
    # Working directory for processes started without `cwd`; None: the user's home.
    default_workdir: Path | None = None

    @classmethod
    def from_settings(cls, settings: PicodSettings) -> Environment:
        return cls(
            env_vars=dict(settings.env_vars),
            default_user=settings.default_user,
            home=settings.home,
        )

    def apply_init(
        self,
        env_vars: dict[str, str],
        default_user: str | None,
        default_workdir: str | None,
    ) -> None:
        """Merge what `POST /init` sent (envd merges env vars, it does not replace them)."""
        self.env_vars.update(env_vars)
        if default_user:
            self.default_user = default_user
        if default_workdir:
            self.default_workdir = Path(default_workdir)
