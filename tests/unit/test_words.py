"""The keyword channel's parts: words and their folded form, the FTS5 index, rank fusion, and how the page
says why a hit matched."""
from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search.core.fusion import fuse
from search.core.hits import Hit
from search.core.words import STOP_WORDS, fold, found, query_words, tokens
from search.stores import keywords
from search.stores.keywords import Keywords, fields, file_name
from search.web import views


@pytest.mark.parametrize(("text", "folded"), [
    ("Phở Bò", "pho bo"), ("ĐÀ LẠT", "da lat"), ("Cà phê sữa đá", "ca phe sua da"), ("Nike Air", "nike air"),
    ("pho\u031b\u0309", "pho"),  # decomposed (NFD) input folds alike
])
def test_folding_removes_tone_and_vowel_marks_and_maps_d_stroke(text, folded):
    assert fold(text) == folded


def test_a_vietnamese_syllable_stays_one_token_whatever_its_normal_form():
    assert tokens("pho\u031b\u0309 bo\u0300") == tokens("phở bò") == ["phở", "bò"]
    assert tokens("hoa-dao_tet.2024/IMG_20240131.JPG") == ["hoa", "dao", "tet", "2024", "img", "20240131", "jpg"]


def test_stop_words_are_dropped_in_their_exact_form_only():
    assert query_words("a photo of the red dress") == ["red", "dress"]
    assert query_words("một bức ảnh của con cua") == ["con", "cua"]  # "cua" (crab) is not "của" (of)
    assert "cua" not in STOP_WORDS


def test_found_words_are_given_as_written_in_the_text():
    assert found("Phở Bò Tái, Hà Nội", ["pho", "ha"]) == ["Phở", "Hà"]
    assert found("nothing here", ["pho"]) == []


@pytest.mark.parametrize(("source", "name"), [
    ("/photos/tet/hoa-dao-tet-2024.jpg", "hoa-dao-tet-2024"), ("ashraq/fashion[train]#12", ""),
    ("https://example.com/a/ph%E1%BB%9F.webp?x=1", "phở"), ("trip.zip/day 1/IMG_0001.JPEG", "IMG_0001"),
    ("README", "README"),
])
def test_a_records_file_name_is_its_sources_last_segment_without_suffix(source, name):
    assert file_name(source) == name


def test_fields_take_what_a_record_says_of_itself():
    meta = {"caption": "Nike Air", "label": "shoes/sport", "source": "/x/run-2024.jpg", "photo_text": "marathon",
            "ocr": "FINISH", "thumbnail": "ab/cd.jpg", "taken": 1}
    assert fields(meta) == {"caption": "Nike Air", "label": "shoes/sport", "name": "run-2024", "photo": "marathon",
                            "ocr": "FINISH"}


@pytest.fixture
def words() -> Keywords:
    index = Keywords(None)
    index.add("c", [("a", {"caption": "Phở bò tái"}), ("b", {"caption": "pho bo"}), ("n", {"caption": "Nike Air Zoom"}),
                    ("x", {"caption": "something else"}), ("y", {"caption": "more of it"})])
    return index


def test_diacritics_typed_rank_the_images_that_carry_them_first(words):
    assert [h.id for h in words.search("c", ["phở"], 5)] == ["a", "b"]
    assert [h.id for h in words.search("c", ["pho"], 5)] == ["b", "a"]


def test_fts5_syntax_in_a_query_is_only_words(words):
    words.add("c", [("q", {"caption": 'say "NEAR" * OR'})])
    for hostile in (['"'], ["NEAR(a b)"], ["*"], ["OR"], ["a:b"], ["'"], ["-x"], ["^"]):
        words.search("c", hostile, 5)  # never a syntax error
    assert [h.id for h in words.search("c", ["near"], 5)] == ["q"]


def test_a_word_more_records_hold_than_is_worth_scoring_is_left_out(words, monkeypatch):
    monkeypatch.setattr(keywords, "COMMON", 2)
    words.add("c", [("p", {"caption": "pho ga"})])  # "pho": in 3 records, with or without its marks
    assert not words.search("c", ["pho"], 5)
    assert [h.id for h in words.search("c", ["pho", "zoom"], 5)] == ["n"]  # the telling word still finds its own
    assert [h.id for h in words.search("c", ["bò"], 5)] == ["a", "b"]  # two: as common as may be
    monkeypatch.setattr(keywords, "COMMON", 3)
    assert {h.id for h in words.search("c", ["pho"], 5)} == {"a", "b", "p"}


def test_adding_again_replaces_and_delete_and_drop_forget(words):
    words.add("c", [("a", {"caption": "bánh mì"})])
    assert words.count("c") == 5 and [h.id for h in words.search("c", ["banh"], 5)] == ["a"]
    assert "a" not in [h.id for h in words.search("c", ["pho"], 5)]
    words.delete("c", ["a", "missing"])
    assert words.count("c") == 4 and not words.search("c", ["banh"], 5)
    words.drop("c")
    assert words.count("c") == 0 and not words.search("c", ["pho"], 5)
    assert words.count("never made") == 0 and not words.search("never made", ["pho"], 5)


def test_collections_keep_their_words_apart_whatever_their_names(words):
    words.add("mine/owner'; DROP TABLE x; --", [("z", {"caption": "pho bo"})])
    assert [h.id for h in words.search("mine/owner'; DROP TABLE x; --", ["pho"], 5)] == ["z"]
    assert "z" not in {h.id for h in words.search("c", ["pho"], 5)}


def test_reconcile_makes_the_table_hold_exactly_the_records(words):
    words.reconcile("c", [("n", {"caption": "Nike Air Zoom"}), ("new", {"label": "phở"})])
    assert words.count("c") == 2 and [h.id for h in words.search("c", ["pho"], 5)] == ["new"]
    words.reconcile("empty", [])
    assert words.count("empty") == 0


def test_the_index_persists_in_the_store_folder(tmp_path):
    first = Keywords(tmp_path)
    first.add("c", [("a", {"caption": "hoa đào"})])
    first.close()
    assert [h.id for h in Keywords(tmp_path).search("c", ["dao"], 5)] == ["a"]
    assert sqlite3.connect(tmp_path / "keywords.sqlite3").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=4))
def test_any_words_search_without_error(words_typed):
    index = Keywords(None)
    index.add("c", [("a", {"caption": " ".join(words_typed)})])
    hits = index.search("c", query_words(" ".join(words_typed)), 5)
    assert all(h.id == "a" for h in hits)


def test_fusion_puts_what_both_channels_rank_high_first_and_keeps_the_rest():
    vector, keyword = ["v1", "both", "v2", "v3"], ["k1", "both"]
    fused = fuse(vector, keyword)
    assert fused[0] == "both" and set(fused) == {"v1", "both", "v2", "v3", "k1"}
    assert fuse(vector, []) == vector  # no keyword hit: the vector ranking, unchanged
    assert fuse(vector, keyword, weight=0.0) == vector
    assert fuse(vector, ["k1"], weight=1.0).index("k1") == 1  # rank 1 of the keywords ties with rank 1 of vectors


def _hit(**kw) -> Hit:
    return Hit(id="a" * 32, score=0.31, label=None, caption=kw.pop("caption", None), image="/t.jpg", **kw)


def test_a_caption_says_which_words_matched_and_where():
    hit = _hit(caption="Phở bò", matched={"name": ["phở", "bò"], "ocr": ["Phở"]})
    assert views.caption(1, hit, "cosine").endswith("· “phở bò Phở” in file name +")
    assert views.matched(hit) == "**phở** **bò** in the file name; **Phở** in the text in the image"
    assert "Found **phở** **bò** in the file name" in views.detail(1, hit, "cosine")


def test_a_caption_shows_the_capture_date_when_sorted_by_date():
    hit = _hit(metadata={"taken": 1706695200})
    assert " · 2024-01-31" in views.caption(1, hit, "cosine", dated=True)
    assert " · no date" in views.caption(1, _hit(), "cosine", dated=True)
    assert "2024" not in views.caption(1, hit, "cosine")
    assert "Taken 2024-01-31 10:00:00" in views.detail(1, hit, "cosine")


def test_the_status_says_nothing_stands_out_instead_of_counting_strong_matches():
    said = views.status(12, 48, 0.02, relevant=3, no_match="a giraffe")
    assert said.startswith("**Nothing here looks like “a giraffe”**; the nearest images are shown below.")
    assert "strong match" not in said
