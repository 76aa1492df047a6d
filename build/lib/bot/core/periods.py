"""Digest periods in a guild's time zone: daily, weekly or monthly, anchored at a weekday and a local time.

A :class:`Cadence` names where periods begin: a weekly cadence for Monday 09:00 in ``Europe/Berlin`` has periods
from one Monday 09:00 (Berlin wall clock) to the next, so a week across a daylight-saving change lasts 167 or 169
hours. Daily periods run from one day's ``at`` to the next day's; monthly ones from the first ``weekday`` of a month
(or the 1st, when ``weekday`` is ``None``) to the same day of the next month. With the default ``at`` of midnight
these are calendar days, ISO weeks and calendar months.

Wall-clock times that do not exist (the hour skipped when clocks go forward) are read with the offset in force
before the change, so a 02:30 boundary on that night falls at 03:30; times that happen twice (clocks go back) mean
the first occurrence. Either way a boundary happens exactly once per period. All instants are aware UTC datetimes.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.core.errors import StancebotError

PeriodKind = Literal["daily", "weekly", "monthly"]
PERIOD_KINDS: tuple[PeriodKind, ...] = get_args(PeriodKind)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
#: What a period is called: the noun, the current one and the one before ("this week", "vs last week").
NOUNS: dict[PeriodKind, str] = {"daily": "day", "weekly": "week", "monthly": "month"}
THIS: dict[PeriodKind, str] = {"daily": "today", "weekly": "this week", "monthly": "this month"}
LAST: dict[PeriodKind, str] = {"daily": "yesterday", "weekly": "last week", "monthly": "last month"}


class ScheduleError(StancebotError):
    """A schedule's time zone, weekday, time or period kind is invalid."""


def zone(name: str) -> ZoneInfo:
    """The IANA time zone called ``name``; raises :class:`ScheduleError` with an example when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"{name!r} is not an IANA time zone such as 'Europe/Berlin' or 'America/New_York'."
        ) from None


def as_utc(instant: datetime) -> datetime:
    """``instant`` as aware UTC; naive datetimes (SQLite returns them) are taken to be UTC already."""
    if instant.tzinfo is None:
        return instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC)


def parse_local_time(text: str) -> time:
    """Parse ``HH:MM`` (24-hour; ``9:00`` is fine); raises :class:`ScheduleError` naming the expected form."""
    hours, sep, minutes = text.strip().partition(":")
    if sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2:
        h, m = int(hours), int(minutes)
        if 0 <= h <= 23 and 0 <= m <= 59:
            return time(h, m)
    raise ScheduleError(f"{text!r} is not a time of day; use 24-hour HH:MM such as 09:00 or 18:30.")


def parse_weekday(text: str) -> int:
    """Monday=0 … Sunday=6 from a name or a three-letter abbreviation (any case)."""
    key = text.strip().lower()
    for number, name in enumerate(WEEKDAYS):
        if key in (name.lower(), name[:3].lower()):
            return number
    raise ScheduleError(f"{text!r} is not a weekday; use Monday … Sunday.")


def parse_kind(text: str) -> PeriodKind:
    """``daily``, ``weekly`` or ``monthly``."""
    for kind in PERIOD_KINDS:
        if text.strip().lower() == kind:
            return kind
    raise ScheduleError(f"{text!r} is not a period; use daily, weekly or monthly.")


@dataclass(frozen=True)
class Period:
    """A half-open span ``[start, end)`` of UTC time, one of its cadence's periods."""

    kind: PeriodKind
    start: datetime
    end: datetime
    tz: str

    @property
    def noun(self) -> str:
        """``day``, ``week`` or ``month``."""
        return NOUNS[self.kind]

    @property
    def this(self) -> str:
        """``today``, ``this week`` or ``this month``."""
        return THIS[self.kind]

    @property
    def last(self) -> str:
        """``yesterday``, ``last week`` or ``last month``."""
        return LAST[self.kind]

    def contains(self, instant: datetime) -> bool:
        """Whether ``instant`` falls in the period."""
        return self.start <= as_utc(instant) < self.end

    def local_start(self) -> datetime:
        """The start on the guild's wall clock."""
        return self.start.astimezone(zone(self.tz))

    def local_end(self) -> datetime:
        """The end on the guild's wall clock."""
        return self.end.astimezone(zone(self.tz))

    def describe(self) -> str:
        """E.g. ``Mon 23 Mar 2026 09:00 – Mon 30 Mar 2026 09:00 (Europe/Berlin)``; midnight boundaries as dates."""
        start, end = self.local_start(), self.local_end()
        if start.time() == time(0) and end.time() == time(0):
            last = end - timedelta(days=1)
            if self.kind == "daily":
                return f"{start:%a %d %b %Y} ({self.tz})"
            return f"{start:%a %d %b} – {last:%a %d %b %Y} ({self.tz})"
        return f"{start:%a %d %b %Y %H:%M} – {end:%a %d %b %Y %H:%M} ({self.tz})"

    def short_label(self) -> str:
        """A compact label for chart axes: ``23 Mar`` (day and week) or ``Mar 2026`` (month)."""
        start = self.local_start()
        return f"{start:%b %Y}" if self.kind == "monthly" else f"{start:%d %b}"


@dataclass(frozen=True)
class Cadence:
    """Where a schedule's periods begin: a kind, a weekday (Monday=0), a local time and an IANA zone."""

    kind: PeriodKind = "weekly"
    weekday: int | None = None
    at: time = time(0, 0)
    tz: str = "UTC"

    def __post_init__(self) -> None:
        if self.kind not in PERIOD_KINDS:
            raise ScheduleError(f"{self.kind!r} is not a period; use daily, weekly or monthly.")
        if self.weekday is not None and not 0 <= self.weekday <= 6:
            raise ScheduleError(f"weekday {self.weekday} is not 0 (Monday) … 6 (Sunday).")
        if self.at.tzinfo is not None:
            raise ScheduleError("the time of day must be a wall-clock time without a zone.")
        zone(self.tz)

    # -- anchor days (local dates on which a period starts) ---------------------------------------------------

    def _anchor_on_or_before(self, day: date) -> date:
        if self.kind == "daily":
            return day
        if self.kind == "weekly":
            return day - timedelta(days=(day.weekday() - (self.weekday or 0)) % 7)
        first = self._month_anchor(day.year, day.month)
        if first <= day:
            return first
        year, month = (day.year - 1, 12) if day.month == 1 else (day.year, day.month - 1)
        return self._month_anchor(year, month)

    def _month_anchor(self, year: int, month: int) -> date:
        if self.weekday is None:
            return date(year, month, 1)
        first_weekday, _ = calendar.monthrange(year, month)
        return date(year, month, 1 + (self.weekday - first_weekday) % 7)

    def _step(self, day: date, steps: int) -> date:
        """The anchor ``steps`` periods after (or before, when negative) the anchor ``day``."""
        if self.kind == "daily":
            return day + timedelta(days=steps)
        if self.kind == "weekly":
            return day + timedelta(weeks=steps)
        months = day.year * 12 + day.month - 1 + steps
        return self._month_anchor(months // 12, months % 12 + 1)

    def _instant(self, day: date) -> datetime:
        """The UTC instant of ``at`` on local ``day`` (fold 0: see the module docstring)."""
        return datetime.combine(day, self.at, tzinfo=zone(self.tz)).astimezone(UTC)

    # -- boundaries and periods ---------------------------------------------------------------------------

    def boundary_at_or_before(self, instant: datetime) -> datetime:
        """The latest period start at or before ``instant``."""
        instant = as_utc(instant)
        day = self._anchor_on_or_before(instant.astimezone(zone(self.tz)).date())
        while self._instant(day) > instant:
            day = self._step(day, -1)
        return self._instant(day)

    def next_boundary(self, instant: datetime) -> datetime:
        """The earliest period start strictly after ``instant``: when a schedule with this cadence fires next."""
        instant = as_utc(instant)
        day = self._anchor_on_or_before(instant.astimezone(zone(self.tz)).date())
        while self._instant(day) > instant:
            day = self._step(day, -1)
        while self._instant(day) <= instant:
            day = self._step(day, 1)
        return self._instant(day)

    def period_containing(self, instant: datetime) -> Period:
        """The period ``instant`` falls in."""
        start = self.boundary_at_or_before(instant)
        return Period(self.kind, start, self.next_boundary(start), self.tz)

    def last_complete(self, instant: datetime) -> Period:
        """The most recent period that had ended by ``instant`` (what a digest due at ``instant`` covers)."""
        end = self.boundary_at_or_before(instant)
        return self.previous(Period(self.kind, end, self.next_boundary(end), self.tz))

    def previous(self, period: Period) -> Period:
        """The period just before ``period``."""
        return Period(
            self.kind, self.boundary_at_or_before(period.start - timedelta(microseconds=1)), period.start, self.tz
        )

    def following(self, period: Period) -> Period:
        """The period just after ``period``."""
        return Period(self.kind, period.end, self.next_boundary(period.end), self.tz)

    def history(self, period: Period, count: int) -> list[Period]:
        """``count`` consecutive periods ending with ``period``, oldest first."""
        periods = [period]
        while len(periods) < count:
            periods.append(self.previous(periods[-1]))
        return periods[::-1]

    def boundaries(self, after: datetime) -> Iterator[datetime]:
        """Every period start strictly after ``after``, in order (endless)."""
        current = as_utc(after)
        while True:
            current = self.next_boundary(current)
            yield current

    def describe(self) -> str:
        """E.g. ``every Monday at 09:00 (Europe/Berlin)``."""
        at = f"{self.at:%H:%M}"
        if self.kind == "daily":
            return f"every day at {at} ({self.tz})"
        if self.kind == "weekly":
            return f"every {WEEKDAYS[self.weekday or 0]} at {at} ({self.tz})"
        day = "the 1st" if self.weekday is None else f"the first {WEEKDAYS[self.weekday]}"
        return f"on {day} of every month at {at} ({self.tz})"


def parse_post_time(day: str | None, at: str, tz: str, now: datetime) -> datetime:
    """``at`` (HH:MM) on ``day`` (YYYY-MM-DD) in ``tz``; without a day, the next time the clock shows ``at``."""
    local_time = parse_local_time(at)
    zone_info = zone(tz)
    if day:
        try:
            on = date.fromisoformat(day.strip())
        except ValueError:
            raise ScheduleError(f"{day!r} is not a date; use YYYY-MM-DD such as 2026-03-30.") from None
        instant = datetime.combine(on, local_time, tzinfo=zone_info)
        if instant <= now:
            raise ScheduleError(f"{day} {at} ({tz}) is in the past.")
        return instant
    return Cadence("daily", None, local_time, tz).next_boundary(now)
