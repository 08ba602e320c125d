"""`/files` through the real E2B SDK (sync and async), plus the bad inputs it must refuse.

The SDK runs in debug mode against the session's picod on localhost:49983; each test works
in a fresh directory under that picod's home.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from typing import TYPE_CHECKING

import httpx
import pytest
from e2b import AsyncSandbox, Sandbox
from e2b.exceptions import FileNotFoundException, InvalidArgumentException

if TYPE_CHECKING:
    from conftest import PicodProcess


def url(picod: PicodProcess) -> str:
    return f"{picod.url}/files"


def test_text_and_bytes_round_trip(sync_sandbox: Sandbox, workdir: str) -> None:
    info = sync_sandbox.files.write(f"{workdir}/a.txt", "héllo")
    assert info.name == "a.txt"
    assert info.path.endswith(f"/{workdir}/a.txt")
    assert sync_sandbox.files.read(f"{workdir}/a.txt") == "héllo"
    sync_sandbox.files.write(f"{workdir}/b.bin", bytes(range(256)))
    assert sync_sandbox.files.read(f"{workdir}/b.bin", format="bytes") == bytes(range(256))


def test_write_creates_parents_and_overwrites(
    sync_sandbox: Sandbox, workdir: str, picod_sdk_env: PicodProcess
) -> None:
    target = f"{workdir}/deep/er/file.txt"
    sync_sandbox.files.write(target, "one")
    sync_sandbox.files.write(target, "two, longer")
    assert sync_sandbox.files.read(target) == "two, longer"
    # Replacing goes through a hidden temp file; none may be left behind.
    left = sorted(p.name for p in (picod_sdk_env.home / workdir / "deep/er").iterdir())
    assert left == ["file.txt"]


def test_stream_uploads_file_like_and_iterator(sync_sandbox: Sandbox, workdir: str) -> None:
    sync_sandbox.files.write(f"{workdir}/f", io.BytesIO(b"from a file object"))
    assert sync_sandbox.files.read(f"{workdir}/f") == "from a file object"
    sync_sandbox.files.write(f"{workdir}/i", iter([b"chunk1-", b"chunk2"]))
    assert sync_sandbox.files.read(f"{workdir}/i") == "chunk1-chunk2"
    with sync_sandbox.files.read(f"{workdir}/i", format="stream") as stream:
        assert b"".join(stream) == b"chunk1-chunk2"


def test_50_mib_round_trip_keeps_every_byte(sync_sandbox: Sandbox, workdir: str) -> None:
    data = os.urandom(1024 * 1024) * 50
    sync_sandbox.files.write(f"{workdir}/big", data)  # multipart
    got = sync_sandbox.files.read(f"{workdir}/big", format="bytes")
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    sync_sandbox.files.write(f"{workdir}/big2", io.BytesIO(data))  # octet-stream
    digest = hashlib.sha256()
    with sync_sandbox.files.read(f"{workdir}/big2", format="stream") as stream:
        for chunk in stream:
            digest.update(chunk)
    assert digest.digest() == hashlib.sha256(data).digest()


def test_gzip_both_ways(sync_sandbox: Sandbox, workdir: str) -> None:
    text = "compress me " * 10_000
    sync_sandbox.files.write(f"{workdir}/g.txt", text, gzip=True)
    assert sync_sandbox.files.read(f"{workdir}/g.txt") == text
    assert sync_sandbox.files.read(f"{workdir}/g.txt", gzip=True) == text


def test_gzip_download_is_compressed_on_the_wire(
    sync_sandbox: Sandbox, workdir: str, picod_sdk_env: PicodProcess
) -> None:
    sync_sandbox.files.write(f"{workdir}/z.txt", "z" * 100_000)
    with httpx.stream(
        "GET",
        url(picod_sdk_env),
        params={"path": f"{workdir}/z.txt"},
        headers={"Accept-Encoding": "gzip"},
    ) as r:
        raw = b"".join(r.iter_raw())
    assert r.headers["content-encoding"] == "gzip"
    assert len(raw) < 1000
    assert gzip.decompress(raw) == b"z" * 100_000
    # httpx's default "gzip, deflate" gets the identity body with a length.
    r = httpx.get(url(picod_sdk_env), params={"path": f"{workdir}/z.txt"})
    assert "content-encoding" not in r.headers
    assert r.headers["content-length"] == "100000"
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"] == 'inline; filename="z.txt"'


def test_write_files_multiple_entries(sync_sandbox: Sandbox, workdir: str) -> None:
    infos = sync_sandbox.files.write_files(
        [
            {"path": f"{workdir}/m/1.txt", "data": "one"},
            {"path": f"{workdir}/m/2.bin", "data": b"two"},
            {"path": f"{workdir}/m/3.txt", "data": io.BytesIO(b"three")},
        ]
    )
    assert [i.name for i in infos] == ["1.txt", "2.bin", "3.txt"]
    assert sync_sandbox.files.read(f"{workdir}/m/3.txt") == "three"


def test_metadata_is_stored_and_replaced(sync_sandbox: Sandbox, workdir: str) -> None:
    path = f"{workdir}/meta.txt"
    info = sync_sandbox.files.write(path, "x", metadata={"Owner": "alice", "k": "v"})
    assert info.metadata == {"owner": "alice", "k": "v"}
    assert sync_sandbox.files.get_info(path).metadata == {"owner": "alice", "k": "v"}
    sync_sandbox.files.write(path, "z", metadata={"k": "w"})  # replaces all of it
    assert sync_sandbox.files.get_info(path).metadata == {"k": "w"}
    sync_sandbox.files.write(path, "y")  # no metadata: none kept (E2B's overwrite rule)
    assert sync_sandbox.files.get_info(path).metadata in ({}, None)


def test_overwrite_keeps_mode(
    sync_sandbox: Sandbox, workdir: str, picod_sdk_env: PicodProcess
) -> None:
    path = f"{workdir}/run.sh"
    sync_sandbox.files.write(path, "#!/bin/sh\n")
    assert sync_sandbox.files.get_info(path).permissions == "-rw-r--r--"
    (picod_sdk_env.home / path).chmod(0o750)
    sync_sandbox.files.write(path, "#!/bin/sh\necho hi\n")
    assert sync_sandbox.files.get_info(path).mode == 0o750


async def test_async_round_trips(async_sandbox: AsyncSandbox, workdir: str) -> None:
    await async_sandbox.files.write(f"{workdir}/a.txt", "async text")
    assert await async_sandbox.files.read(f"{workdir}/a.txt") == "async text"

    async def chunks():  # type: ignore[no-untyped-def]
        yield b"as"
        yield b"ync"

    await async_sandbox.files.write(f"{workdir}/s", chunks())
    assert await async_sandbox.files.read(f"{workdir}/s", format="bytes") == b"async"
    await async_sandbox.files.write(f"{workdir}/g", "gz" * 5000, gzip=True)
    assert await async_sandbox.files.read(f"{workdir}/g", gzip=True) == "gz" * 5000
    stream = await async_sandbox.files.read(f"{workdir}/g", format="stream")
    async with stream:
        assert b"".join([c async for c in stream]) == b"gz" * 5000
    infos = await async_sandbox.files.write_files(
        [{"path": f"{workdir}/w1", "data": "1"}, {"path": f"{workdir}/w2", "data": "2"}]
    )
    assert [i.name for i in infos] == ["w1", "w2"]


# ---- bad input: the right status, and the server keeps serving ----


def test_read_missing_file_is_not_found(sync_sandbox: Sandbox, workdir: str) -> None:
    with pytest.raises(FileNotFoundException):
        sync_sandbox.files.read(f"{workdir}/missing")


def test_read_directory_is_invalid_argument(sync_sandbox: Sandbox, workdir: str) -> None:
    with pytest.raises(InvalidArgumentException, match="directory"):
        sync_sandbox.files.read(workdir)


def test_write_onto_directory_is_invalid_argument(sync_sandbox: Sandbox, workdir: str) -> None:
    with pytest.raises(InvalidArgumentException, match="directory"):
        sync_sandbox.files.write(workdir, "x")
    with pytest.raises(InvalidArgumentException, match="directory"):
        sync_sandbox.files.write(workdir, io.BytesIO(b"x"))


def _post(picod: PicodProcess, **kwargs) -> httpx.Response:  # type: ignore[no-untyped-def]
    return httpx.post(url(picod), timeout=30, **kwargs)


def test_http_errors_are_envd_json(picod_sdk_env: PicodProcess, workdir: str) -> None:
    cases = [
        # octet-stream without a path
        _post(picod_sdk_env, content=b"x", headers={"content-type": "application/octet-stream"}),
        # multipart with no boundary
        _post(picod_sdk_env, content=b"x", headers={"content-type": "multipart/form-data"}),
        # multipart cut before its closing boundary
        _post(
            picod_sdk_env,
            params={"path": f"{workdir}/cut"},
            content=b'--b\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\nab',
            headers={"content-type": "multipart/form-data; boundary=b"},
        ),
        # garbage instead of a multipart body
        _post(
            picod_sdk_env,
            params={"path": f"{workdir}/junk"},
            content=b"this is not multipart at all",
            headers={"content-type": "multipart/form-data; boundary=b"},
        ),
        # a body claiming gzip that is not
        _post(
            picod_sdk_env,
            params={"path": f"{workdir}/bad.gz"},
            content=b"not gzip",
            headers={"content-type": "application/octet-stream", "content-encoding": "gzip"},
        ),
        # truncated gzip
        _post(
            picod_sdk_env,
            params={"path": f"{workdir}/trunc.gz"},
            content=gzip.compress(os.urandom(5000))[:-20],
            headers={"content-type": "application/octet-stream", "content-encoding": "gzip"},
        ),
        # multipart without any part named file
        _post(picod_sdk_env, params={"path": f"{workdir}/nf"}, files={"other": ("f", b"x")}),
        # ?path= with two files
        _post(
            picod_sdk_env,
            params={"path": f"{workdir}/two"},
            files=[("file", ("a", b"1")), ("file", ("b", b"2"))],
        ),
        # unsupported content type and encoding
        _post(
            picod_sdk_env,
            params={"path": "x"},
            content=b"x",
            headers={"content-type": "text/plain"},
        ),
        _post(
            picod_sdk_env,
            params={"path": "x"},
            content=b"x",
            headers={"content-type": "application/octet-stream", "content-encoding": "br"},
        ),
        # a query that is not UTF-8, and a file name that is not
        httpx.get(f"{url(picod_sdk_env)}?path=%FF%FE"),
        _post(
            picod_sdk_env,
            content=b'--b\r\nContent-Disposition: form-data; name="file"; filename="\xff"\r\n\r\n'
            b"x\r\n--b--\r\n",
            headers={"content-type": "multipart/form-data; boundary=b"},
        ),
        httpx.get(url(picod_sdk_env)),  # no path at all
    ]
    for r in cases:
        assert r.status_code == 400, (r.request.url, r.text)
        body = r.json()
        assert body["code"] == 400 and body["message"]
    # Nothing half-written was left behind, and the server still serves.
    assert list((picod_sdk_env.home / workdir).iterdir()) == []
    assert httpx.get(f"{picod_sdk_env.url}/health").status_code == 204


def test_other_statuses(picod_sdk_env: PicodProcess, workdir: str) -> None:
    r = httpx.put(url(picod_sdk_env), params={"path": "x"})
    assert (r.status_code, r.json()["code"]) == (405, 405)
    r = httpx.get(url(picod_sdk_env), params={"path": f"{workdir}/nope"})
    assert (r.status_code, r.json()["code"]) == (404, 404)
    (picod_sdk_env.home / workdir / "f").write_bytes(b"x")
    r = httpx.get(
        url(picod_sdk_env),
        params={"path": f"{workdir}/f"},
        headers={"accept-encoding": "br, identity;q=0"},
    )
    assert (r.status_code, r.json()["code"]) == (406, 406)
    r = httpx.get(url(picod_sdk_env), params={"path": f"{workdir}/f", "username": "nobody-here"})
    assert (r.status_code, r.json()["code"]) == (401, 401)


def test_failed_upload_keeps_previous_content(
    sync_sandbox: Sandbox, workdir: str, picod_sdk_env: PicodProcess
) -> None:
    path = f"{workdir}/keep.txt"
    sync_sandbox.files.write(path, "precious")
    r = _post(
        picod_sdk_env,
        params={"path": path},
        content=gzip.compress(b"replacement" * 1000)[:-30],
        headers={"content-type": "application/octet-stream", "content-encoding": "gzip"},
    )
    assert r.status_code == 400
    assert sync_sandbox.files.read(path) == "precious"
    assert [p.name for p in (picod_sdk_env.home / workdir).iterdir()] == ["keep.txt"]


def test_non_utf8_file_names_never_crash(
    sync_sandbox: Sandbox, workdir: str, picod_sdk_env: PicodProcess
) -> None:
    raw_dir = os.fsencode(picod_sdk_env.home / workdir)
    fd = os.open(raw_dir + b"/bad-\xff-name", os.O_WRONLY | os.O_CREAT, 0o644)
    os.close(fd)
    names = [e.name for e in sync_sandbox.files.list(workdir)]
    assert names == []  # skipped: a proto string cannot carry it
    # A name with a real non-ASCII character is fine, and is disposed RFC 6266-style.
    sync_sandbox.files.write(f"{workdir}/naïve.txt", "ok")
    r = httpx.get(url(picod_sdk_env), params={"path": f"{workdir}/naïve.txt"})
    assert r.headers["content-disposition"] == "inline; filename*=utf-8''na%C3%AFve.txt"
    assert [e.name for e in sync_sandbox.files.list(workdir)] == ["naïve.txt"]


def test_reads_through_symlink_and_writes_through_it(
    sync_sandbox: Sandbox, workdir: str, picod_sdk_env: PicodProcess
) -> None:
    base = picod_sdk_env.home / workdir
    (base / "real.txt").write_text("real")
    (base / "link.txt").symlink_to("real.txt")
    assert sync_sandbox.files.read(f"{workdir}/link.txt") == "real"
    sync_sandbox.files.write(f"{workdir}/link.txt", "through")
    assert (base / "link.txt").is_symlink()
    assert (base / "real.txt").read_text() == "through"


def test_unreadable_special_file_is_refused(
    sync_sandbox: Sandbox, workdir: str, picod_sdk_env: PicodProcess
) -> None:
    os.mkfifo(picod_sdk_env.home / workdir / "fifo")
    with pytest.raises(InvalidArgumentException, match="regular file"):
        sync_sandbox.files.read(f"{workdir}/fifo")
