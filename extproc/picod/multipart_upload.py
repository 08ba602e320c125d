"""Streaming `/files` uploads: bodies go to disk in bounded memory, and only whole files land.

A new file is written in place (O_EXCL) and unlinked if the upload fails, so watchers see
envd's CREATE + WRITE. A file that already exists is replaced by writing a hidden sibling
and renaming it over the target when the upload is complete: a failed or cut-off upload
never leaves a truncated file and never loses the previous content. In a multipart body all
files are committed together, after the closing boundary has arrived.

Bodies are read one ASGI message at a time (uvicorn stops reading the socket while we do
not ask), gzip is inflated in bounded steps, and data reaches the disk through 1 MiB writes
in a worker thread, so memory stays flat whatever the file size.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import stat
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from python_multipart.exceptions import FormParserError, MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from extproc.core.asgi import BodyTooLarge
from extproc.core.errors import InvalidArgument
from extproc.picod.entries import (
    XATTR_PREFIX,
    make_dirs,
    os_errors,
    upload_temp_path,
)
from extproc.picod.users import User

WRITE_CHUNK_BYTES = 1024 * 1024


class UploadTooLarge(BodyTooLarge):
    """The upload exceeds --max-upload-bytes (answered 413, unlike a full disk's 507)."""


async def gunzip(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Inflate a gzip stream (several members allowed) in pieces of at most 1 MiB."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        async for chunk in chunks:
            data = chunk
            while data:
                out = inflater.decompress(data, WRITE_CHUNK_BYTES)
                if out:
                    yield out
                if inflater.unconsumed_tail:
                    data = inflater.unconsumed_tail
                elif inflater.eof and inflater.unused_data:
                    data = inflater.unused_data  # the next gzip member
                    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                else:
                    data = b""
    except zlib.error as e:
        raise InvalidArgument(f"invalid gzip body: {e}") from e
    if not inflater.eof:
        raise InvalidArgument("invalid gzip body: truncated")


class FileUpload:
    """One destination file: opened, fed, finished, then committed or aborted."""

    def __init__(self, user: User, target: Path, metadata: dict[str, str] | None) -> None:
        self.user = user
        self.target = target
        self.metadata = metadata
        self._owner = (user.uid, user.gid) if os.geteuid() == 0 else None
        self._fd = -1
        self._path: Path | None = None  # what we write: the target itself or a temp sibling
        self.target_on_disk = target  # the target with a symlink at the end followed
        self._replaces = False
        self._buffer = bytearray()
        self._written = 0

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        target = self.target
        with os_errors(target):
            if target.is_symlink():
                # Write through the link, as envd's open(2) does, instead of replacing it.
                target = Path(os.path.realpath(target))
            if target.is_dir():
                raise InvalidArgument(f"path is a directory: {self.target}")
            make_dirs(target.parent, self._owner)
            try:
                self._fd = os.open(
                    target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666
                )
                self._path = target
            except FileExistsError:
                self._replaces = True
                self._path = upload_temp_path(target, secrets.token_hex(6))
                self._fd = os.open(
                    self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
                )
            self.target_on_disk = target
            if self._owner is not None:
                os.fchown(self._fd, *self._owner)

    async def write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= WRITE_CHUNK_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        if not self._buffer:
            return
        data, self._buffer = self._buffer, bytearray()
        await asyncio.to_thread(self._write_all, data)

    def _write_all(self, data: bytearray) -> None:
        view = memoryview(data)
        with os_errors(self.target):
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        self._written += len(data)

    async def finish(self) -> None:
        """Everything written, metadata and mode set; only the commit is left."""
        await self._flush()
        await asyncio.to_thread(self._finish)

    def _finish(self) -> None:
        assert self._path is not None  # open() ran
        with os_errors(self.target):
            if self._replaces:
                old = self.target_on_disk.stat()
                os.fchmod(self._fd, stat.S_IMODE(old.st_mode))
            # E2B's overwrite rule: the new version carries only the metadata sent with it
            # (none sent: none kept), as the replaced file goes with its xattrs.
            if self.metadata:
                _set_metadata(self._path, self.metadata, strict=True)
            os.close(self._fd)
            self._fd = -1

    def commit(self) -> None:
        if self._replaces and self._path is not None:
            with os_errors(self.target):
                self._path.rename(self.target_on_disk)
        self._path = None

    def abort(self) -> None:
        """Undo: close and remove what this upload created (safe to call at any point)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._path is not None:
            with contextlib.suppress(OSError):
                self._path.unlink()
            self._path = None

    def describe(self) -> dict[str, Any]:
        """The `/files` response entry for this file."""
        info: dict[str, Any] = {"path": str(self.target), "name": self.target.name, "type": "file"}
        if self.metadata:
            info["metadata"] = dict(self.metadata)
        return info


def _set_metadata(path: Path, metadata: dict[str, str], *, strict: bool) -> None:
    for key, value in metadata.items():
        try:
            os.setxattr(path, XATTR_PREFIX + key, value.encode("utf-8"))
        except OSError as e:
            if not strict:
                return  # carrying old metadata over is best effort
            raise InvalidArgument(
                f"cannot store metadata on {path.parent}: {e.strerror}"
                " (the filesystem refuses user extended attributes)"
            ) from e


async def write_stream(upload: FileUpload, chunks: AsyncIterator[bytes], limit: int | None) -> None:
    """Feed `chunks` into an opened `upload`, enforcing `limit` bytes when set."""
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if limit is not None and total > limit:
            raise UploadTooLarge(f"upload exceeds the limit of {limit} bytes")
        await upload.write(chunk)
    await upload.finish()


class MultipartFiles:
    """Parses a multipart/form-data body and streams its `file` parts into FileUploads.

    `target_for(filename)` names each part's destination; it is called as a part's headers
    end, so a `file` part can be opened before its data arrives.
    """

    def __init__(
        self,
        boundary: bytes,
        target_for: Callable[[str | None], FileUpload],
        limit: int | None,
    ) -> None:
        self._target_for = target_for
        self._limit = limit
        self._total = 0
        self._actions: list[tuple[str, Any]] = []
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._ended = False
        self.uploads: list[FileUpload] = []
        self._current: FileUpload | None = None
        try:
            self._parser = self._new_parser(boundary)
        except FormParserError as e:  # e.g. a boundary over the parser's 256 bytes
            raise InvalidArgument(f"malformed multipart body: {e}") from e

    def _new_parser(self, boundary: bytes) -> MultipartParser:
        return MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._on_part_begin,
                "on_header_field": lambda d, s, e: self._header_field.extend(d[s:e]),
                "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
                "on_header_end": self._on_header_end,
                "on_headers_finished": lambda: self._actions.append(("open", self._headers)),
                "on_part_data": lambda d, s, e: self._actions.append(("data", d[s:e])),
                "on_part_end": lambda: self._actions.append(("end", None)),
                "on_end": self._on_end,
            },
        )

    def _on_part_begin(self) -> None:
        self._headers = {}

    def _on_header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _on_end(self) -> None:
        self._ended = True

    async def feed(self, chunks: AsyncIterator[bytes]) -> None:
        async for chunk in chunks:
            try:
                self._parser.write(chunk)
            except MultipartParseError as e:
                raise InvalidArgument(f"malformed multipart body: {e}") from e
            await self._run_actions()
        if not self._ended:
            raise InvalidArgument("malformed multipart body: it ends before its closing boundary")

    async def _run_actions(self) -> None:
        actions, self._actions = self._actions, []
        for kind, value in actions:
            if kind == "open":
                self._current = await self._open_part(value)
            elif kind == "data" and self._current is not None:
                self._total += len(value)
                if self._limit is not None and self._total > self._limit:
                    raise UploadTooLarge(f"upload exceeds the limit of {self._limit} bytes")
                await self._current.write(value)
            elif kind == "end" and self._current is not None:
                await self._current.finish()
                self._current = None

    async def _open_part(self, headers: dict[bytes, bytes]) -> FileUpload | None:
        _kind, params = parse_options_header(headers.get(b"content-disposition", b""))
        if params.get(b"name") != b"file":
            return None  # envd ignores other form fields
        raw_name = params.get(b"filename")
        try:
            filename = raw_name.decode("utf-8") if raw_name is not None else None
        except UnicodeDecodeError as e:
            raise InvalidArgument("file name in multipart body is not valid UTF-8") from e
        upload = self._target_for(filename)
        self.uploads.append(upload)
        await upload.open()
        return upload

    def abort(self) -> None:
        for upload in self.uploads:
            upload.abort()
