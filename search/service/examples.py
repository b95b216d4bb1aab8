"""Examples that fit an index: images it holds and descriptions that find them, chosen deterministically."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from search.core.ids import content_id
from search.core.record import SOURCE
from search.core.words import normal
from search.index import ImageIndex

EXAMPLE_IMAGES = 8
EXAMPLE_LABELS = 6


@dataclass(frozen=True)
class Shipped:
    """The examples shipped with an app: photos, and descriptions written for one dataset (``prompts_for``)."""

    photos: list[Path] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    prompts_for: str = ""  # the source (a dataset's name) the prompts describe

    @classmethod
    def read(cls, folder: Path) -> Shipped:
        """A folder's ``*.jpg`` photos and ``prompts.txt`` (one a line; "# for: SOURCE" says what they describe)."""
        photos = sorted(folder.glob("*.jpg"))
        lines = [line.strip() for line in (folder / "prompts.txt").read_text(encoding="utf-8").splitlines()] \
            if (folder / "prompts.txt").is_file() else []
        prompts_for = next((line.removeprefix("# for:").strip() for line in lines if line.startswith("# for:")), "")
        return cls(photos, [line for line in lines if line and not line.startswith("#")], prompts_for)


@dataclass(frozen=True)
class Examples:
    """Examples that fit an index: images it holds (thumbnail path, label) and descriptions."""

    images: list[tuple[str, str]]
    prompts: list[str]


def examples_of(index: ImageIndex, shipped: Shipped) -> Examples:
    """Images: the shipped photos the index holds (by content id), then the first image (by sorted id) of
    each of its most frequent labels, else its first images by id. Descriptions: the shipped prompts and the
    most frequent labels as they read where the index was built from what the prompts were written for,
    else a description of each of its most frequent labels (``photo_of``)."""
    counts = index.label_counts()  # kept by the store's catalogue: no scan of the collection
    frequent = sorted((label for label in counts if label and label.strip()), key=lambda label: (-counts[label], label))
    photo_ids = {p: content_id(p.read_bytes()) for p in shipped.photos}
    held = set(index.collection.held(list(photo_ids.values())))
    chosen = [(str(p), p.stem) for p, photo_id in photo_ids.items() if photo_id in held]
    for image_id, meta in index.first_images(frequent, max(0, EXAMPLE_IMAGES - len(chosen))):
        hit = index.hit(image_id, 0.0, meta)
        if hit.image:
            chosen.append((hit.image, hit.label or hit.caption or ""))
    source = index.metadata.get(SOURCE, "")
    if shipped.prompts_for and source.startswith(shipped.prompts_for):  # its labels read as they are (product types)
        described = [*shipped.prompts, *(label.lower() for label in frequent[:EXAMPLE_LABELS])]
    else:
        described = [photo_of(label) for label in frequent[:EXAMPLE_LABELS]]
    return Examples(chosen, list(dict.fromkeys(described)))


# Words that make a label read naturally after "a photo of" (folder names: "abstract", "space_photos").
PICTURE_WORDS = frozenset(("photo", "photos", "picture", "pictures", "image", "images", "pic", "pics", "wallpaper",
                           "wallpapers"))
STYLES = frozenset(("abstract", "minimal", "minimalist", "geometric", "fractal", "surreal", "vintage", "retro"))
MASS_NOUNS = frozenset(("art", "food", "nature", "scenery", "space", "architecture", "wildlife", "water", "snow",
                        "fire", "smoke", "grass", "sand", "coffee", "tea", "furniture", "jewelry", "jewellery",
                        "clothing", "traffic", "weather", "fog", "rain", "sunlight", "text"))
ONE_OF_A_KIND = frozenset(("sky", "sea", "ocean", "moon", "sun", "earth", "countryside"))
PLURALS = frozenset(("people", "children", "men", "women", "mice", "geese", "teeth", "feet", "cattle", "police"))
SEPARATORS = re.compile(r"[\s_\-.+]+")
# Letters only Vietnamese writes (a hook above, a dot below, a horn, a breve, đ, a tone on a circumflex).
VIETNAMESE = frozenset("ảạăằắẳẵặầấẩẫậđẻẽẹềếểễệỉĩịỏọồốổỗộơờớởỡợủũụưừứửữựỳỷỹỵ")
VIETNAMESE_TOO = frozenset("àáâãèéêìíòóôõùúý")  # Vietnamese letters that French or Portuguese write too


def photo_of(label: str) -> str:
    """An example description for a label (a folder's last name) that reads as written: "a photo of a cat",
    "a photo of an owl", "a photo of cats", "a photo of flowers and plants" (plurals side by side),
    "a photo of abstract art", "a photo of space" (no "photos"), "a photo of the sea"; in Vietnamese, which has
    no articles, "ảnh hoa đào"."""
    words = [w for w in SEPARATORS.split(normal(label.replace("\\", "/").rsplit("/", 1)[-1])) if w]
    if not words:
        return "a photo"
    if _vietnamese(words):
        return "ảnh " + " ".join(words)
    while len(words) > 1 and words[-1] in PICTURE_WORDS:
        words.pop()
    while len(words) > 1 and (words[0] in PICTURE_WORDS or words[0] == "of"):  # "images-of-horses"
        words.pop(0)
    if len(words) > 1 and "and" not in words and all(_plural(w) for w in words):  # "cats-dogs-birds"
        words = [", ".join(words[:-1]), "and", words[-1]]
    thing, last = " ".join(words), words[-1]
    if thing.isdigit():  # a year's folder
        return f"a photo from {thing}"
    if last in STYLES:
        return f"a photo of {thing} art"
    if "and" in words or _plural(last) or last in MASS_NOUNS:
        return f"a photo of {thing}"
    if thing in ONE_OF_A_KIND:
        return f"a photo of the {thing}"
    return f"a photo of {_article(thing)} {thing}"


def _plural(word: str) -> bool:
    return word in PLURALS or (word.endswith("s") and not word.endswith(("ss", "us", "is")))


def _article(thing: str) -> str:
    """ "an" before a vowel sound ("an owl", "an hour"), else "a" ("a unicorn", "a one-way sign")."""
    if thing.startswith(("uni", "use", "usu", "eu", "one", "once")):
        return "a"
    return "an" if thing[:1] in "aeiou" or thing.startswith(("hour", "honest", "honour", "honor", "heir")) else "a"


def _vietnamese(words: list[str]) -> bool:
    """Whether a label is Vietnamese: a letter only Vietnamese writes, or marked letters it shares with French
    or Portuguese in two words or more ("bánh mì", not "café")."""
    letters = set("".join(words))
    if letters & VIETNAMESE:
        return True
    marked = [w for w in words if set(w) & VIETNAMESE_TOO]
    return len(marked) >= 2 and not {c for c in letters if not c.isascii()} - VIETNAMESE_TOO
