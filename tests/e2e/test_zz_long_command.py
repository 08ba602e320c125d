"""A command that outlives E2B's 60 s default request timeout streams intact.

Named to run last in tests/e2e: the command (conftest.py's `long_command`) started with the
package's first test and has been streaming while the others ran; this test only joins it.
"""

from __future__ import annotations

import itertools

import pytest

from .conftest import LongCommand


@pytest.mark.timeout(200)
def test_a_90_second_command_streams_intact(long_command: LongCommand | None) -> None:
    assert long_command is not None
    long_command.thread.join(timeout=180)
    assert not long_command.thread.is_alive()
    assert long_command.error is None, repr(long_command.error)
    assert long_command.exit_code == 0
    lines = [line.strip() for _, line in long_command.arrivals]
    assert lines == [f"tick {i}" for i in range(1, 10)] + ["done"]
    times = [at for at, _ in long_command.arrivals]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # each line arrived when printed, not all at the end
    assert all(8 < gap < 13 for gap in gaps[:-1]), gaps
    assert times[-1] - times[0] > 60
