"""Which sandbox this interpreter serves, when it was started without knowing.

In an AgentCube warm-pool pod the interpreter starts, next to picod, before any E2B sandbox
exists: it has the gateway's JWT key but no sandbox id and no access token. Accepting any
gateway JWT then would let a JWT for another sandbox (or traffic for a sandbox whose pod IP
this pod now has) run code here, so until it is bound the interpreter refuses everything but
`/health` (auth.py). picod is bound by the lifecycle's `POST /init` and writes the binding
to its state directory (picod/binding.py); this interpreter reads that file
(core/binding_file.py, `--binding-file`).

The file is looked at when a request arrives, not watched: nothing needs the binding
between requests. While unbound, every request (each one a refusal otherwise) stats the
file, and reads it only when the stat shows another file than the last one read: a stat
costs a microsecond, and so the first request after the bind already sees it, however much
stale traffic came just before. Once the file names a sandbox, that id is final (picod never
rebinds); if it came without an access token, the file is looked at again at most every
LOOK_INTERVAL_S for one, since picod adopts a token that a later `/init` sets. A file that
is malformed, or contradicts what is known, changes nothing and is logged once per version.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from extproc.core import binding_file
from extproc.core.logs import set_process_field

log = logging.getLogger(__name__)

# Bound without a token: how often, at most, a request looks for one (seconds).
LOOK_INTERVAL_S = 0.1


class BindingWatch:
    """The binding read from `path` (None: there is no file to read, never bound).

    `access_token` is the interpreter's own (from its settings), if any: a file naming
    another one is refused.
    """

    def __init__(
        self,
        path: Path | None,
        access_token: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._clock = clock
        self._sandbox_id: str | None = None
        self._token: bytes | None = access_token.encode() if access_token else None
        self._seen: tuple[int, ...] | None = None
        self._next_look = 0.0

    @property
    def sandbox_id(self) -> str | None:
        """The sandbox served; None while unbound."""
        return self._sandbox_id

    @property
    def access_token(self) -> bytes | None:
        """The X-Access-Token a request must carry on a secure sandbox; None: not secure."""
        return self._token

    def refresh(self) -> None:
        """Learn the binding from the file if it is there and new (see the module doc)."""
        if self._path is None or (self._sandbox_id is not None and self._token is not None):
            return
        if self._sandbox_id is not None:
            now = self._clock()
            if now < self._next_look:
                return
            self._next_look = now + LOOK_INTERVAL_S
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            return
        except OSError as e:
            self._refuse(None, f"cannot stat {self._path}: {e.strerror}")
            return
        version = (stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size)
        if version == self._seen:
            return
        self._seen = version
        try:
            found = binding_file.read(self._path)
        except ValueError as e:
            self._refuse(version, str(e))
            return
        if found is None or found.sandbox_id is None:
            return  # picod is not bound yet (or has only a token): keep refusing
        if self._sandbox_id is not None and found.sandbox_id != self._sandbox_id:
            self._refuse(version, f"{self._path} now binds another sandbox")
            return
        token = found.access_token.encode() if found.access_token else None
        if self._token is not None and token not in (None, self._token):
            self._refuse(version, f"{self._path} holds another access token than this one")
            return
        newly_bound = self._sandbox_id is None
        if newly_bound:
            self._next_look = self._clock() + LOOK_INTERVAL_S
        self._sandbox_id = found.sandbox_id
        set_process_field("sandbox_id", found.sandbox_id)
        if self._token is None and token is not None:
            self._token = token
            if not newly_bound:
                log.info("access token set from %s", self._path)
        if newly_bound:
            with_token = "with" if self._token is not None else "without"
            log.info(
                "bound to sandbox %s from %s, %s an access token",
                self._sandbox_id,
                self._path,
                with_token,
            )

    def _refuse(self, version: tuple[int, ...] | None, reason: str) -> None:
        """Log why the file is not used, once for each version of it."""
        if version is None:
            if self._seen == ():
                return
            self._seen = ()  # an unstattable file: logged once until it changes
        log.warning("binding file not used: %s", reason)
