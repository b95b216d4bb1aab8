"""Dates as people and their phones write them: in a file name, and in what an API caller sends.

A camera, a phone or a messaging app names a photo by the day it was taken (``IMG_20240131_123456``,
``PXL_20240131_...``, ``Screenshot 2024-01-31 at ...``, ``WhatsApp Image 2024-01-31 at ...``), and people
name theirs ``2024-01-31``, ``2024.01.31`` or, as Vietnamese write dates, day first: ``31-01-2024``. Only a real
calendar date between 1900 and 2100 counts, and only digits that stand apart from other digits: a date is
not read out of a longer number (``12345678901``), nor out of a year alone (``tet-2024``).
"""
from __future__ import annotations

import calendar
import datetime
import re

from search.errors import QueryError

YEARS = range(1900, 2101)
# Year first, with one separator used twice (2024-01-31, 2024_01_31, 2024.01.31), or day first (31-01-2024,
# 31.1.2024); neither may touch another digit.
_SEPARATED = re.compile(
    r"(?<!\d)(?:(?P<year>\d{4})(?P<s1>[-_.])(?P<month>\d{1,2})(?P=s1)(?P<day>\d{1,2})"
    r"|(?P<dday>\d{1,2})(?P<s2>[-_.])(?P<dmonth>\d{1,2})(?P=s2)(?P<dyear>\d{4}))(?!\d)"
)
# Year, month and day run together (20240131), alone or followed by the time (20240131123456), as cameras
# and Android write them; a run of digits of any other length is a number, not a date.
_COMPACT = re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})(\d{2}))?(?!\d)")
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}(?!\d)")


def date_in_name(name: str) -> datetime.date | None:
    """The capture date a file name carries, or None; the first one where it carries several."""
    found: list[tuple[int, datetime.date]] = []
    for match in _SEPARATED.finditer(name):
        year, month, day = ((match["year"], match["month"], match["day"]) if match["year"]
                            else (match["dyear"], match["dmonth"], match["dday"]))
        date = _real(int(year), int(month), int(day))
        if date:
            found.append((match.start(), date))
            break
    for match in _COMPACT.finditer(name):
        date = _real(*(int(g) for g in match.groups()[:3]))
        if date and (match[4] is None or _is_time(*(int(g) for g in match.groups()[3:]))):
            found.append((match.start(), date))
            break
    return min(found)[1] if found else None


def parse_date(value: str) -> datetime.date:
    """A date an API caller sent, as ISO 8601 ``YYYY-MM-DD`` (a time after it is allowed and ignored);
    QueryError, saying what is expected, for anything else."""
    text = value.strip() if isinstance(value, str) else ""
    try:
        # fromisoformat alone would take 20240131 and week dates (2024-W05-3) too
        date = datetime.datetime.fromisoformat(text).date() if _ISO_DAY.match(text) else None
    except ValueError:
        date = None
    if date is None or date.year not in YEARS:
        shown = " ".join(str(value).split())[:40]
        raise QueryError(f"“{shown}” is not a date between {YEARS.start} and {YEARS.stop - 1}; "
                         "write it as YYYY-MM-DD, for example 2024-01-31.")
    return date


def _real(year: int, month: int, day: int) -> datetime.date | None:
    if year not in YEARS:
        return None
    try:
        return datetime.date(year, month, day)
    except ValueError:
        return None


def _is_time(hour: int, minute: int, second: int) -> bool:
    return hour < 24 and minute < 60 and second < 60


def seconds_of(moment: datetime.date) -> int:
    """A capture date or time as stored ("taken"): seconds since 1970 of the camera's own clock read as UTC (no
    source says the zone reliably; read back with ``taken_text`` it is the wall-clock time the camera showed)."""
    if not isinstance(moment, datetime.datetime):
        moment = datetime.datetime(moment.year, moment.month, moment.day)
    return calendar.timegm(moment.timetuple())


def taken_text(seconds: int) -> str:
    """A stored capture time ("taken", seconds) in ISO 8601, without a zone."""
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).replace(tzinfo=None).isoformat()
