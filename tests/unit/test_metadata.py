"""A photo's own description, keywords and capture date: EXIF, XP tags, UserComment, IPTC and XMP, header only."""
from __future__ import annotations

import datetime
import io
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, PngImagePlugin, TiffImagePlugin

from search.images import metadata
from search.images.metadata import EMPTY, MAX_KEYWORDS, MAX_PHOTO_TEXT, MAX_TEXT, MAX_XMP_BYTES, PhotoFacts, read_facts
from tests.fixtures.hostile import xmp_flood_png

EXIF_IFD = 0x8769
TAKEN = datetime.datetime(2024, 1, 31, 12, 34, 56)


def exif(ifd0: dict[int, object] | None = None, exif_ifd: dict[int, object] | None = None) -> Image.Exif:
    out = Image.Exif()
    for tag, value in (ifd0 or {}).items():
        out[tag] = value
    if exif_ifd:
        sub = out.get_ifd(EXIF_IFD)
        for tag, value in exif_ifd.items():
            sub[tag] = value
    return out


def encode(fmt: str = "JPEG", size: tuple[int, int] = (64, 48), **options: object) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(out, fmt, **options)
    return out.getvalue()


def utf16(text: str) -> bytes:
    return text.encode("utf-16-le") + b"\x00\x00"


def xmp(description: str = "", body: str = "", attributes: str = "") -> bytes:
    """An XMP packet as Lightroom and Photoshop write it."""
    alt = (f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{description}</rdf:li></rdf:Alt></dc:description>'
           if description else "")
    return f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:xmp="http://ns.adobe.com/xap/1.0/"
 xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" xmlns:exif="http://ns.adobe.com/exif/1.0/" {attributes}>
{alt}{body}
</rdf:Description></rdf:RDF></x:xmpmeta>
{" " * 200}<?xpacket end="w"?>""".encode()


def with_iptc(jpeg: bytes, datasets: list[tuple[int, int, bytes]]) -> bytes:
    """``jpeg`` with an APP13 segment (Photoshop 3.0, resource 0x0404) holding these IPTC datasets."""
    iptc = b"".join(b"\x1c" + bytes([record, number]) + len(value).to_bytes(2, "big") + value
                    for record, number, value in datasets)
    resource = b"8BIM\x04\x04" + b"\x00\x00" + len(iptc).to_bytes(4, "big") + iptc + b"\x00" * (len(iptc) % 2)
    payload = b"Photoshop 3.0\x00" + resource
    return jpeg[:2] + b"\xff\xed" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def test_exif_description_in_utf8_and_the_original_capture_time():
    data = encode(exif=exif({0x010E: "Phở bò tái ở Hà Nội".encode(), 0x0132: "2025:06:01 08:00:00"},
                            {0x9003: "2024:01:31 12:34:56", 0x9004: "2024:02:01 09:00:00"}))
    assert read_facts(data) == PhotoFacts("Phở bò tái ở Hà Nội", (), TAKEN)


def test_the_digitized_time_stands_in_for_a_missing_original_and_an_editors_datetime_never_does():
    assert read_facts(encode(exif=exif({}, {0x9004: "2024:01:31 12:34:56"}))).taken == TAKEN
    assert read_facts(encode(exif=exif({0x0132: "2024:01:31 12:34:56"}))).taken is None


def test_windows_xp_tags_are_utf16():
    data = encode(exif=exif({0x9C9B: utf16("Hoa đào Tết"), 0x9C9C: utf16("chụp ở chợ hoa"),
                             0x9C9F: utf16("Chợ hoa"), 0x9C9E: utf16("tết; hoa đào;Hà Nội;;")}))
    facts = read_facts(data)
    assert facts.description == "Hoa đào Tết\nchụp ở chợ hoa"  # the subject stands inside the comment
    assert facts.keywords == ("tết", "hoa đào", "Hà Nội")


@pytest.mark.parametrize("comment,expected", [
    (b"ASCII\x00\x00\x00sunrise over the bay\x00\x00", "sunrise over the bay"),
    (b"UNICODE\x00" + "bình minh trên vịnh".encode("utf-16-le"), "bình minh trên vịnh"),
    (b"UNICODE\x00" + "bình minh trên vịnh".encode("utf-16-be"), "bình minh trên vịnh"),
    (b"\x00" * 8 + "Cà phê sữa đá".encode(), "Cà phê sữa đá"),
    (b"JIS\x00\x00\x00\x00\x00\x1b$B0!\x1b(B", None),
    (b"ASCII\x00\x00\x00" + b" " * 40, None),
    (b"UNIC", None),
])
def test_user_comment_by_its_charset_prefix(comment, expected):
    assert read_facts(encode(exif=exif({}, {0x9286: comment}))).description == expected


@pytest.mark.parametrize("default", ["OLYMPUS DIGITAL CAMERA", "SONY DSC   ", "SAMSUNG CAMERA PICTURES", "         "])
def test_what_cameras_write_when_nobody_described_the_photo_is_no_description(default):
    assert read_facts(encode(exif=exif({0x010E: default}))).description is None


def test_a_windows_1252_description_is_decoded_as_such():
    assert read_facts(encode(exif=exif({0x010E: "Café crème – été".encode("cp1252")}))).description == "Café crème – été"


def test_text_is_nfc_without_control_characters_and_bounded():
    decomposed = unicodedata.normalize("NFD", "Phở bò")
    facts = read_facts(encode(exif=exif({0x010E: f"{decomposed}\x07\x1b  tái\u200b\u2028chín".encode()})))
    assert facts.description == "Phở bò tái chín"
    long = read_facts(encode(exif=exif({0x010E: ("hoa đào " * 1000).encode()}))).description
    assert long is not None and len(long) <= MAX_TEXT and long.startswith("hoa đào hoa")
    many = read_facts(encode(exif=exif({0x9C9E: utf16(";".join(f"k{i}" for i in range(500)))}))).keywords
    assert len(many) == MAX_KEYWORDS


def test_xmp_description_title_subjects_and_date():
    packet = xmp("Chợ hoa ngày Tết", body=(
        '<dc:title><rdf:Alt><rdf:li xml:lang="x-default">Chợ hoa</rdf:li><rdf:li xml:lang="en">Flower market</rdf:li>'
        "</rdf:Alt></dc:title><dc:subject><rdf:Bag><rdf:li>chợ</rdf:li><rdf:li>Tết</rdf:li><rdf:li>tết</rdf:li>"
        "</rdf:Bag></dc:subject>"), attributes='photoshop:DateCreated="2024-01-31T12:34:56+07:00"')
    facts = read_facts(encode(xmp=packet))
    assert facts == PhotoFacts("Flower market\nChợ hoa ngày Tết", ("chợ", "Tết"), TAKEN)


@pytest.mark.parametrize("dates,expected", [
    ('exif:DateTimeOriginal="2024-01-31T12:34:56" xmp:CreateDate="2020-05-05T10:00:00"', TAKEN),
    ('xmp:CreateDate="2024-01-31T12:34:56.123Z"', TAKEN),
    ('photoshop:DateCreated="2024-01-31"', datetime.datetime(2024, 1, 31)),
    ('photoshop:DateCreated="2024"', None),  # a year alone is no date
    ('photoshop:DateCreated="2024-01"', None),
])
def test_xmp_dates_most_trusted_first(dates, expected):
    assert read_facts(encode(xmp=xmp(attributes=dates))).taken == expected


def test_the_exif_date_wins_over_xmp():
    data = encode(exif=exif({}, {0x9003: "2024:01:31 12:34:56"}), xmp=xmp(attributes='photoshop:DateCreated="2019-01-01"'))
    assert read_facts(data).taken == TAKEN


def test_the_same_caption_in_exif_iptc_and_xmp_is_kept_once():
    caption = "Bánh mì Sài Gòn"
    data = with_iptc(encode(exif=exif({0x010E: caption.encode()}), xmp=xmp(caption)), [(2, 120, caption.encode())])
    assert read_facts(data).description == caption


@pytest.mark.parametrize("declaration,description", [
    ('<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>', "Chợ &b;"),
    ('<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/hostname">]>', "Chợ"),
    ("<!DOCTYPE x>", "Chợ"),
])
def test_an_xmp_packet_with_a_doctype_is_not_parsed_and_the_rest_is_still_read(declaration, description):
    packet = xmp(description).replace(b"<x:xmpmeta", declaration.encode() + b"<x:xmpmeta")
    data = encode(exif=exif({0x010E: b"Hoa sen"}), xmp=packet)
    assert read_facts(data) == PhotoFacts("Hoa sen", (), None)


def test_an_oversized_or_broken_xmp_packet_is_skipped():
    assert read_facts(encode("PNG", pnginfo=_itxt(xmp("x" * MAX_XMP_BYTES)))).description is None
    assert read_facts(encode(xmp=b"<x:xmpmeta><unclosed>")) == EMPTY
    assert read_facts(encode(xmp=xmp("Hoa sen")[:300])) == EMPTY


def test_an_xmp_of_14500_descriptions_is_read_once_each_of_the_first_few_in_the_order_written(monkeypatch):
    cleaned = []
    monkeypatch.setattr(metadata, "_clean", lambda text, *limit: cleaned.append(text) or text)
    facts = read_facts(xmp_flood_png(14_500))
    assert facts.description is not None and facts.description.splitlines() == [f"w{i:05d}" for i in range(metadata.TEXTS_READ)]
    assert len(facts.text) <= MAX_PHOTO_TEXT
    assert len(cleaned) == metadata.TEXTS_READ  # of 14,500: comparing them all with each other took 15 s


def xmp_lists(titles: list[str], keywords: list[str]) -> bytes:
    """An XMP packet of these titles (one rdf:Alt) and keywords (one rdf:Bag)."""
    return xmp(body="<dc:title><rdf:Alt>" + "".join(f"<rdf:li>{t}</rdf:li>" for t in titles) + "</rdf:Alt></dc:title>"
                    "<dc:subject><rdf:Bag>" + "".join(f"<rdf:li>{k}</rdf:li>" for k in keywords) + "</rdf:Bag></dc:subject>")


def test_500_fields_are_bounded_in_total_texts_first_in_the_order_read_cut_after_a_word():
    texts = [f"Caption {i}: " + " ".join(f"word{i}x{j}" for j in range(12)) for i in range(250)]
    keywords = [f"keyword {i}" for i in range(250)]
    data = with_iptc(encode(exif=exif({0x010E: texts[0].encode()}), xmp=xmp_lists(texts[3:], keywords)),
                     [(2, 120, t.encode()) for t in texts[1:3]])
    facts = read_facts(data)
    assert facts.description is not None and MAX_PHOTO_TEXT - 200 <= len(facts.text) <= MAX_PHOTO_TEXT
    *whole, last = facts.description.splitlines()
    assert whole == texts[: len(whole)] and f"{texts[len(whole)]} ".startswith(f"{last} ")
    assert facts.keywords == tuple(keywords[: len(facts.keywords)])  # what room the texts left


def test_keywords_have_the_room_the_texts_leave():
    keywords = [f"keyword {i}" for i in range(250)]
    facts = read_facts(encode(xmp=xmp_lists(["Phố cổ"], keywords)))
    assert facts.description == "Phố cổ" and facts.keywords == tuple(keywords[:MAX_KEYWORDS])
    crowded = read_facts(encode(xmp=xmp_lists(["phố " * 490, "hội " * 490], keywords)))
    assert 0 < len(crowded.keywords) < MAX_KEYWORDS and crowded.keywords == tuple(keywords[: len(crowded.keywords)])
    assert MAX_PHOTO_TEXT - len(", keyword 10") < len(crowded.text) <= MAX_PHOTO_TEXT


def test_fields_nested_thousands_deep_are_each_read_once():
    deep = 10_000
    packet = xmp(body="<dc:description>" * deep + "Hoa sen" + "</dc:description>" * deep)
    assert read_facts(encode("PNG", pnginfo=_itxt(packet))).description == "Hoa sen"


def test_iptc_caption_keywords_and_date():
    data = with_iptc(encode(), [(1, 90, b"\x1b%G"), (2, 120, "Phố cổ Hội An".encode()), (2, 25, "phố cổ".encode()),
                                (2, 25, b"Hoi An"), (2, 55, b"20240131"), (2, 60, b"123456+0700")])
    assert read_facts(data) == PhotoFacts("Phố cổ Hội An", ("phố cổ", "Hoi An"), TAKEN)


def test_an_iptc_date_without_a_time_or_a_real_day():
    assert read_facts(with_iptc(encode(), [(2, 55, b"20240131")])).taken == datetime.datetime(2024, 1, 31)
    assert read_facts(with_iptc(encode(), [(2, 55, b"20240000")])).taken is None


def test_an_exif_block_larger_than_a_jpeg_can_hold_is_skipped_and_the_rest_is_still_read():
    def png(description: bytes) -> bytes:
        return encode("PNG", exif=exif({0x010E: description}), pnginfo=_itxt(xmp("Chợ hoa")))

    assert read_facts(png(b"Hoa sen " * 100)).description == "Hoa sen " * 99 + "Hoa sen\nChợ hoa"
    assert read_facts(png(b"Hoa sen " * (metadata.MAX_EXIF_BYTES // 8))).description == "Chợ hoa"


def test_a_tiffs_iptc_is_read_up_to_its_bound_and_a_larger_one_is_skipped():
    def tiff(records: int) -> bytes:
        tags = TiffImagePlugin.ImageFileDirectory_v2()
        tags[0x010E] = "Hoa sen"
        tags[TiffImagePlugin.IPTC_NAA_CHUNK] = b"\x1c\x02\x19\x00\x02kw" * records  # keyword records of 7 bytes
        tags.tagtype[TiffImagePlugin.IPTC_NAA_CHUNK] = 7  # UNDEFINED: bytes as they are
        out = io.BytesIO()
        Image.new("RGB", (8, 8)).save(out, "TIFF", tiffinfo=tags)
        return out.getvalue()

    assert read_facts(tiff(metadata.MAX_IPTC_BYTES // 7)) == PhotoFacts("Hoa sen", ("kw",))
    assert read_facts(tiff(metadata.MAX_IPTC_BYTES // 7 + 1)) == PhotoFacts("Hoa sen")


def _itxt(packet: bytes) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", packet.decode())
    return info


@pytest.mark.parametrize("fmt,options", [
    ("PNG", {"exif": exif({0x010E: "Đêm Hội An".encode()}, {0x9003: "2024:01:31 12:34:56"})}),
    ("WEBP", {"exif": exif({0x010E: "Đêm Hội An".encode()}, {0x9003: "2024:01:31 12:34:56"})}),
    ("PNG", {"pnginfo": _itxt(xmp("Đêm Hội An", attributes='exif:DateTimeOriginal="2024-01-31T12:34:56"'))}),
    ("WEBP", {"xmp": xmp("Đêm Hội An", attributes='exif:DateTimeOriginal="2024-01-31T12:34:56"')}),
])
def test_png_and_webp_carry_exif_and_xmp_too(fmt, options):
    assert read_facts(encode(fmt, **options)) == PhotoFacts("Đêm Hội An", (), TAKEN)


def test_a_tiffs_own_tags_are_its_exif():
    assert read_facts(encode("TIFF", exif=exif({0x010E: b"Ruong bac thang"}))).description == "Ruong bac thang"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_no_pixel_is_decoded(monkeypatch, fmt):
    data = encode(fmt, size=(4000, 3000), exif=exif({0x010E: b"Hoa sen"}))

    def refuse(self):
        raise AssertionError("pixels decoded")

    for cls in {ImageFile.ImageFile, type(Image.open(io.BytesIO(data)))}:  # WebP has a load of its own
        monkeypatch.setattr(cls, "load", refuse)
    with pytest.raises(AssertionError):
        Image.open(io.BytesIO(data)).load()
    assert read_facts(data).description == "Hoa sen"


@pytest.mark.parametrize("value,expected", [
    ("2024:01:31 12:34:56", TAKEN),
    ("2024:01:31 12:34:56\x00", TAKEN),
    ("2024-01-31 12:34:56", TAKEN),
    ("2024:01:31 25:61:00", datetime.datetime(2024, 1, 31)),  # an impossible time keeps the day
    ("2100:12:31 23:59:59", datetime.datetime(2100, 12, 31, 23, 59, 59)),
    ("0000:00:00 00:00:00", None),
    ("    :  :     :  :  ", None),
    ("2024:02:30 10:00:00", None),
    ("1899:12:31 10:00:00", None),
    ("2101:01:01 00:00:00", None),
    ("yesterday", None),
])
def test_exif_dates_are_real_calendar_dates_between_1900_and_2100(value, expected):
    assert read_facts(encode(exif=exif({}, {0x9003: value}))).taken == expected


def test_garbage_truncated_and_damaged_files_give_empty_facts():
    good = encode(exif=exif({0x010E: b"Hoa sen"}, {0x9003: "2024:01:31 12:34:56"}))
    assert read_facts(b"") == EMPTY
    assert read_facts(b"not an image at all") == EMPTY
    assert read_facts(b"\xff\xd8\xff") == EMPTY
    for cut in range(0, 200, 7):  # cut inside the EXIF segment
        assert isinstance(read_facts(good[:cut]), PhotoFacts)
    damaged = good[:2] + b"\xff\xe1\x00\x20Exif\x00\x00II*\x00\xff\xff\xff\x7f" + b"\x01" * 18 + good[2:]
    assert read_facts(damaged) == EMPTY
    assert read_facts(encode()) == EMPTY


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise(data):
    assert isinstance(read_facts(data), PhotoFacts)


_SAMPLE = with_iptc(encode(exif=exif({0x010E: "Phở".encode(), 0x9C9E: utf16("a;b")}, {0x9003: "2024:01:31 12:34:56",
                                      0x9286: b"UNICODE\x00" + "bình".encode("utf-16-le")}), xmp=xmp("Chợ")),
                    [(2, 120, b"caption"), (2, 25, b"kw")])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_SAMPLE) - 1), st.integers(0, 255)), min_size=1, max_size=12))
def test_a_real_header_damaged_anywhere_never_raises(changes):
    data = bytearray(_SAMPLE)
    for position, value in changes:
        data[position] = value
    assert isinstance(read_facts(bytes(data)), PhotoFacts)
