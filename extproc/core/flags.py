"""Command-line flags whose defaults come from `<PREFIX><NAME>` environment variables.

Standard library only: picod and the interpreter import this at start-up.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from extproc.core.addresses import HostPort
from extproc.core.api_keys import validate_namespace
from extproc.core.errors import InvalidArgument

# No run-time `typing` import (~3 ms) before picod's own imports need it; type checkers
# take this name as True.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, overload

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class EnvDefaults:
    """Reads flag defaults from the environment variables `prefix + NAME`."""

    prefix: str

    def var(self, name: str) -> str:
        return self.prefix + name

    if TYPE_CHECKING:

        @overload
        def text(self, name: str) -> str | None: ...
        @overload
        def text(self, name: str, default: str) -> str: ...
        @overload
        def text(self, name: str, default: object) -> object: ...

    def text(self, name: str, default: object = None) -> object:
        """The variable as set (even empty), else `default`."""
        return os.environ.get(self.var(name), default)

    def flag(self, name: str) -> bool:
        """True when the variable is one of TRUE_WORDS (any case); anything else is false."""
        return (self.text(name) or "").lower() in TRUE_WORDS

    def boolean(self, name: str, default: bool) -> bool:
        """The variable as one of TRUE_WORDS or FALSE_WORDS (any case), else `default`;
        ValueError naming the variable for anything else."""
        raw = self.text(name)
        if raw is None:
            return default
        if raw.lower() in TRUE_WORDS:
            return True
        if raw.lower() in FALSE_WORDS:
            return False
        words = "/".join(sorted(TRUE_WORDS | FALSE_WORDS))
        raise ValueError(f"{self.var(name)}: expected one of {words}, got {raw!r}")

    def switch(
        self, parser: argparse.ArgumentParser, flag: str, default: bool, help_text: str
    ) -> None:
        """`--flag` / `--no-flag`, defaulting to the variable named after the flag
        (`--fast-path` -> `<prefix>FAST_PATH`, see `boolean`)."""
        name = flag.removeprefix("--").replace("-", "_").upper()
        parser.add_argument(
            flag,
            action=argparse.BooleanOptionalAction,
            default=self.boolean(name, default),
            help=f"{help_text} (env {self.var(name)}; default %(default)s)",
        )

    def integer(self, name: str, default: int) -> int:
        return int(self._parse(name, default, int, "an integer"))

    def number(self, name: str, default: float) -> float:
        return float(self._parse(name, default, float, "a number"))

    def _parse(
        self, name: str, default: float, kind: type[int] | type[float], expected: str
    ) -> float:
        raw = self.text(name)
        if raw is None:
            return kind(default)
        try:
            return kind(raw)
        except ValueError:
            raise ValueError(f"{self.var(name)}: expected {expected}, got {raw!r}") from None

    def add(
        self,
        parser: argparse.ArgumentParser,
        flag: str,
        default: str,
        help_text: str,
        **kwargs: Any,
    ) -> None:
        """`parser.add_argument(flag)` defaulting to the variable named after the flag
        (`--edge-listen` -> `<prefix>EDGE_LISTEN`); its help is `help_text` followed by
        "(env VAR; default D)"."""
        name = flag.removeprefix("--").replace("-", "_").upper()
        parser.add_argument(
            flag,
            default=self.text(name, default),
            help=f"{help_text} (env {self.var(name)}; default %(default)s)",
            **kwargs,
        )


# The exit code of a command-line mistake, as argparse's own `parser.error`.
USAGE_EXIT = 2


def usage_error(command: str, message: object) -> int:
    """Say a command-line mistake found after parsing (a flag's value, a settings file) as
    every `agentcube-e2b` command does: `agentcube-e2b <command>: <message>`, one line on
    stderr. Returns the exit code for it, USAGE_EXIT, for the command's `run` to return."""
    print(f"agentcube-e2b {command}: {message}", file=sys.stderr)
    return USAGE_EXIT


def number_arg(args: argparse.Namespace, dest: str, low: float) -> float:
    """`args.<dest>` as a float of at least `low`, else ValueError naming the flag."""
    return _at_least(args, dest, low, float)


def integer_arg(args: argparse.Namespace, dest: str, low: int) -> int:
    """`args.<dest>` as an int of at least `low`, else ValueError naming the flag."""
    return int(_at_least(args, dest, low, int))


def _at_least(
    args: argparse.Namespace, dest: str, low: float, kind: type[int] | type[float]
) -> float:
    raw = getattr(args, dest)
    flag = "--" + dest.replace("_", "-")
    try:
        value = kind(raw)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{flag}: expected a number, got {raw!r}") from error
    if value < low:
        raise ValueError(f"{flag}: expected >= {low}, got {value}")
    return value


def listen_address(text: str) -> tuple[str, int]:
    """`--listen HOST:PORT` as (host, port); an empty host means all interfaces."""
    try:
        address = HostPort.parse(text, empty_host=True)
    except ValueError as error:
        raise ValueError(f"--listen: {error}") from None
    return address.host or "0.0.0.0", address.port


UNIX_PREFIX = "unix:"
# sun_path holds 108 bytes, the last one a NUL
MAX_UNIX_PATH_BYTES = 107


def unix_socket_path(text: str) -> Path | None:
    """The path of a `unix:/ABS/PATH` address; None when `text` does not start `unix:`.

    Raises ValueError when the path is relative or longer than a socket address holds.
    """
    if not text.startswith(UNIX_PREFIX):
        return None
    path = Path(text.removeprefix(UNIX_PREFIX))
    if not path.is_absolute():
        raise ValueError(f"expected unix:/ABSOLUTE/PATH, got {text!r}")
    size = len(os.fsencode(path))
    if size > MAX_UNIX_PATH_BYTES:
        raise ValueError(
            f"socket path {path} is {size} bytes, more than a unix socket address holds "
            f"({MAX_UNIX_PATH_BYTES}); choose a shorter directory"
        )
    return path


def grpc_address(text: str, flag: str, *, optional: bool = False) -> str:
    """A gRPC listen or dial address as grpc takes it: `unix:/ABS/PATH` or `HOST:PORT`
    (port 0 lets a server pick one). `optional` accepts '' (off). ValueError names `flag`."""
    if optional and not text:
        return text
    try:
        if unix_socket_path(text) is not None:
            return text
    except ValueError as error:
        raise ValueError(f"{flag}: {error}") from None
    try:
        HostPort.parse(text, port_zero=True)
    except ValueError as error:
        raise ValueError(f"{flag}: expected unix:/PATH or HOST:PORT ({error})") from None
    return text


def namespace_arg(args: argparse.Namespace, dest: str) -> str:
    """A Kubernetes namespace flag, checked as the API server checks one."""
    try:
        return validate_namespace(str(getattr(args, dest)))
    except InvalidArgument as error:
        raise ValueError(f"--{dest.replace('_', '-')}: {error.message}") from error


def secret_name_arg(args: argparse.Namespace, dest: str, *, optional: bool = False) -> str:
    """A Secret's name flag (a DNS subdomain); '' only when `optional`."""
    name = str(getattr(args, dest))
    if optional and not name:
        return name
    if len(name) > 253 or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name):
        raise ValueError(f"--{dest.replace('_', '-')}: expected a Secret name, got {name!r}")
    return name
