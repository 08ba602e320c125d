"""Which kernel runs each language: E2B's language names -> Jupyter kernelspecs.

Python and Bash are built in, their kernel.json files written into the interpreter's private
runtime directory: Python runs `agentcube_e2b_kernel` (ipykernel plus E2B's `chart` and
`data` results, see kernel_side/), Bash runs bash_kernel, both on `kernel_python`. Their
path is `kernel_pythonpath` (default: this server's PYTHONPATH), with kernel_side/ in front
for Python. In a sandbox with the data stack that path is empty: the kernels' packages are
the image's own plus the stack (data_stack.py), not the gateway's venv.

A built-in language is offered only if its module imports there, which one probe process
checks at start-up (~20 ms): asking for bash where bash_kernel is missing is a 400 naming
the language, never a kernel that dies while starting. Other languages come from the
kernelspecs installed on the machine (IRkernel, ...) as jupyter_client finds them.

Language names are E2B's (python, javascript, typescript, r, java, bash) in any case, with
`js` and `ts` for JavaScript and TypeScript; none means Python.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_core.paths import jupyter_path

from extproc.core.errors import InvalidArgument
from extproc.interpreter.settings import InterpreterSettings

log = logging.getLogger(__name__)

DEFAULT_LANGUAGE = "python"
ALIASES = {"js": "javascript", "ts": "typescript"}
KERNEL_SIDE = Path(__file__).resolve().with_name("kernel_side")
PROBE_TIMEOUT_SECONDS = 20.0


@dataclass(frozen=True)
class BuiltIn:
    language: str
    spec_name: str
    # The module that must import for the kernel to start.
    module: str
    # argv after the kernel's Python; {connection_file} is jupyter_client's placeholder.
    arguments: tuple[str, ...]
    # Whether kernel_side/ goes on the kernel's path.
    kernel_side: bool


# IPython's SQLite history commits every cell, ~8 ms of a ~15 ms `1+1`; In/Out and
# execution counts are kept in memory without it.
_PYTHON_ARGUMENTS = ("-m", "agentcube_e2b_kernel", "-f", "{connection_file}",
                     "--HistoryManager.enabled=False")  # fmt: skip
BUILT_IN = (
    BuiltIn("python", "agentcube-e2b-python", "ipykernel", _PYTHON_ARGUMENTS, kernel_side=True),
    BuiltIn(
        "bash",
        "agentcube-e2b-bash",
        "bash_kernel",
        ("-m", "bash_kernel", "-f", "{connection_file}"),
        kernel_side=False,
    ),
)
PRELOAD_ARGUMENT = "--agentcube-preload"


def normalize(language: str | None) -> str:
    wanted = (language or DEFAULT_LANGUAGE).strip().lower() or DEFAULT_LANGUAGE
    return ALIASES.get(wanted, wanted)


class KernelSpecs:
    """The kernels of one interpreter: which languages it serves and how each starts."""

    def __init__(self, settings: InterpreterSettings, runtime_dir: Path) -> None:
        own = runtime_dir / "kernels"
        inherited = os.environ.get("PYTHONPATH", "")
        path = inherited if settings.kernel_pythonpath is None else settings.kernel_pythonpath
        self._environments: dict[str, dict[str, str]] = {}
        base = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCUBE_E2B_")}
        base.pop("PYTHONPATH", None)
        for kernel in BUILT_IN:
            entries = [str(KERNEL_SIDE)] if kernel.kernel_side else []
            entries += [entry for entry in path.split(os.pathsep) if entry]
            env = dict(base, PYTHONPATH=os.pathsep.join(entries)) if entries else dict(base)
            self._environments[kernel.spec_name] = env
            argv = [settings.kernel_python, *kernel.arguments]
            if kernel.language == "python" and settings.preload:
                argv.append(PRELOAD_ARGUMENT)
            _write_spec(own / kernel.spec_name, kernel.language, argv)
        self.manager = KernelSpecManager(
            kernel_dirs=[str(own), *jupyter_path("kernels")], ensure_native_kernel=False
        )
        importable = _probe(settings.kernel_python, self._environments[BUILT_IN[0].spec_name],
                            [k.module for k in BUILT_IN])  # fmt: skip
        self.languages: dict[str, str] = {
            k.language: k.spec_name for k in BUILT_IN if importable.get(k.module)
        }
        built_in = {k.spec_name for k in BUILT_IN}
        for name, found in sorted(self.manager.get_all_specs().items()):
            language = str(found.get("spec", {}).get("language", "")).lower()
            # Several specs for one language: ours, else the first by name.
            if name not in built_in and language and language not in self.languages:
                self.languages[language] = name
        log.info("kernels: %s", ", ".join(f"{k} ({v})" for k, v in sorted(self.languages.items())))

    def resolve(self, language: str | None) -> tuple[str, str]:
        """(language, kernelspec name) for a request's language, or InvalidArgument."""
        wanted = normalize(language)
        spec = self.languages.get(wanted)
        if spec is None:
            installed = ", ".join(sorted(self.languages)) or "none"
            raise InvalidArgument(
                f"language {language or wanted!r} is not supported here: no kernel for it is "
                f"installed (installed: {installed})"
            )
        return wanted, spec

    def environment(self, spec_name: str) -> dict[str, str]:
        """The environment a kernel of `spec_name` starts with: this server's, without its
        AGENTCUBE_E2B_* settings (credentials stay here), with the kernel's path."""
        found = self._environments.get(spec_name)
        if found is not None:
            return dict(found)
        return {k: v for k, v in os.environ.items() if not k.startswith("AGENTCUBE_E2B_")}


def _write_spec(directory: Path, language: str, argv: list[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    spec = {"argv": argv, "display_name": language, "language": language}
    (directory / "kernel.json").write_text(json.dumps(spec, indent=1))


def _probe(python: str, env: Mapping[str, str], modules: list[str]) -> dict[str, bool]:
    """Which of `modules` import under `python` with `env` (all False if it cannot run)."""
    code = (
        "import importlib.util as u, json, sys\n"
        "print(json.dumps({m: u.find_spec(m) is not None for m in sys.argv[1:]}))"
    )
    try:
        done = subprocess.run(
            [python, "-c", code, *modules], env=dict(env), capture_output=True, text=True,
            timeout=PROBE_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL, check=True,
        )  # fmt: skip
        found = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        log.error("kernel python %s cannot run: %s", python, e)
        return {}
    return {m: bool(found.get(m)) for m in modules}
