"""core/backoff.py: the doubling, capped, optionally jittered retry delay."""

from __future__ import annotations

import pytest

from extproc.core.backoff import Backoff


@pytest.mark.parametrize(
    ("backoff", "failures", "expected"),
    [
        (Backoff(initial_s=0.1, max_s=5.0), 0, 0.1),
        (Backoff(initial_s=0.1, max_s=5.0), 1, 0.2),
        (Backoff(initial_s=0.1, max_s=5.0), 5, 3.2),
        (Backoff(initial_s=0.1, max_s=5.0), 6, 5.0),  # capped
        (Backoff(initial_s=0.1, max_s=5.0), 10_000, 5.0),  # a long streak cannot overflow
        (Backoff(initial_s=0.1, max_s=5.0), -3, 0.1),  # nonsense counts as none
        (Backoff(initial_s=2.0, max_s=2.0), 4, 2.0),  # a fixed delay
    ],
)
def test_delay_doubles_up_to_the_cap(backoff: Backoff, failures: int, expected: float) -> None:
    assert backoff.delay(failures) == pytest.approx(expected)


@pytest.mark.parametrize(("draw", "expected"), [(0.0, 8.0), (1.0, 4.0), (0.25, 7.0)])
def test_jitter_takes_up_to_its_fraction_off(draw: float, expected: float) -> None:
    backoff = Backoff(initial_s=1.0, max_s=8.0, jitter=0.5)
    assert backoff.delay(3, rng=lambda: draw) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("initial", "maximum", "jitter"),
    [(0.0, 1.0, 0.0), (-1.0, 1.0, 0.0), (2.0, 1.0, 0.0), (0.1, 1.0, -0.1), (0.1, 1.0, 1.5)],
)
def test_impossible_backoffs_are_refused(initial: float, maximum: float, jitter: float) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(initial_s=initial, max_s=maximum, jitter=jitter)
