"""Every setting the app and the builder take from the environment, read in this one place.

The README's tables ("The app", "Scale-out") list the variables; nothing else reads os.environ.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_STORE = Path(__file__).resolve().parents[1] / "data" / "store"
DEFAULT_DATASET = "ashraq/fashion-product-images-small"  # built on first start where the store has no index
# ViT-B/32 fp32 embeds about 17-20 images/s on a free Space's 2 vCPUs: 2,000 images take about 2 minutes.
DEFAULT_LIMIT = 2000


@dataclass(frozen=True)
class ChromaServer:
    """A Chroma server to keep the vectors on, instead of the store folder's embedded database."""

    host: str
    port: int = 8000
    token: str | None = field(default=None, repr=False)
    timeout: float = 10.0  # seconds any one call may take: a hung server must not hang the app or the builder

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> ChromaServer | None:
        """The server CHROMA_HOST / CHROMA_PORT / CHROMA_TOKEN / CHROMA_TIMEOUT_S name, or None for the embedded store."""
        host = env.get("CHROMA_HOST", "").strip()
        if not host:
            return None
        return cls(host, _count(env, "CHROMA_PORT", 8000), env.get("CHROMA_TOKEN") or None,
                   float(_count(env, "CHROMA_TIMEOUT_S", 10)))


@dataclass(frozen=True)
class AlbumLimits:
    """Caps on a public deployment: per visitor, and for all visitors together (keys are free to make)."""

    albums: int = 5  # per visitor
    images: int = 2000  # in one album
    files: int = 500  # in one upload
    albums_total: int = 100
    images_total: int = 20_000
    store_bytes: int = 4 * 1024**3  # the whole store folder: shipped index, thumbnails, uploads


@dataclass(frozen=True)
class Settings:
    """The app's configuration; ``from_env`` reads the IMAGE_SEARCH_*, CHROMA_* and SPACE_ID variables."""

    store: Path = DEFAULT_STORE
    collection: str | None = None
    model: str | None = None
    # "auto": the image model's default pairing (clip-ViT-B-32 reads non-English queries with the
    # multilingual encoder; embedders.paired_text_model); None: CLIP's own tower reads every query.
    text_model: str | None = "auto"
    pixel_collection: str = "pixels"
    allow_private_urls: bool = False
    public: bool = False  # a public deployment: albums are per visitor, and capped
    limits: AlbumLimits = AlbumLimits()
    upload_budget_bytes: int = 512 * 1024**2  # Gradio's upload and cache folder, all visitors together
    queue_size: int = 64
    concurrency: int = 4  # model calls take turns on the embedder's lock; Chroma is thread-safe
    chroma: ChromaServer | None = None
    default_dataset: str | None = DEFAULT_DATASET  # None: no build on first start
    default_limit: int = DEFAULT_LIMIT

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        """Settings from the environment; a malformed number is a ValueError naming its variable."""
        limits = AlbumLimits()
        mb = 1024**2
        return cls(
            store=Path(env.get("IMAGE_SEARCH_STORE") or DEFAULT_STORE).expanduser(),
            collection=env.get("IMAGE_SEARCH_COLLECTION") or None,
            model=env.get("IMAGE_SEARCH_MODEL") or None,
            text_model=_text_model(env),
            pixel_collection=env.get("IMAGE_SEARCH_PIXEL_COLLECTION") or cls.pixel_collection,
            allow_private_urls=_flag(env, "IMAGE_SEARCH_ALLOW_PRIVATE_URLS"),
            public=_flag(env, "IMAGE_SEARCH_PUBLIC") or bool(env.get("SPACE_ID")),
            limits=AlbumLimits(
                albums_total=_count(env, "IMAGE_SEARCH_MAX_COLLECTIONS_TOTAL", limits.albums_total),
                images_total=_count(env, "IMAGE_SEARCH_MAX_IMAGES_TOTAL", limits.images_total),
                store_bytes=_count(env, "IMAGE_SEARCH_MAX_STORE_MB", limits.store_bytes // mb) * mb,
            ),
            upload_budget_bytes=_count(env, "IMAGE_SEARCH_UPLOAD_BUDGET_MB", cls.upload_budget_bytes // mb) * mb,
            queue_size=_count(env, "IMAGE_SEARCH_QUEUE_SIZE", cls.queue_size),
            concurrency=_count(env, "IMAGE_SEARCH_CONCURRENCY", cls.concurrency),
            chroma=ChromaServer.from_env(env),
            default_dataset=_default_dataset(env),
            default_limit=_count(env, "IMAGE_SEARCH_DEFAULT_LIMIT", cls.default_limit),
        )


def _default_dataset(env: Mapping[str, str]) -> str | None:
    """IMAGE_SEARCH_DEFAULT_DATASET: a Hub name or a local dataset folder; "none" turns the first-run build off."""
    text = env.get("IMAGE_SEARCH_DEFAULT_DATASET", "").strip()
    if text.lower() == "none":
        return None
    return text or DEFAULT_DATASET


def _text_model(env: Mapping[str, str]) -> str | None:
    """IMAGE_SEARCH_TEXT_MODEL: unset is "auto" (the default pairing), "none" turns pairing off."""
    text = env.get("IMAGE_SEARCH_TEXT_MODEL", "").strip()
    if not text:
        return "auto"
    return None if text.lower() == "none" else text


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes")


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, not {text!r}")
    return int(text)


def configure_logging(quiet: bool = False) -> None:
    """One log line per event for the app and the builder (``quiet``: warnings only, and no download bars).

    huggingface_hub prints through a handler of its own and to the root logger as well: each Hub retry
    came out twice. Its handler goes, so its records are printed once, by the root's.
    """
    from huggingface_hub.utils import logging as hub_logging  # its handler is added on import: import it first

    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    hub = hub_logging.get_logger()
    for handler in list(hub.handlers):
        hub.removeHandler(handler)
    if quiet:
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as transformers_logging

        disable_progress_bars()
        transformers_logging.disable_progress_bar()
