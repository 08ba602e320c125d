"""envd's plain-HTTP `/files` endpoint: GET streams a file out, POST streams files in.

Both directions hold at most a megabyte of a file in memory. Errors are envd's JSON
`{"code": <status>, "message": ...}`, which the SDK maps by status: 400 bad path or a
directory, 401 bad user or signature, 404 missing, 406 unacceptable encoding, 413 over a
size limit, 507 disk full.

Auth: the app's middleware has already checked `X-Access-Token` and records the verdict in
`scope["state"]["picod.access_token_ok"]`; without it, a valid signed URL is the only way
in, as in envd's `validateSigning`. The rule and the query parser are the edge's too
(`core/signed_urls.py`), so both read a URL the same way.

Compression: a download is gzipped only when gzip is the one coding the client asks for
(the SDK's `read(gzip=True)` sends exactly `Accept-Encoding: gzip`). HTTP lets a server pick
identity whenever it is acceptable, and httpx offers "gzip, deflate" on every request by
default; compressing those would spend sandbox CPU on every SDK read for no one's benefit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

from python_multipart.multipart import parse_options_header

from extproc.core import asgi, errors, signed_urls
from extproc.picod.binding import Binding
from extproc.picod.entries import domain_error, os_errors
from extproc.picod.environment import Environment
from extproc.picod.multipart_upload import (
    FileUpload,
    MultipartFiles,
    gunzip,
    write_stream,
)
from extproc.picod.settings import PicodSettings
from extproc.picod.users import User, resolve_user

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 1024 * 1024
ACCESS_TOKEN_OK = "picod.access_token_ok"  # noqa: S105 - a scope key, not a secret
_METADATA_HEADER = b"x-metadata-"

# A full disk is 507; an upload over --max-upload-bytes 413; no accepted encoding 406.
_STATUS = {**asgi.ERROR_STATUS, errors.ResourceExhausted: 507, asgi.BodyTooLarge: 413}


class NotAcceptable(errors.DomainError):
    """No content coding the client accepts (406)."""


class FilesEndpoint:
    def __init__(self, settings: PicodSettings, environment: Environment, binding: Binding) -> None:
        self._settings = settings
        self._environment = environment
        self._binding = binding
        # Optional cap on one upload's size in bytes (None: only the disk limits it).
        self._max_upload: int | None = getattr(settings, "max_upload_bytes", None)

    async def __call__(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        method = scope["method"]
        if method not in ("GET", "HEAD", "POST"):
            await asgi.send_error(
                send, 405, f"method {method} not allowed", ((b"allow", b"GET, POST"),)
            )
            return
        started = False

        async def tracking_send(message: asgi.Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            query = _query(scope)
            username = query.get("username", "")
            self._authorize(scope, query, signed_urls.operation_of(method))
            try:
                user = resolve_user(self._environment, username or None)
            except (errors.InvalidArgument, errors.PermissionDenied) as e:
                raise errors.Unauthenticated(e.message) from e
            if method == "POST":
                await self._upload(scope, receive, tracking_send, user, query.get("path"))
            else:
                await self._download(scope, tracking_send, user, query.get("path"))
        except asgi.ClientDisconnected:
            return
        except (errors.DomainError, OSError) as e:
            if started:
                raise  # mid-body: all we can do is drop the connection
            await asgi.send_error(send, *_status_of(e))

    def _authorize(
        self, scope: asgi.Scope, query: dict[str, str], operation: signed_urls.Operation
    ) -> None:
        if scope.get("state", {}).get(ACCESS_TOKEN_OK, False):
            return
        # The token /init set, if this picod was bound after it started.
        signed_urls.verify(query, operation, self._binding.access_token, time.time())

    async def _download(
        self, scope: asgi.Scope, send: asgi.Send, user: User, raw: str | None
    ) -> None:
        if not raw:
            raise errors.InvalidArgument("the path query parameter is required")
        path = user.resolve_path(raw)
        coding = _choose_coding(_header(scope, b"accept-encoding"))
        fd, size = await asyncio.to_thread(_open_for_read, path)
        try:
            headers = [
                (b"content-type", b"application/octet-stream"),
                (b"content-disposition", _disposition(path.name)),
            ]
            if coding == "gzip":
                headers += [(b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding")]
            else:
                headers.append((b"content-length", str(size).encode()))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            if scope["method"] == "HEAD":
                await send({"type": "http.response.body", "body": b""})
                return
            # Level 1: several times faster than the default 6 for a few percent in size.
            deflater = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            remaining = size  # never more than Content-Length, even if the file grows
            while coding == "gzip" or remaining > 0:
                want = READ_CHUNK_BYTES if coding == "gzip" else min(READ_CHUNK_BYTES, remaining)
                chunk = await asyncio.to_thread(os.read, fd, want)
                if not chunk:
                    break
                remaining -= len(chunk)
                if coding == "gzip":
                    chunk = await asyncio.to_thread(deflater.compress, chunk)
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            tail = deflater.flush() if coding == "gzip" else b""
            await send({"type": "http.response.body", "body": tail})
        finally:
            os.close(fd)

    async def _upload(
        self,
        scope: asgi.Scope,
        receive: asgi.Receive,
        send: asgi.Send,
        user: User,
        raw_path: str | None,
    ) -> None:
        content_type, params = parse_options_header(_header(scope, b"content-type") or "")
        encoding = (_header(scope, b"content-encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            raise errors.InvalidArgument(f"unsupported Content-Encoding {encoding!r}")
        metadata = _metadata(scope)
        chunks = asgi.body_chunks(receive)
        if encoding == "gzip":
            chunks = gunzip(chunks)
        if content_type == b"multipart/form-data":
            boundary = params.get(b"boundary")
            if not boundary:
                raise errors.InvalidArgument("multipart body without a boundary")
            uploads = await self._receive_multipart(boundary, chunks, user, raw_path, metadata)
        elif content_type in (b"application/octet-stream", b""):
            if not raw_path:
                raise errors.InvalidArgument("the path query parameter is required")
            upload = FileUpload(user, user.resolve_path(raw_path), metadata)
            await upload.open()
            try:
                await write_stream(upload, chunks, self._max_upload)
                await asyncio.to_thread(upload.commit)
            finally:
                upload.abort()
            uploads = [upload]
        else:
            raise errors.InvalidArgument(f"unsupported Content-Type {content_type.decode()!r}")
        await asgi.send_json(send, 200, [u.describe() for u in uploads])

    async def _receive_multipart(
        self,
        boundary: bytes,
        chunks: Any,
        user: User,
        raw_path: str | None,
        metadata: dict[str, str] | None,
    ) -> list[FileUpload]:
        def target_for(filename: str | None) -> FileUpload:
            # `?path=` names the destination of a single file; the SDK sets it only then.
            if raw_path and parts.uploads:
                raise errors.InvalidArgument(
                    "the path query parameter applies to a single file; got several"
                )
            name = raw_path or filename
            if not name:
                raise errors.InvalidArgument("file part without a file name or path")
            return FileUpload(user, user.resolve_path(name), metadata)

        parts = MultipartFiles(boundary, target_for, self._max_upload)
        try:
            await parts.feed(chunks)
            if not parts.uploads:
                raise errors.InvalidArgument("multipart body has no part named 'file'")
            for upload in parts.uploads:
                await asyncio.to_thread(upload.commit)
        finally:
            parts.abort()
        return parts.uploads


def _open_for_read(path: Path) -> tuple[int, int]:
    with os_errors(path):
        # O_NONBLOCK: opening a FIFO must not hang this thread; it is refused below anyway.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise errors.InvalidArgument(f"path is a directory: {path}")
            if not stat.S_ISREG(st.st_mode):
                raise errors.InvalidArgument(f"path is not a regular file: {path}")
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
    return fd, st.st_size


def _query(scope: asgi.Scope) -> dict[str, str]:
    raw: bytes = scope.get("query_string", b"")
    return signed_urls.parse_query(raw.decode("latin-1"))


def _header(scope: asgi.Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _metadata(scope: asgi.Scope) -> dict[str, str] | None:
    """`X-Metadata-<key>: <value>` headers as {lowercased key: value}; None when absent."""
    found: dict[str, str] = {}
    for key, value in scope.get("headers", []):
        if key.startswith(_METADATA_HEADER) and len(key) > len(_METADATA_HEADER):
            found[key[len(_METADATA_HEADER) :].decode("latin-1").lower()] = bytes(value).decode(
                "latin-1"
            )
    return found or None


def _choose_coding(accept: str | None) -> str:
    """'gzip' or 'identity' for this Accept-Encoding (see the module docstring)."""
    if accept is None:
        return "identity"
    weights: dict[str, float] = {}
    for item in accept.split(","):
        coding, *params = (p.strip() for p in item.split(";"))
        weight = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if coding:
            weights[coding.lower()] = weight
    accepted = {c for c, w in weights.items() if w > 0 and c != "identity"}
    if accepted and accepted <= {"gzip", "x-gzip"}:
        return "gzip"
    identity = weights.get("identity", 0.0 if weights.get("*", 1.0) <= 0 else 1.0)
    if identity > 0:
        return "identity"
    if accepted & {"gzip", "x-gzip", "*"}:
        return "gzip"
    raise NotAcceptable("none of the accepted encodings is supported (identity, gzip)")


def _disposition(name: str) -> bytes:
    try:
        ascii_name = name.encode("ascii")
    except UnicodeEncodeError:
        # RFC 6266: non-ASCII names travel percent-encoded (what Go's mime package does).
        encoded = quote(name.encode("utf-8", "surrogateescape"), safe="")
        return f"inline; filename*=utf-8''{encoded}".encode("ascii")
    escaped = ascii_name.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    return b'inline; filename="' + escaped + b'"'


def _status_of(error: errors.DomainError | OSError) -> tuple[int, str]:
    if isinstance(error, OSError):
        mapped = domain_error(error, error.filename or "")
        if mapped is None:
            log.error("unexpected error in /files", exc_info=error)
            return 500, "internal error"
        error = mapped
    status = 406 if isinstance(error, NotAcceptable) else asgi.status_for(error, _STATUS)
    if status is not None:
        return status, error.message
    log.error("unmapped error in /files", exc_info=error)
    return 500, "internal error"
