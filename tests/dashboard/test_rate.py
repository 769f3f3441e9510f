"""The farm's rate is frames over the time spent rendering: the union of the finished clips' spans."""

from datetime import UTC, datetime, timedelta

from farm.dashboard.progress import rendering_seconds

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def span(start_s: float, end_s: float) -> tuple[datetime, datetime]:
    return T0 + timedelta(seconds=start_s), T0 + timedelta(seconds=end_s)


def test_overlapping_clips_count_once_and_idle_gaps_not_at_all():
    # Two workers side by side over 0-10 s and 5-12 s, then an idle half hour, then one clip of 8 s.
    assert rendering_seconds([span(0, 10), span(5, 12), span(1812, 1820)]) == 20.0
    assert rendering_seconds([span(0, 10), span(2, 4), span(4, 6)]) == 10.0  # nested in the first
    assert rendering_seconds([span(0, 5), span(5, 7)]) == 7.0  # touching
    assert rendering_seconds([]) == 0.0
