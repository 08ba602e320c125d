"""The window arithmetic of extproc/loadtest/histograms.py on fixed inputs: Envoy's bucket
snapshots subtracted and summed, quantiles read from buckets and from raw samples."""

from __future__ import annotations

import pytest

from extproc.loadtest.histograms import BucketHistogram, sample_quantile


def envoy(*buckets: tuple[float, float, int]) -> BucketHistogram:
    """As Envoy's `totals` give them: lower_bound, width, count."""
    return BucketHistogram.from_envoy(
        [{"lower_bound": low, "width": width, "count": n} for low, width, n in buckets]
    )


BEFORE = envoy((0, 0, 10), (1, 0.1, 5), (12, 1, 3))
AFTER = envoy((0, 0, 10), (1, 0.1, 25), (3, 0.1, 4), (12, 1, 3), (120, 10, 2))


def test_the_window_is_the_bucketwise_difference() -> None:
    window = AFTER.minus(BEFORE)
    assert dict(window.counts) == {(1.0, 0.1): 20, (3.0, 0.1): 4, (120.0, 10.0): 2}
    assert window.count == 26
    assert not AFTER.shrank(BEFORE)


def test_a_bucket_that_lost_samples_means_a_restart_and_counts_as_empty() -> None:
    restarted = envoy((1, 0.1, 2))
    assert restarted.shrank(BEFORE)
    assert dict(restarted.minus(BEFORE).counts) == {}


def test_several_envoys_add_up_bucket_by_bucket() -> None:
    both = BEFORE.plus(envoy((1, 0.1, 1), (5, 0.1, 2)))
    assert dict(both.counts) == {(0.0, 0.0): 10, (1.0, 0.1): 6, (5.0, 0.1): 2, (12.0, 1.0): 3}


def test_repeated_buckets_in_one_answer_are_summed() -> None:
    assert envoy((2, 0.1, 1), (2, 0.1, 2)).count == 3


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        # 20 samples in [1, 1.1), 4 in [3, 3.1), 2 in [120, 130): rank q * 26
        (0.0, 1.0),
        (0.5, 1.065),  # rank 13: 13/20 of the way across [1, 1.1)
        (20 / 26, 1.1),  # rank 20: the top of the first bucket
        (0.8, 3.02),  # rank 20.8: 0.8/4 across [3, 3.1)
        (0.99, 128.7),  # rank 25.74: 1.74/2 across [120, 130)
        (1.0, 130.0),
    ],
)
def test_quantiles_interpolate_within_a_bucket(q: float, expected: float) -> None:
    value = AFTER.minus(BEFORE).quantile(q)
    assert value == pytest.approx(expected)


def test_a_zero_width_bucket_is_its_value() -> None:
    # Envoy's bucket for 0 ms has width 0
    assert envoy((0, 0, 7), (1, 0.1, 1)).quantile(0.5) == 0.0


def test_no_samples_no_quantile() -> None:
    assert BucketHistogram.empty().quantile(0.5) is None
    assert AFTER.minus(AFTER).quantile(0.99) is None


@pytest.mark.parametrize(
    ("q", "expected"), [(0.0, 1.0), (0.5, 50.0), (0.9, 90.0), (0.99, 99.0), (1.0, 100.0)]
)
def test_sample_quantiles_are_nearest_rank(q: float, expected: float) -> None:
    assert sample_quantile([float(n) for n in range(1, 101)], q) == expected


def test_sample_quantile_of_one_and_of_none() -> None:
    assert sample_quantile([7.0], 0.99) == 7.0
    assert sample_quantile([], 0.5) is None


@pytest.mark.parametrize("q", [-0.1, 1.5])
def test_a_quantile_outside_zero_to_one_is_refused(q: float) -> None:
    with pytest.raises(ValueError, match="within"):
        AFTER.quantile(q)
    with pytest.raises(ValueError, match="within"):
        sample_quantile([1.0], q)
