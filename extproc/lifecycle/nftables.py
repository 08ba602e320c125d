"""nftables rulesets applied in-process, through libnftables (what the `nft` command is
made of), in the calling thread's network namespace.

Why. Each sandbox start loads a DNAT rule into its own namespace, and an internet grant
changes the hub's set: as `nft -f -` that is 4-9 ms of CPU per call, as a library call
about half a millisecond. The library's context opens its netlink socket in the namespace
the calling thread is in, so callers step a thread into the namespace first (networking.py).
Where the library cannot be loaded (an `nft` built without it), `nft -f -` runs instead,
from the same thread: a child process starts in its parent thread's network namespace.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import threading

from extproc.core.errors import Unavailable

_OUTPUT_JSON = 1 << 4  # NFT_CTX_OUTPUT_JSON


class _Library:
    def __init__(self, lib: ctypes.CDLL) -> None:
        self.new = lib.nft_ctx_new
        self.new.restype = ctypes.c_void_p
        self.new.argtypes = [ctypes.c_uint32]
        self.free = lib.nft_ctx_free
        self.free.argtypes = [ctypes.c_void_p]
        self.run = lib.nft_run_cmd_from_buffer
        self.run.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.buffer_output = lib.nft_ctx_buffer_output
        self.buffer_output.argtypes = [ctypes.c_void_p]
        self.buffer_error = lib.nft_ctx_buffer_error
        self.buffer_error.argtypes = [ctypes.c_void_p]
        self.output = lib.nft_ctx_get_output_buffer
        self.output.argtypes = [ctypes.c_void_p]
        self.output.restype = ctypes.c_char_p
        self.error = lib.nft_ctx_get_error_buffer
        self.error.argtypes = [ctypes.c_void_p]
        self.error.restype = ctypes.c_char_p
        self.set_output_flags = lib.nft_ctx_output_set_flags
        self.set_output_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]


def _load() -> _Library | None:
    try:
        return _Library(ctypes.CDLL("libnftables.so.1"))
    except (OSError, AttributeError):
        return None


_library = _load()
# libnftables keeps some state global (its parser's); one call at a time.
_lock = threading.Lock()


def run(commands: str, what: str, as_json: bool = False) -> str:
    """Apply `commands` (nft syntax) in this thread's network namespace; the output.
    Unavailable, naming `what`, if nft refuses them."""
    if _library is None:
        return _run_command(commands, what, as_json)
    lib = _library
    with _lock:
        context = lib.new(0)
        if not context:
            raise Unavailable(f"{what}: libnftables could not make a context")
        try:
            lib.buffer_output(context)
            lib.buffer_error(context)
            if as_json:
                lib.set_output_flags(context, _OUTPUT_JSON)
            failed = lib.run(context, commands.encode())
            output = (lib.output(context) or b"").decode(errors="replace")
            error = (lib.error(context) or b"").decode(errors="replace").strip()
        finally:
            lib.free(context)
    if failed:
        raise Unavailable(f"{what}: nft: {error or 'refused'}")
    return output


def _run_command(commands: str, what: str, as_json: bool) -> str:
    argv = ["nft", *(["-j"] if as_json else []), "-f", "-"]
    done = subprocess.run(argv, input=commands.encode(), capture_output=True, check=False)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
        raise Unavailable(f"{what}: nft: {message}")
    return done.stdout.decode(errors="replace")


def set_elements(output: str) -> list[str]:
    """The elements of a set in `list set` JSON output (addresses; intervals skipped)."""
    try:
        document = json.loads(output or "{}")
    except ValueError:
        return []
    found = []
    for item in document.get("nftables", []):
        for element in item.get("set", {}).get("elem", []):
            if isinstance(element, str):
                found.append(element)
    return found
