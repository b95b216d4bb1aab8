"""Dates in file names (cameras, phones, apps, and people, day first as Vietnamese write it) and in API input."""
from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search.core.dates import date_in_name, parse_date
from search.errors import QueryError

D = datetime.date(2024, 1, 31)


@pytest.mark.parametrize("name,expected", [
    ("2024-01-31.jpg", D),
    ("2024_01_31.jpg", D),
    ("2024.01.31.jpg", D),
    ("20240131.jpg", D),
    ("IMG_20240131_123456.jpg", D),
    ("IMG_20240131_123456_HDR.jpg", D),
    ("PXL_20240131_123456789.jpg", D),
    ("PXL_20240131_123456789.MP.jpg", D),
    ("IMG-20240131-WA0001.jpg", D),
    ("Screenshot 2024-01-31 at 10.11.12.png", D),
    ("Screenshot_20240131-101112.png", D),
    ("Screenshot_2024-01-31-10-11-12-345_com.zing.zalo.jpg", D),
    ("WhatsApp Image 2024-01-31 at 10.11.12.jpeg", D),
    ("signal-2024-01-31-101112.jpg", D),
    ("20240131101112.jpg", D),
    ("31-01-2024.jpg", D),
    ("Tết 31.01.2024 nhà bà.jpg", D),
    ("đám cưới 5-1-2024.jpg", datetime.date(2024, 1, 5)),
    ("hoa-dao_2024-01-31_1.jpg", D),
    ("1900-01-01.jpg", datetime.date(1900, 1, 1)),
    ("2100-12-31.jpg", datetime.date(2100, 12, 31)),
    ("from 2023-12-30 to 2024-01-02.jpg", datetime.date(2023, 12, 30)),
    ("20231301 then 2024-01-31.jpg", D),  # not a date, then one
    # no date
    ("tet-2024.jpg", None),
    ("2024.jpg", None),
    ("2024-01.jpg", None),
    ("12345678901.jpg", None),
    ("IMG_1234.jpg", None),
    ("DSC01234.JPG", None),
    ("photo_1706700000.jpg", None),  # a Unix time
    ("120240131.jpg", None),  # nine digits
    ("2024013112.jpg", None),  # ten
    ("20240131256000.jpg", None),  # fourteen, and no time of day
    ("2024-02-30.jpg", None),
    ("2023-02-29.jpg", None),
    ("1899-12-31.jpg", None),
    ("2101-01-01.jpg", None),
    ("31-13-2024.jpg", None),
    ("01-31-2024.jpg", None),  # month first is not read
    ("2024-01_31.jpg", None),  # two separators
    ("", None),
])
def test_date_in_name(name, expected):
    assert date_in_name(name) == expected


PATTERNS = [
    "{d:%Y-%m-%d}.jpg", "{d:%Y_%m_%d}.jpg", "{d:%Y.%m.%d}.jpg", "{d:%Y%m%d}.jpg",
    "IMG_{d:%Y%m%d}_{t:%H%M%S}.jpg", "PXL_{d:%Y%m%d}_{t:%H%M%S}{ms:03d}.jpg", "{d:%Y%m%d}{t:%H%M%S}.jpg",
    "Screenshot {d:%Y-%m-%d} at {t:%H.%M.%S}.png", "WhatsApp Image {d:%Y-%m-%d} at {t:%H.%M.%S}.jpeg",
    "{d:%d-%m-%Y}.jpg", "{d:%d.%m.%Y} Tết.jpg", "ảnh {d.day}-{d.month}-{d.year}.jpg",
]


@settings(max_examples=400, deadline=None)
@given(st.dates(datetime.date(1900, 1, 1), datetime.date(2100, 12, 31)), st.sampled_from(PATTERNS), st.times(),
       st.integers(0, 999))
def test_any_date_written_in_any_pattern_is_found_again(day, pattern, time, ms):
    assert date_in_name(pattern.format(d=day, t=time, ms=ms)) == day


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789", min_size=1, max_size=30).filter(lambda s: len(s) not in (8, 14)))
def test_a_bare_run_of_digits_of_another_length_is_no_date(digits):
    assert date_in_name(f"IMG_{digits}.jpg") is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_name_gives_a_date_or_none(name):
    found = date_in_name(name)
    assert found is None or 1900 <= found.year <= 2100


@pytest.mark.parametrize("value,expected", [
    ("2024-01-31", D),
    (" 2024-01-31 ", D),
    ("2024-01-31T10:11:12", D),
    ("2024-01-31T10:11:12+07:00", D),
    ("2024-01-31 10:11", D),
])
def test_parse_date_takes_iso_dates(value, expected):
    assert parse_date(value) == expected


@pytest.mark.parametrize("value", ["", "31-01-2024", "2024/01/31", "20240131", "2024-W05-3", "2024-1-31", "2024-02-30",
                                   "1899-12-31", "2101-01-01", "2024-01-31 lol", "2024-01-31T25:00", "yesterday", None, 20240131])
def test_parse_date_refuses_anything_else_in_words(value):
    with pytest.raises(QueryError) as err:
        parse_date(value)
    assert "YYYY-MM-DD" in str(err.value) and "2024-01-31" in str(err.value)


def test_the_refusal_shows_a_bounded_single_line_of_the_input():
    with pytest.raises(QueryError) as err:
        parse_date("x" * 500 + "\n\x00")
    assert "\n" not in str(err.value) and "x" * 41 not in str(err.value)
