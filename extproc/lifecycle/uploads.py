"""The files a template's COPY steps need: upload links, the server behind them, the store.

The SDK asks `GET /templates/{id}/files/{hash}` for a link, then PUTs a tar of the files to
it with a client of its own that sends no API key (E2B hands out an S3 presigned URL). So
the link carries its own credential: `/_agentcube/template-files/<tenant key>/<hash>?expires=
<unix s>&signature=<hex HMAC-SHA256 of tenant, hash and expiry>`, keyed with a key derived
from the lifecycle's token seed. Only the caller that asked for the link holds it; it is good
for one tenant's one hash for an hour. Envoy routes that path, body streamed, to this
module's HTTP server on a unix socket in the state directory (`uploads.sock`); the server
checks the signature and writes the body to `<state>/uploads/<tenant key>/<hash>.tar`.

Uploads are per tenant: a hash one tenant uploaded is never "present" for another, so no
tenant can learn of or poison another's files. The SDK's hash covers names, modes and
sizes, not the bytes of the archive, so an upload is trusted as its own tenant's word only.

The server is a minimal HTTP/1.1 reader (Envoy is its only client): one request per
connection, Content-Length or chunked bodies up to `MAX_UPLOAD_BYTES`, written to disk as
they arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import time
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qs, urlsplit

from extproc.core.errors import InvalidArgument
from extproc.core.template_files import PATH_PREFIX

log = logging.getLogger(__name__)

SOCKET_NAME = "uploads.sock"
LINK_TTL_S = 3600
MAX_UPLOAD_BYTES = 4 * 1024**3
_HASH = re.compile(r"[0-9a-f]{64}")
_KEY = re.compile(r"[0-9a-f]{32}")
_HEADER_LIMIT = 64 * 1024
_CHUNK = 1024 * 1024
# seconds a refused request's body is read and dropped before its connection closes
LINGER_S = 2.0


def tenant_key(tenant: str) -> str:
    """The tenant's directory name: fixed length, no characters of the tenant's own."""
    return hashlib.sha256(b"agentcube-template-files\0" + tenant.encode()).hexdigest()[:32]


def check_files_hash(files_hash: str) -> str:
    if not _HASH.fullmatch(files_hash):
        raise InvalidArgument("the files hash must be 64 hex characters (a sha256)")
    return files_hash


class UploadStore:
    """`<root>/<tenant key>/<hash>.tar`: the uploads, per tenant."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._key = b""

    def use_seed(self, seed: bytes) -> None:
        """Key the links with the lifecycle's token seed (read at start)."""
        self._key = hmac.new(seed, b"agentcube-template-file-links", hashlib.sha256).digest()

    def path(self, tenant: str, files_hash: str) -> Path:
        return self.root / tenant_key(tenant) / f"{check_files_hash(files_hash)}.tar"

    def present(self, tenant: str, files_hash: str) -> bool:
        return self.path(tenant, files_hash).is_file()

    def _signature(self, key: str, files_hash: str, expires: int) -> str:
        if not self._key:
            raise RuntimeError("the upload store has no key yet")
        message = f"{key}\0{files_hash}\0{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def link(self, tenant: str, files_hash: str, now: float) -> str:
        """The path and query of an upload link for `tenant`'s `files_hash`."""
        key = tenant_key(tenant)
        expires = int(now) + LINK_TTL_S
        signature = self._signature(key, check_files_hash(files_hash), expires)
        return f"{PATH_PREFIX}{key}/{files_hash}?expires={expires}&signature={signature}"

    def verify(self, target: str, now: float) -> Path:
        """Where a request for `target` (path and query) may write; PermissionError if its
        link is not one this store signed, or has expired; FileNotFoundError if malformed."""
        split = urlsplit(target)
        rest = split.path.removeprefix(PATH_PREFIX)
        key, _, files_hash = rest.partition("/")
        query = parse_qs(split.query)
        if not split.path.startswith(PATH_PREFIX) or not _KEY.fullmatch(key):
            raise FileNotFoundError(target)
        if not _HASH.fullmatch(files_hash):
            raise FileNotFoundError(target)
        expires_text = (query.get("expires") or [""])[-1]
        given = (query.get("signature") or [""])[-1]
        if not expires_text.isdigit():
            raise PermissionError("the upload link has no valid expiry")
        expected = self._signature(key, files_hash, int(expires_text))
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise PermissionError("the upload link's signature is not valid")
        if int(expires_text) < now:
            raise PermissionError("the upload link has expired; ask for a new one")
        return self.root / key / f"{files_hash}.tar"


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 411: "Length Required", 413: "Content Too Large",
            500: "Internal Server Error", 507: "Insufficient Storage"}  # fmt: skip


class UploadServer:
    """The HTTP server behind the links (see the module docstring)."""

    def __init__(self, store: UploadStore, socket_path: Path) -> None:
        self._store = store
        self._socket_path = socket_path
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[object]] = set()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._socket_path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self._socket_path))
        self._socket_path.chmod(0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._connections:  # let answered ones finish lingering rather than cut them off
            await asyncio.wait(self._connections, timeout=LINGER_S)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = asyncio.current_task()
        assert connection is not None
        self._connections.add(connection)
        try:
            status, message = 200, "uploaded"
            try:
                await self._upload(reader)
            except _Refused as refused:
                status, message = refused.status, refused.message
            except OSError as error:
                log.warning("template file upload failed: %s", error)
                status, message = 507, "the upload could not be stored"
            body = f'{{"code":{status},"message":"{message}"}}'.encode()
            head = (f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
                    "content-type: application/json\r\n"
                    f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")  # fmt: skip
            writer.write(head.encode() + body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            await _close_lingering(reader, writer)
            self._connections.discard(connection)

    async def _upload(self, reader: asyncio.StreamReader) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > _HEADER_LIMIT:
            raise _Refused(400, "request headers too large")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = [*lines[0].split(" "), "", "", ""][:3]
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if method != "PUT":
            raise _Refused(405, "upload with PUT")
        try:
            destination = self._store.verify(target, time.time())
        except FileNotFoundError as error:
            raise _Refused(404, "no such upload link") from error
        except PermissionError as error:
            raise _Refused(403, str(error)) from error
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length_text = headers.get("content-length", "")
        if not chunked and not length_text.isdigit():
            raise _Refused(411, "send Content-Length or a chunked body")
        if not chunked and int(length_text) > MAX_UPLOAD_BYTES:
            raise _Refused(413, f"uploads are limited to {MAX_UPLOAD_BYTES} bytes")
        destination.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = destination.with_name(f".{destination.name}.{secrets.token_hex(4)}")
        try:
            with partial.open("wb") as out:
                if chunked:
                    await _copy_chunked(reader, out)
                else:
                    await _copy_exact(reader, out, int(length_text))
            partial.replace(destination)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()


async def _close_lingering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Close once the client has sent all it meant to, for up to `LINGER_S`. A refused
    upload is answered before its body is read; closed at once, the socket fails Envoy's
    write of that body (EPIPE), and Envoy drops the answer unread: a 403 became a 503."""
    with contextlib.suppress(ConnectionError, OSError, TimeoutError):
        writer.write_eof()
        async with asyncio.timeout(LINGER_S):
            while await reader.read(_CHUNK):
                pass
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def _copy_exact(reader: asyncio.StreamReader, out: BinaryIO, size: int) -> None:
    left = size
    while left:
        data = await reader.read(min(left, _CHUNK))
        if not data:
            raise _Refused(400, "the body ended before its Content-Length")
        await asyncio.to_thread(out.write, data)
        left -= len(data)


async def _copy_chunked(reader: asyncio.StreamReader, out: BinaryIO) -> None:
    total = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";")[0].strip(), 16)
        except ValueError as error:
            raise _Refused(400, "bad chunk size") from error
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return
        total += size
        if total > MAX_UPLOAD_BYTES:
            raise _Refused(413, f"uploads are limited to {MAX_UPLOAD_BYTES} bytes")
        data = await reader.readexactly(size)
        await asyncio.to_thread(out.write, data)
        await reader.readexactly(2)


def socket_path(state_dir: Path) -> Path:
    """Where the local backend serves uploads, and where `up` points Envoy."""
    return state_dir / SOCKET_NAME
