"""Images from the web: a list of URLs, or the image links of a page crawled on its own site."""
from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from functools import partial
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit

from search.errors import InvalidImageError, SourceError
from search.sources.base import Item
from search.sources.fetch import fetch

MAX_PAGE_BYTES = 5 * 1024 * 1024


def read_url_list(path: Path) -> list[str]:
    """URLs from a text file, one a line; blank lines and '#' comments ignored."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read the URL list {path}: {exc}") from exc
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def url_items(urls: Sequence[tuple[str, str | None]], *, allow_private: bool = False) -> Iterator[Item]:
    """Items that download their URL when read (safely: see search.sources.fetch); the caption is the alt text if any."""
    for url, alt in urls:
        yield Item(url, partial(fetch, url, allow_private=allow_private), caption=alt, rereadable=False)


def crawl(
    start: str, *, max_pages: int = 10, max_images: int = 200, max_depth: int = 2, allow_private: bool = False
) -> tuple[list[tuple[str, str | None]], list[dict[str, str]]]:
    """Image URLs (with alt text) found on ``start`` and the pages it links to on the same site.

    Returns the images and the pages that could not be read, each with its reason.
    """
    site = _site(start)
    queue, seen_pages = deque([(start, 0)]), {urldefrag(start)[0]}
    images: dict[str, str | None] = {}
    failed: list[dict[str, str]] = []
    pages = 0
    while queue and pages < max_pages and len(images) < max_images:
        page, depth = queue.popleft()
        try:
            html = fetch(page, allow_private=allow_private, max_bytes=MAX_PAGE_BYTES).decode("utf-8", "replace")
        except InvalidImageError as exc:
            failed.append({"source": page, "reason": exc.reason, "detail": exc.detail})
            continue
        pages += 1
        parser = _LinkParser(page)
        parser.feed(html)
        for url, alt in parser.images:
            if len(images) < max_images:
                images.setdefault(url, alt)
        for link in parser.links:
            link = urldefrag(link)[0]
            if depth < max_depth and _site(link) == site and link not in seen_pages:
                seen_pages.add(link)
                queue.append((link, depth + 1))
    return list(images.items()), failed


def _site(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


class _LinkParser(HTMLParser):
    """Collects <img src/srcset> (with alt) and <a href>, made absolute against the page."""

    def __init__(self, base: str):
        super().__init__(convert_charrefs=True)
        self.base = base
        self.images: list[tuple[str, str | None]] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v for k, v in attrs if v}
        if tag == "base" and "href" in a:
            self.base = urljoin(self.base, a["href"])
        elif tag == "img":
            src = a.get("src") or (a.get("srcset") or "").split(",")[0].strip().split(" ")[0]
            if src and not src.startswith("data:"):
                self.images.append((urljoin(self.base, src), (a.get("alt") or "").strip() or None))
        elif tag == "a" and "href" in a:
            self.links.append(urljoin(self.base, a["href"]))
