"""Kernel-side code that sets env vars, for one execution or for the kernel's lifetime.

E2B applies `run_code(envs=...)` to that execution only. A kernel is one long-lived process
(for Bash, the one bash that bash_kernel drives), so the values are set right before the
user's code and the previous values put back right after (child processes started by the
code inherit them). The helper names are unusual so they do not clobber the user's
variables. Python embeds the values with `repr`, Bash with `shlex.quote`: both quote any
string safely. Names and values are checked first: a NUL cannot be in an environment, and
Bash takes only identifiers as names.
"""

from __future__ import annotations

import re
import shlex

from extproc.core.errors import InvalidArgument

# Languages whose kernels we know how to give env vars.
SUPPORTED = frozenset({"python", "bash"})
_SAVED = "_agentcube_e2b_saved_env"
_BASH_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _problem(language: str, name: str, value: str) -> str:
    """Why `name=value` cannot be set in a `language` kernel ('' if it can)."""
    if not name or "=" in name or "\0" in name or "\0" in value:
        return "not a valid environment variable"
    if language == "bash" and not _BASH_NAME.fullmatch(name):
        return "Bash takes only identifiers as names"
    return ""


def check(language: str, env: dict[str, str]) -> None:
    """Raise InvalidArgument if `env` cannot be given to a `language` kernel."""
    if language not in SUPPORTED:
        raise InvalidArgument(
            f"env_vars are not supported for {language!r} "
            f"(supported: {', '.join(sorted(SUPPORTED))})"
        )
    for name, value in env.items():
        if problem := _problem(language, name, value):
            raise InvalidArgument(f"env var {name[:80]!r}: {problem}")


def set_for_kernel(language: str, env: dict[str, str]) -> str:
    """Code that sets the sandbox's env vars for the rest of the kernel's life; the ones
    this kernel cannot take (a Bash kernel and a name like `A-B`) are left out."""
    env = {name: value for name, value in env.items() if not _problem(language, name, value)}
    check(language, env)
    if language == "bash":
        return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())
    return f"import os as _agentcube_os; _agentcube_os.environ.update({env!r}); del _agentcube_os"


def set_for_execution(language: str, env: dict[str, str]) -> str:
    """Code that saves the current values of `env`'s names, then sets them."""
    check(language, env)
    if language == "bash":
        # The saved state is shell code that puts each name back as it was.
        names = " ".join(sorted(env))
        return (
            f"{_SAVED}=$(for _agentcube_n in {names}; do "
            'if [ -n "${!_agentcube_n+x}" ]; then '
            'printf "export %s=%q\\n" "$_agentcube_n" "${!_agentcube_n}"; '
            'else printf "unset %s\\n" "$_agentcube_n"; fi; done); '
            "unset _agentcube_n\n" + set_for_kernel(language, env)
        )
    return (
        "import os as _agentcube_os\n"
        f"{_SAVED} = {{k: _agentcube_os.environ.get(k) for k in {sorted(env)!r}}}\n"
        f"_agentcube_os.environ.update({env!r})\n"
        "del _agentcube_os\n"
    )


def restore(language: str) -> str:
    """Code that puts back what `set_for_execution` saved."""
    check(language, {})
    if language == "bash":
        return f'eval "${_SAVED}"; unset {_SAVED}\n'
    return (
        "import os as _agentcube_os\n"
        f"for _agentcube_k, _agentcube_v in {_SAVED}.items():\n"
        "    if _agentcube_v is None:\n"
        "        _agentcube_os.environ.pop(_agentcube_k, None)\n"
        "    else:\n"
        "        _agentcube_os.environ[_agentcube_k] = _agentcube_v\n"
        f"del _agentcube_os, {_SAVED}\n"
        "_agentcube_k = _agentcube_v = None\n"
        "del _agentcube_k, _agentcube_v\n"
    )
