"""Kernel-side code that sets env vars, for one execution or for the kernel's lifetime.

E2B applies `run_code(envs=...)` to that execution only. A kernel is one long-lived process,
so the values are set in its `os.environ` right before the user's code and the previous
values put back right after (child processes started by the code inherit them). The
helper names are unusual so they do not clobber the user's variables, and the values are
embedded with `repr`, which quotes any string safely.
"""

from __future__ import annotations

from extproc.core.errors import InvalidArgument

# Languages whose kernels we know how to give env vars.
SUPPORTED = frozenset({"python"})
_SAVED = "_agentcube_e2b_saved_env"


def _check(language: str) -> None:
    if language not in SUPPORTED:
        raise InvalidArgument(
            f"env_vars are not supported for {language!r} (supported: {', '.join(SUPPORTED)})"
        )


def set_for_kernel(language: str, env: dict[str, str]) -> str:
    """Code that sets the sandbox's env vars for the rest of the kernel's life."""
    _check(language)
    return f"import os as _agentcube_os; _agentcube_os.environ.update({env!r}); del _agentcube_os"


def set_for_execution(language: str, env: dict[str, str]) -> str:
    """Code that saves the current values of `env`'s names, then sets them."""
    _check(language)
    return (
        "import os as _agentcube_os\n"
        f"{_SAVED} = {{k: _agentcube_os.environ.get(k) for k in {sorted(env)!r}}}\n"
        f"_agentcube_os.environ.update({env!r})\n"
        "del _agentcube_os\n"
    )


def restore(language: str) -> str:
    """Code that puts back what `set_for_execution` saved."""
    _check(language)
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
