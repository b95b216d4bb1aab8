"""A photo's own words and date, read from its header: EXIF, IPTC and XMP, without decoding a pixel.

What people and their software wrote into the file (a caption, a title, keywords) becomes searchable text,
and the moment the camera took the photo its capture date. Each source is read on its own, so a damaged one
costs only itself; text is made NFC, stripped of control characters and bounded, each field and all of them
together; a date must be a real one between 1900 and 2100. Garbage in gives empty facts out, never an exception,
and a file that repeats or nests its fields thousands of times costs no more to read than a few of them would.
"""
from __future__ import annotations

import datetime
import io
import itertools
import re
import unicodedata
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from PIL import Image, ImageFile, IptcImagePlugin, TiffImagePlugin

from search.core.dates import YEARS
from search.images.decode import ALLOWED_FORMATS, HEAD_BYTES, camera_preview, format_of, is_camera_raw

MAX_TEXT = 2_000  # characters kept of each text field (a caption, a title, a comment)
# Characters kept of a photo's words in all, its texts first and then its keywords: a full-length caption, a title
# and a hundred keywords fit. Beyond that a file's words are repetition or stuffing, and each character is stored
# three times (the record's metadata, the exact and the accent-folded full-text index) and read again by every
# search that matches it.
MAX_PHOTO_TEXT = 4_000
MAX_KEYWORD = 200
MAX_KEYWORDS = 100
# Texts and keywords read of a photo at most, in order, so that a field repeated thousands of times costs no more
# than these: real files hold a handful of texts (a caption in EXIF, IPTC and XMP alike, a title, a few languages),
# and their keywords up to three times (XPKeywords, IPTC, XMP).
TEXTS_READ = 50
KEYWORDS_READ = 3 * MAX_KEYWORDS
# EXIF in a JPEG stands in an APP1 segment, at most 64 KB, and PNG and WebP carry what was copied from one; Pillow
# parses each entry of a block in Python (65,535 of them: 0.66 s). Larger ones are skipped rather than parsed.
MAX_EXIF_BYTES = 64 * 1024
# An XMP packet in a JPEG's APP1 segment is at most 64 KB; PNG and TIFF can carry more. Larger ones are skipped
# rather than parsed.
MAX_XMP_BYTES = 512 * 1024
# IPTC in a JPEG stands in an APP13 segment, at most 64 KB; a TIFF's IPTC tag can be as large as the file, and Pillow
# parses it one 5-byte record at a time (6 MB of them: 1.4 s). Larger ones are skipped rather than parsed.
MAX_IPTC_BYTES = 64 * 1024
# What cameras and phones write as ImageDescription when nobody described the photo: words of no one's choosing.
CAMERA_DEFAULTS = frozenset({
    "olympus digital camera", "sony dsc", "samsung camera pictures", "exif_jpeg_picture", "digital camera",
    "kodak digital still camera", "minolta digital camera", "konica minolta digital camera", "default",
})

EXIF_IFD = 0x8769
IMAGE_DESCRIPTION = 0x010E
XP_TITLE, XP_COMMENT, XP_KEYWORDS, XP_SUBJECT = 0x9C9B, 0x9C9C, 0x9C9E, 0x9C9F
USER_COMMENT = 0x9286
DATE_TIME_ORIGINAL, DATE_TIME_DIGITIZED = 0x9003, 0x9004
IPTC_KEYWORDS, IPTC_DATE, IPTC_TIME, IPTC_CAPTION = (2, 25), (2, 55), (2, 60), (2, 120)

RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
RDF_ITEM = f"{RDF}li"
DC = "{http://purl.org/dc/elements/1.1/}"
PHOTOSHOP = "{http://ns.adobe.com/photoshop/1.0/}"
XMP_EXIF = "{http://ns.adobe.com/exif/1.0/}"
XMP_BASIC = "{http://ns.adobe.com/xap/1.0/}"
XMP_TEXT = (f"{DC}title", f"{DC}description")
# Most trusted first: when the shutter fired, then when the photo was first made a file.
XMP_DATES = (f"{XMP_EXIF}DateTimeOriginal", f"{PHOTOSHOP}DateCreated", f"{XMP_BASIC}CreateDate")
XMP_VALUES = frozenset({*XMP_TEXT, *XMP_DATES})  # the fields that may be written as attributes too
XMP_FIELDS = XMP_VALUES | {f"{DC}subject"}

# "2024:01:31 12:34:56" (EXIF), "2024-01-31T12:34:56.00+07:00" or "2024-01-31" (XMP), "20240131" (IPTC)
_DATE = re.compile(r"\s*(\d{4})[:\-]?(\d{2})[:\-]?(\d{2})(?:[T ]?(\d{2}):?(\d{2})(?::?(\d{2}))?)?")
# Markup declarations (DOCTYPE, ENTITY) are how XML expands entities or reaches outside; XMP never needs them.
_DECLARATION = re.compile(r"<!(?!--|\[CDATA\[)")


@dataclass(frozen=True)
class PhotoFacts:
    """What the file says about itself: a description (its texts, one a line), keywords, and when it was taken
    (the camera's wall-clock time, naive: no source says the zone reliably)."""

    description: str | None = None
    keywords: tuple[str, ...] = ()
    taken: datetime.datetime | None = None

    @property
    def text(self) -> str:
        """The description, then the keywords: the photo's words as one text (read_facts keeps it to MAX_PHOTO_TEXT
        characters)."""
        return " ".join(t for t in (self.description, ", ".join(self.keywords)) if t)


EMPTY = PhotoFacts()


def read_facts(data: bytes) -> PhotoFacts:
    """The description, keywords and capture date that ``data``'s EXIF, IPTC and XMP hold; empty facts where
    there are none or the bytes are not an image. A camera RAW's are its own TIFF tags' (DNG, CR2, NEF...) or else
    its preview's."""
    if is_camera_raw(data):
        return _raw_facts(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about odd headers; they are read as far as they go
            texts: list[str] = []
            keywords: list[str] = []
            dates: list[datetime.datetime | None] = []
            with Image.open(io.BytesIO(bytes(data)), formats=ALLOWED_FORMATS) as im:
                for source in (_exif_facts, _iptc_facts, _xmp_facts):
                    try:
                        found_texts, found_keywords, found_dates = source(im)
                    except Exception:  # a damaged block costs only itself
                        continue
                    texts += found_texts
                    keywords += found_keywords
                    dates += found_dates
    except Exception:  # not an image, or one Pillow cannot open: nothing to say
        return EMPTY
    return _photo_facts(texts, keywords, dates)


def _photo_facts(texts: list[str], keywords: list[str], dates: list[datetime.datetime | None]) -> PhotoFacts:
    """What was found, cleaned and bounded: the first real date, the texts and then the keywords as room allows."""
    description = _description(texts)
    taken = next((d for d in dates if d is not None), None)
    return PhotoFacts(description, tuple(_keywords(keywords, MAX_PHOTO_TEXT - len(description or ""))), taken)


# Texts (as written: they are cleaned only while there is room for them), keywords, dates (best first)
Facts = tuple[list[str], list[str], list[datetime.datetime | None]]


def _raw_facts(data: bytes) -> PhotoFacts:
    """A camera RAW's facts: the EXIF that its TIFF structure is, where it is one (the date; RAW files carry no
    captions), else its preview's, which cameras give a copy of their EXIF."""
    if format_of(data[:HEAD_BYTES]) == "TIFF":
        try:
            exif = Image.Exif()
            exif.load(data)
            return _photo_facts(*_tags_facts(exif))
        except Exception:  # a damaged block: nothing to say
            return EMPTY
    try:
        preview = camera_preview(data)[0]
    except Exception:  # no preview, or a damaged file
        return EMPTY
    return EMPTY if is_camera_raw(preview) else read_facts(preview)


def _exif_facts(im: ImageFile.ImageFile) -> Facts:
    if len(im.info.get("exif", b"")) > MAX_EXIF_BYTES:
        return [], [], []
    if "exif" in im.info:
        exif = Image.Exif()
        exif.load(im.info["exif"])
    elif im.format == "TIFF":  # a TIFF's own tags are its EXIF; PNG's getexif would decode the pixels instead
        exif = im.getexif()
    else:
        return [], [], []
    return _tags_facts(exif)


def _tags_facts(exif: Image.Exif) -> Facts:
    """The texts, keywords and dates of EXIF tags (IFD0 and the EXIF IFD)."""
    ifd = exif.get_ifd(EXIF_IFD)
    description = _clean(_decode(_raw(exif.get(IMAGE_DESCRIPTION))))
    if description and " ".join(description.casefold().split()) in CAMERA_DEFAULTS:
        description = None
    texts = [description, *(_utf16le(exif.get(tag)) for tag in (XP_TITLE, XP_SUBJECT, XP_COMMENT)),
             _user_comment(ifd.get(USER_COMMENT))]
    keywords = (_utf16le(exif.get(XP_KEYWORDS)) or "").split(";")
    # DateTime (0x0132) is left out: editors rewrite it on every save.
    dates = [_date(_decode(_raw(ifd.get(tag) or exif.get(tag)))) for tag in (DATE_TIME_ORIGINAL, DATE_TIME_DIGITIZED)]
    return [t for t in texts if t], keywords, dates


def _iptc_facts(im: ImageFile.ImageFile) -> Facts:
    # A TIFF's tags wait undecoded in _tagdata, where getiptcinfo reads IPTC from too
    tiff = im.tag_v2._tagdata if isinstance(im, TiffImagePlugin.TiffImageFile) else {}
    if len(tiff.get(TiffImagePlugin.IPTC_NAA_CHUNK, b"")) > MAX_IPTC_BYTES:
        return [], [], []
    # Record 1:90 may declare UTF-8; _decode reads UTF-8 first whether or not it does, as undeclared UTF-8 is common.
    iptc = IptcImagePlugin.getiptcinfo(im) or {}
    caption = [_decode(v) for v in _values(iptc.get(IPTC_CAPTION))[:TEXTS_READ]]
    keywords = [k for v in _values(iptc.get(IPTC_KEYWORDS))[:KEYWORDS_READ] if (k := _decode(v))]
    day = (_values(iptc.get(IPTC_DATE)) or [b""])[0]
    time = (_values(iptc.get(IPTC_TIME)) or [b""])[0]  # HHMMSS and a zone, which is dropped
    dates = [_date(day.decode("ascii", "replace") + " " + time[:6].decode("ascii", "replace"))] if day else []
    return [c for c in caption if c], keywords, dates


def _xmp_facts(im: ImageFile.ImageFile) -> Facts:
    packet = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
    if not packet or len(packet) > MAX_XMP_BYTES:
        return [], [], []
    if isinstance(packet, bytes):  # UTF-8, or UTF-16 after a byte-order mark
        packet = packet.decode("utf-16" if packet[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8", "replace")
    text = str(packet).strip("\x00 \t\r\n\ufeff")
    if _DECLARATION.search(text):
        return [], [], []
    root = ET.fromstring(text)
    found: dict[str, list[str]] = {}
    for element in root.iter():
        if element.tag in XMP_FIELDS:
            # An array's items stand in its rdf:Alt, Bag or Seq, right inside the field. Looking no deeper keeps the
            # walk linear where fields are nested inside fields thousands deep.
            items = [li.text for array in element for li in array if li.tag == RDF_ITEM] or [element.text]
            found.setdefault(element.tag, []).extend(i for i in items if i)
        if element.tag == f"{RDF}Description":  # simple values may be written as attributes
            for name, value in element.attrib.items():
                if name in XMP_VALUES:
                    found.setdefault(name, []).append(value)
    texts = [t for name in XMP_TEXT for t in found.get(name, [])[:TEXTS_READ]]
    dates = [_date(d) for name in XMP_DATES for d in found.get(name, [])[:1]]
    return texts, found.get(f"{DC}subject", [])[:KEYWORDS_READ], dates


def _values(value: object) -> list[bytes]:
    """An IPTC dataset's values: it is bytes once, a list of bytes when repeated."""
    items = value if isinstance(value, list) else [value]
    return [v for v in items if isinstance(v, bytes)]


def _raw(value: object) -> bytes | None:
    """An EXIF ASCII value as the bytes in the file: Pillow hands them over decoded as Latin-1."""
    if isinstance(value, str):
        try:
            return value.encode("latin-1")
        except UnicodeEncodeError:
            return value.encode("utf-8")
    if isinstance(value, tuple) and all(isinstance(v, int) and 0 <= v < 256 for v in value):
        return bytes(value)
    return value if isinstance(value, bytes) else None


def _decode(value: bytes | None) -> str | None:
    """Text bytes of no declared charset: UTF-8 where they are valid UTF-8 (most software writes it, whatever
    the spec says), else Windows-1252; cut at the first NUL, where C strings end."""
    if not value:
        return None
    value = value.lstrip(b"\x00").split(b"\x00", 1)[0][: MAX_TEXT * 4]
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("cp1252", "replace")


def _utf16le(value: object) -> str | None:
    """A Windows XP* tag: UTF-16LE, NUL-terminated."""
    raw = _raw(value)
    if not raw:
        return None
    return raw[: MAX_TEXT * 4].decode("utf-16-le", "replace").split("\x00", 1)[0]


def _user_comment(value: object) -> str | None:
    """EXIF UserComment: an 8-byte charset code, then the text."""
    raw = _raw(value)
    if not raw or len(raw) <= 8:
        return None
    code, body = raw[:8], raw[8 : 8 + MAX_TEXT * 4]
    if code == b"UNICODE\x00":
        return body.decode(_utf16_order(body), "replace").split("\x00", 1)[0]
    if code in (b"ASCII\x00\x00\x00", b"\x00" * 8):
        return _decode(body)
    return None  # JIS, or a code no one defined


def _utf16_order(body: bytes) -> str:
    """The byte order of UTF-16 text. Writers follow the EXIF block's order or always use little-endian, so
    read it from the text: Latin letters, Vietnamese's included, have a zero high byte or a small one."""
    if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "utf-16"
    even = sum(1 for b in body[0::2] if b < 0x20)
    odd = sum(1 for b in body[1::2] if b < 0x20)
    return "utf-16-be" if even > odd else "utf-16-le"


def _clean(text: str | None, limit: int = MAX_TEXT) -> str | None:
    """``text`` in NFC without control characters, its whitespace as single spaces, at most ``limit``
    characters; None if nothing is left."""
    if not text:
        return None
    text = unicodedata.normalize("NFC", text[: limit * 2])
    if not text.isprintable():  # most text is, which str.isprintable sees in C, sparing a Python step per character
        text = "".join(" " if kind in ("Cc", "Zl", "Zp") else c for c in text
                       if (kind := unicodedata.category(c)) not in ("Cf", "Cs", "Co"))
    return _cut(" ".join(text.split()), limit) or None


def _cut(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters: cut after its last whole word, unless that would lose more than a
    tenth (a language written without spaces, one endless token), then where the limit falls."""
    if len(text) <= limit:
        return text
    head = text[: limit + 1]
    space = max(head.rfind(" "), head.rfind("\n"))
    return (head[:space] if space >= limit - limit // 10 else head[:limit]).rstrip()


def _description(texts: Iterable[str | None]) -> str | None:
    """The first TEXTS_READ texts, cleaned, each once and one a line, in the order first seen, in at most
    MAX_PHOTO_TEXT characters; None if there are none. A text inside another is dropped: the same caption often
    stands in EXIF, IPTC and XMP alike, or a title inside its caption."""
    kept: dict[str, str] = {}  # casefolded: as written
    size = -1  # characters of the kept texts and the line breaks between them
    for text in filter(None, map(_clean, itertools.islice(texts, TEXTS_READ))):
        key = text.casefold()
        if any(key in other for other in kept):
            continue
        for other in [other for other in kept if other in key]:
            size -= len(kept.pop(other)) + 1
        kept[key] = text
        size += len(text) + 1
        if size >= MAX_PHOTO_TEXT:  # the texts after it would be cut off
            break
    return _cut("\n".join(kept.values()), MAX_PHOTO_TEXT) or None


def _keywords(keywords: Iterable[str], room: int) -> Iterator[str]:
    """The first KEYWORDS_READ keywords, cleaned, each once, in the order first seen: at most MAX_KEYWORDS of them,
    and as many as fit in ``room`` characters with a comma and a space after each."""
    seen: set[str] = set()
    for keyword in itertools.islice(keywords, KEYWORDS_READ):
        clean = _clean(keyword, MAX_KEYWORD)
        if not clean or clean.casefold() in seen:
            continue
        room -= len(clean) + 2
        if room < 0 or len(seen) == MAX_KEYWORDS:
            return
        seen.add(clean.casefold())
        yield clean


def _date(text: str | None) -> datetime.datetime | None:
    """A date and time as EXIF, XMP or IPTC write it, if it is a real one between 1900 and 2100; a time that is
    missing or impossible leaves the day at midnight."""
    match = _DATE.match(text or "")
    if not match:
        return None
    year, month, day = (int(g) for g in match.groups()[:3])
    if year not in YEARS:
        return None
    try:
        date = datetime.datetime(year, month, day)
    except ValueError:
        return None
    hour, minute, second = (int(g or 0) for g in match.groups()[3:])
    try:
        return date.replace(hour=hour, minute=minute, second=second)
    except ValueError:
        return date
