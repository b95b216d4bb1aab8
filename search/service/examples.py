"""Examples that fit an index: images it holds and descriptions that find them, chosen deterministically."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from search.core.ids import content_id
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
    else "a photo of a LABEL" for its most frequent labels."""
    counts = index.label_counts()  # kept by the store's catalogue: no scan of the collection
    frequent = sorted((label for label in counts if label and label.strip()), key=lambda label: (-counts[label], label))
    photo_ids = {p: content_id(p.read_bytes()) for p in shipped.photos}
    held = set(index.collection.held(list(photo_ids.values())))
    chosen = [(str(p), p.stem) for p, photo_id in photo_ids.items() if photo_id in held]
    for image_id, meta in index.first_images(frequent, max(0, EXAMPLE_IMAGES - len(chosen))):
        hit = index.hit(image_id, 0.0, meta)
        if hit.image:
            chosen.append((hit.image, hit.label or hit.caption or ""))
    source = str(index.metadata.get("source", ""))
    if shipped.prompts_for and source.startswith(shipped.prompts_for):  # its labels read as they are (product types)
        described = [*shipped.prompts, *(label.lower() for label in frequent[:EXAMPLE_LABELS])]
    else:
        described = [photo_of(label) for label in frequent[:EXAMPLE_LABELS]]
    return Examples(chosen, list(dict.fromkeys(described)))


def photo_of(label: str) -> str:
    """An example description for a label: "a photo of a cat", "an apple", "birds" (a folder's last name)."""
    thing = label.rsplit("/", 1)[-1].strip().lower()
    last = thing.split()[-1] if thing.split() else thing
    if last.endswith("s") and not last.endswith(("ss", "us", "is")):
        return f"a photo of {thing}"
    return f"a photo of {'an' if thing[:1] in 'aeiou' else 'a'} {thing}"
