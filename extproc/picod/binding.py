"""Which sandbox this picod serves, and its envd access token: set at start or by `/init`.

A picod started by the lifecycle service knows both from its flags. A picod in an
AgentCube warm-pool pod starts before any E2B sandbox exists, with only the gateway's JWT
key; when a claim hands the pod to a sandbox, the lifecycle service binds it through
envd's `POST /init`: the `session_id` of that request's JWT becomes the sandbox id, and the
body's `accessToken` the access token. Until then such a picod serves no one (see auth.py),
so a gateway JWT for some other sandbox never opens a pod before it is bound either.

Settings are frozen, so this one mutable object holds both values, and everything that
checks them (the auth middleware, the JWT's expected `session_id`, `/files` signatures)
reads them from here: a bind changes them all at once. `bind` never awaits, so on
picod's single event loop it is atomic: of two concurrent binds, one wins and the other
sees the bound state. A binding is never undone or replaced, only repeated (the
lifecycle service retries an `/init` whose answer it lost).

With a state directory, the binding is also written to `binding.json` there (0600; the
token itself, since signed `/files` URLs are verified with it) before it takes effect, so a
picod restarted inside the same pod comes back bound. It is read at start. The code
interpreter in the same pod learns its binding from that file too; its format is
core/binding_file.py's.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

from extproc.core import binding_file
from extproc.core.binding_file import MAX_TOKEN_CHARS, SandboxBinding
from extproc.core.errors import Conflict, InvalidArgument, Unauthenticated, Unavailable
from extproc.core.ids import check_sandbox_id
from extproc.core.logs import set_process_field

log = logging.getLogger(__name__)

STATE_FILE = binding_file.FILE_NAME


class Binding:
    def __init__(
        self,
        sandbox_id: str | None = None,
        access_token: str | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self._sandbox_id = sandbox_id
        self._access_token = access_token
        self._token_bytes = access_token.encode() if access_token else None
        self._state_file = state_dir / STATE_FILE if state_dir is not None else None

    @property
    def sandbox_id(self) -> str | None:
        """The sandbox this picod serves; None while unbound."""
        return self._sandbox_id

    @property
    def access_token(self) -> str | None:
        """envd's X-Access-Token; None: none is required."""
        return self._access_token

    def token_matches(self, presented: bytes) -> bool:
        """Whether `presented` is the access token (constant time); False when there is none."""
        return self._token_bytes is not None and hmac.compare_digest(presented, self._token_bytes)

    @classmethod
    def load(
        cls, sandbox_id: str | None, access_token: str | None, state_dir: Path | None
    ) -> Binding:
        """The binding from settings, completed by a persisted one.

        ValueError names the state file when it is unreadable, malformed, or names another
        sandbox or token than the settings do.
        """
        binding = cls(sandbox_id, access_token, state_dir)
        path = binding._state_file
        if path is None:
            return binding
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"cannot read the binding state {path}: {e}") from e
        stored = binding_file.read(path, sandbox_id)
        if stored is None:
            return binding
        stored_id, stored_token = stored.sandbox_id, stored.access_token
        if access_token is not None and stored_token not in (None, access_token):
            raise ValueError(f"{path} holds another access token than --access-token")
        binding._set(sandbox_id or stored_id, stored_token or access_token)
        if stored_id is not None:
            log.info("bound to sandbox %s (restored from %s)", stored_id, path)
        return binding

    def bind(self, sandbox_id: str | None, access_token: str | None) -> bool:
        """Bind to `sandbox_id` (when not None) and adopt `access_token` (when not None and
        no token is set yet); True when something changed.

        Raises Unauthenticated when bound to another sandbox, Conflict when another access
        token is already set, InvalidArgument for a malformed id or token, Unavailable when
        the binding cannot be persisted (then nothing changed). Nothing changes on error.
        """
        new_id = self._sandbox_id
        if sandbox_id is not None:
            check_sandbox_id(sandbox_id)
            if self._sandbox_id is None:
                new_id = sandbox_id
            elif sandbox_id != self._sandbox_id:
                raise Unauthenticated("unauthorized access: this sandbox is bound to another id")
        new_token = self._access_token
        if access_token is not None:
            _check_token(access_token)
            if self._token_bytes is None:
                new_token = access_token
            elif not hmac.compare_digest(access_token.encode(), self._token_bytes):
                raise Conflict("access token is already set and cannot be changed")
        if (new_id, new_token) == (self._sandbox_id, self._access_token):
            return False
        if self._state_file is not None:
            # Written synchronously on the event loop: a few bytes, once per sandbox, and
            # not awaiting is what keeps the whole bind atomic.
            try:
                binding_file.write(self._state_file, SandboxBinding(new_id, new_token))
            except OSError as e:
                raise Unavailable(f"cannot persist the binding: {e.strerror}") from e
        newly_bound = self._sandbox_id is None and new_id is not None
        self._set(new_id, new_token)
        if newly_bound:
            token = "with" if new_token else "without"
            log.info("bound to sandbox %s by /init, %s an access token", new_id, token)
        elif new_token is not None:
            log.info("access token set by /init")
        return True

    def _set(self, sandbox_id: str | None, access_token: str | None) -> None:
        self._sandbox_id = sandbox_id
        self._access_token = access_token
        self._token_bytes = access_token.encode() if access_token else None
        if sandbox_id is not None:
            set_process_field("sandbox_id", sandbox_id)


def _check_token(token: str) -> None:
    if not binding_file.is_access_token(token):
        raise InvalidArgument(
            f"accessToken must be 1 to {MAX_TOKEN_CHARS} visible ASCII characters"
        )
