"""Identifiers from outside are checked against their exact format, and messages stay short and printable."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search.core import ids
from search.errors import QueryError

GOOD_ID = ids.content_id(b"an image")


def test_an_image_id_is_exactly_what_content_id_makes():
    assert len(GOOD_ID) == 32 and ids.is_image_id(GOOD_ID)
    assert ids.image_ids([GOOD_ID, GOOD_ID], limit=5) == [GOOD_ID]  # duplicates dropped, order kept
    for bad in (GOOD_ID.upper(), GOOD_ID[:-1], GOOD_ID + "0", f" {GOOD_ID}", "../" + GOOD_ID, None, 5, [GOOD_ID]):
        assert not ids.is_image_id(bad)
    with pytest.raises(QueryError, match="as a list"):
        ids.image_ids(GOOD_ID, limit=5)
    with pytest.raises(QueryError, match="over the limit of 2"):
        ids.image_ids([GOOD_ID] * 3, limit=2)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=80), st.binary(max_size=40), st.integers(), st.none()))
def test_any_outside_value_is_an_id_or_a_short_printable_refusal(value):
    try:
        assert ids.image_id(value) == value and ids.is_image_id(value)
    except QueryError as exc:
        message = str(exc)
        assert "not an image id" in message and len(message) < 140 and message.isprintable()


def test_names_and_keys_are_taken_exactly_as_given():
    assert ids.collection_name("trip-2024_b") == "trip-2024_b"
    for bad in ("Trip", " trip", "trip ", "-trip", "a" * 31, "", "../images", "trip/x", None):
        with pytest.raises(QueryError, match="not a valid collection name"):
            ids.collection_name(bad)
    assert ids.visitor_key("k" * 16) == "k" * 16
    for bad in ("k" * 15, "k" * 129, "key with spaces!!", None, 12345678901234567890):
        with pytest.raises(QueryError, match="key"):
            ids.visitor_key(bad)
