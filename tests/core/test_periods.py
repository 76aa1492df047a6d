"""Periods and fire times in a guild's time zone, across daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.periods import (
    Cadence,
    ScheduleError,
    parse_kind,
    parse_local_time,
    parse_weekday,
)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_weekly_fire_times_keep_the_local_hour_across_spring_and_autumn() -> None:
    cadence = Cadence("weekly", 0, time(9), "Europe/Berlin")
    fires = []
    after = _at("2026-03-18 00:00")
    for _ in range(3):
        after = cadence.next_boundary(after)
        fires.append(after)
    assert fires == [_at("2026-03-23 08:00"), _at("2026-03-30 07:00"), _at("2026-04-06 07:00")]
    autumn = cadence.next_boundary(_at("2026-10-20 00:00"))
    assert (autumn, cadence.next_boundary(autumn)) == (_at("2026-10-26 08:00"), _at("2026-11-02 08:00"))
    assert all(f.astimezone(cadence.period_containing(f).local_start().tzinfo).hour == 9 for f in fires)


def test_a_week_across_the_change_is_167_or_169_hours() -> None:
    cadence = Cadence("weekly", 6, time(12), "America/New_York")
    spring = cadence.period_containing(_at("2026-03-10 12:00"))  # clocks go forward on Sunday 8 March
    autumn = cadence.period_containing(_at("2026-10-30 12:00"))  # and back on Sunday 1 November
    assert spring.end - spring.start == timedelta(hours=168)
    assert cadence.previous(spring).end - cadence.previous(spring).start == timedelta(hours=167)
    assert cadence.following(autumn).start == autumn.end
    assert autumn.end - autumn.start == timedelta(hours=169)


def test_skipped_and_repeated_wall_clock_times_fire_once() -> None:
    daily = Cadence("daily", None, time(2, 30), "Europe/Berlin")
    # 02:30 does not exist on 29 March 2026 in Berlin: the boundary falls at 03:30 CEST (01:30 UTC), once.
    spring = list(_take(daily, _at("2026-03-27 12:00"), 3))
    assert spring == [_at("2026-03-28 01:30"), _at("2026-03-29 01:30"), _at("2026-03-30 00:30")]
    # 02:30 happens twice on 25 October 2026: the first one counts, and only once.
    autumn = list(_take(daily, _at("2026-10-24 12:00"), 3))
    assert autumn == [_at("2026-10-25 00:30"), _at("2026-10-26 01:30"), _at("2026-10-27 01:30")]


def test_daily_midnight_periods_are_calendar_days() -> None:
    cadence = Cadence("daily", tz="Asia/Tokyo")
    period = cadence.period_containing(_at("2026-05-01 15:30"))  # 00:30 on 2 May in Tokyo
    assert (period.start, period.end) == (_at("2026-05-01 15:00"), _at("2026-05-02 15:00"))
    assert period.describe() == "Sat 02 May 2026 (Asia/Tokyo)"


def test_monthly_periods_first_weekday_or_first_day() -> None:
    first_monday = Cadence("monthly", 0, time(9), "UTC")
    period = first_monday.period_containing(_at("2026-03-01 12:00"))  # before the first Monday of March (the 2nd)
    assert (period.start, period.end) == (_at("2026-02-02 09:00"), _at("2026-03-02 09:00"))
    assert first_monday.next_boundary(period.end) == _at("2026-04-06 09:00")
    calendar_months = Cadence("monthly", tz="Europe/Berlin")
    dec = calendar_months.period_containing(_at("2026-12-31 23:30"))  # already January in Berlin
    assert (dec.start, dec.end) == (_at("2026-12-31 23:00"), _at("2027-01-31 23:00"))
    assert calendar_months.previous(dec).short_label() == "Dec 2026"
    assert first_monday.describe() == "on the first Monday of every month at 09:00 (UTC)"


def test_last_complete_and_history() -> None:
    cadence = Cadence("weekly", 0, time(9), "Europe/Berlin")
    at_fire = _at("2026-03-30 07:00")
    assert cadence.last_complete(at_fire).end == at_fire
    assert cadence.last_complete(at_fire - timedelta(seconds=1)).end == _at("2026-03-23 08:00")
    history = cadence.history(cadence.last_complete(at_fire), 4)
    assert [p.end for p in history[:-1]] == [p.start for p in history[1:]]
    assert history[-1].end == at_fire


ZONES = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago"])
# hypothesis wants naive bounds and attaches the zone itself
NAIVE_MIN, NAIVE_MAX = datetime(2020, 1, 1), datetime(2035, 1, 1)  # noqa: DTZ001
INSTANTS = st.datetimes(min_value=NAIVE_MIN, max_value=NAIVE_MAX, timezones=st.just(UTC))


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["daily", "weekly", "monthly"]),
    weekday=st.one_of(st.none(), st.integers(0, 6)),
    at=st.times(),
    tz=ZONES,
    instant=INSTANTS,
)
def test_every_instant_is_in_exactly_one_period(
    kind: str, weekday: int | None, at: time, tz: str, instant: datetime
) -> None:
    cadence = Cadence(kind, weekday, at, tz)  # type: ignore[arg-type]
    period = cadence.period_containing(instant)
    assert period.start <= instant < period.end
    assert cadence.next_boundary(instant) == period.end
    assert cadence.previous(period).end == period.start
    assert cadence.following(period).start == period.end
    assert timedelta(hours=22) <= period.end - period.start <= timedelta(days=36)


def test_parsers_explain_what_they_expect() -> None:
    assert parse_local_time("9:05") == time(9, 5)
    assert parse_weekday("sun") == 6
    assert parse_kind("Monthly") == "monthly"
    for bad, parse in (("25:00", parse_local_time), ("noon", parse_local_time), ("Funday", parse_weekday)):
        with pytest.raises(ScheduleError, match="use"):
            parse(bad)
    with pytest.raises(ScheduleError, match="IANA"):
        Cadence("weekly", 0, time(9), "Mars/Olympus")


def _take(cadence: Cadence, after: datetime, n: int) -> list[datetime]:
    out = []
    for boundary in cadence.boundaries(after):
        out.append(boundary)
        if len(out) == n:
            return out
    return out
