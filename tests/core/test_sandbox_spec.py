"""The spec a zygote fork reads (core/sandbox_spec.py): a round trip, refusals, and a memfd
nobody downstream can change."""

from __future__ import annotations

import json
import os

import pytest

from extproc.core.sandbox_spec import SandboxSpec, read_spec, write_spec

SPEC = SandboxSpec(
    sandbox_id="abc", marker="agentcube-sandbox:/state:abc", address_space_kib=2048,
    max_processes=1024, picod_args=("--listen", "0.0.0.0:49983"),
    commands=(("/usr/bin/python3", "-m", "extproc.cli", "interpreter"),),
    env={"AGENTCUBE_E2B_PICOD_ACCESS_TOKEN": "t", "NEWLINE": "a\nb"}, nice=10,
)  # fmt: skip


def test_a_spec_survives_the_memfd() -> None:
    fd = write_spec(SPEC)
    try:
        assert read_spec(fd) == SPEC
        assert read_spec(fd) == SPEC  # read from the start each time
        with pytest.raises(PermissionError):  # sealed: written once by the lifecycle service
            os.write(fd, b"x")
    finally:
        os.close(fd)


def test_no_picod_is_a_spec_too() -> None:
    build_step = SandboxSpec("abc", "m", 1, 1, picod_args=None, commands=(("/bin/sh",),))
    assert SandboxSpec.decode(build_step.encode()) == build_step


@pytest.mark.parametrize(
    "change",
    [
        {"sandbox_id": 7},
        {"max_processes": "1024"},
        {"picod_args": "--listen"},
        {"commands": [[]]},
        {"commands": [["/bin/sh", 1]]},
        {"env": {"A": 1}},
        {"nice": None},
    ],
)
def test_a_field_of_the_wrong_type_is_refused(change: dict[str, object]) -> None:
    document = json.loads(SPEC.encode())
    document.update(change)
    with pytest.raises(ValueError, match="sandbox spec"):
        SandboxSpec.decode(json.dumps(document).encode())


def test_not_an_object_is_refused() -> None:
    with pytest.raises(ValueError, match="expected an object"):
        SandboxSpec.decode(b"[]")
