"""The one settings object of the app and the builder, and the only reader of the environment.

``Settings()`` reads the IMAGE_SEARCH_*, CHROMA_* and SPACE_ID variables (docs/configuration.md lists them;
pydantic-settings checks each, and a malformed value is an error naming its variable); keyword arguments
override them, as tests and library callers do. Nothing else in the package reads os.environ.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_STORE = Path("data") / "store"  # relative to where the app or the builder runs
DEFAULT_DATASET = "ashraq/fashion-product-images-small"  # built on first start where the store has no index
# ViT-B/32 fp32 embeds about 17-20 images/s on a free Space's 2 vCPUs: 2,000 images take about 2 minutes.
DEFAULT_LIMIT = 2000
AUTO = "auto"  # IMAGE_SEARCH_TEXT_MODEL's default: the image model's own pairing (embedders.paired_text_model)
MB = 1024**2


class ChromaServer(BaseModel):
    """A Chroma server to keep the vectors on, instead of the store folder's embedded database."""

    model_config = ConfigDict(frozen=True)

    host: str
    port: int = Field(8000, ge=1, le=65535)
    token: SecretStr | None = None
    timeout: float = Field(10.0, gt=0)  # seconds any one call may take: a hung server must not hang anything

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class AlbumLimits(BaseModel):
    """Caps on a public deployment: per visitor, and for all visitors together (keys are free to make)."""

    model_config = ConfigDict(frozen=True)

    albums: int = 5  # per visitor
    images: int = 2000  # in one album
    files: int = 500  # in one upload
    albums_total: int = 100
    images_total: int = 20_000
    store_bytes: int = 4 * 1024**3  # the whole store folder: shipped index, thumbnails, uploads


class Settings(BaseSettings):
    """The app's and the builder's configuration."""

    model_config = SettingsConfigDict(frozen=True, validate_by_name=True, validate_by_alias=True, extra="ignore",
                                      case_sensitive=True)

    store: Path = Field(DEFAULT_STORE, validation_alias="IMAGE_SEARCH_STORE")
    collection: str | None = Field(None, validation_alias="IMAGE_SEARCH_COLLECTION")
    model: str | None = Field(None, validation_alias="IMAGE_SEARCH_MODEL")
    # "auto": the image model's default pairing (clip-ViT-B-32 reads non-English queries with the
    # multilingual encoder); None ("none" in the environment): CLIP's own tower reads every query.
    text_model: str | None = Field(AUTO, validation_alias="IMAGE_SEARCH_TEXT_MODEL")
    pixel_collection: str = Field("pixels", validation_alias="IMAGE_SEARCH_PIXEL_COLLECTION")
    allow_private_urls: bool = Field(False, validation_alias="IMAGE_SEARCH_ALLOW_PRIVATE_URLS")
    ocr: bool = Field(True, validation_alias="IMAGE_SEARCH_OCR")  # albums' text read in the background, if Tesseract is here
    public: bool = Field(False, validation_alias="IMAGE_SEARCH_PUBLIC")  # albums per visitor, and capped
    space_id: str = Field("", validation_alias="SPACE_ID", repr=False)  # set by Hugging Face: public
    max_collections_total: int = Field(100, ge=1, validation_alias="IMAGE_SEARCH_MAX_COLLECTIONS_TOTAL")
    max_images_total: int = Field(20_000, ge=1, validation_alias="IMAGE_SEARCH_MAX_IMAGES_TOTAL")
    max_store_mb: int = Field(4096, ge=1, validation_alias="IMAGE_SEARCH_MAX_STORE_MB")
    # Gradio's upload and cache folder, all visitors together
    upload_budget_mb: int = Field(512, ge=1, validation_alias="IMAGE_SEARCH_UPLOAD_BUDGET_MB")
    queue_size: int = Field(64, ge=1, validation_alias="IMAGE_SEARCH_QUEUE_SIZE")
    concurrency: int = Field(4, ge=1, validation_alias="IMAGE_SEARCH_CONCURRENCY")  # Chroma is thread-safe
    chroma_host: str = Field("", validation_alias="CHROMA_HOST")
    ray_address: str = Field("", validation_alias="RAY_ADDRESS")  # the cluster `--engine ray` joins ("": a Ray of its own)
    chroma_port: int = Field(8000, ge=1, le=65535, validation_alias="CHROMA_PORT")
    chroma_token: SecretStr | None = Field(None, validation_alias="CHROMA_TOKEN")
    chroma_timeout_s: float = Field(10.0, gt=0, validation_alias="CHROMA_TIMEOUT_S")
    default_dataset: str | None = Field(DEFAULT_DATASET, validation_alias="IMAGE_SEARCH_DEFAULT_DATASET")
    default_limit: int = Field(DEFAULT_LIMIT, ge=1, validation_alias="IMAGE_SEARCH_DEFAULT_LIMIT")

    @field_validator("store", mode="after")
    @classmethod
    def _home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("text_model", mode="before")
    @classmethod
    def _text_model(cls, value: object) -> object:
        """Unset or empty is "auto" (the default pairing); "none" turns pairing off."""
        return _unset_or_none(value, AUTO)

    @field_validator("default_dataset", mode="before")
    @classmethod
    def _default_dataset(cls, value: object) -> object:
        """A Hub name or a local dataset folder; empty is the default, "none" turns the first-run build off."""
        return _unset_or_none(value, DEFAULT_DATASET)

    @field_validator("collection", "model", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        return (value.strip() or None) if isinstance(value, str) else value

    @field_validator("chroma_host", mode="before")
    @classmethod
    def _stripped(cls, value: object) -> object:
        return value.strip() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _on_a_space(self) -> Settings:
        if self.space_id and not self.public:
            object.__setattr__(self, "public", True)  # a Space is public whatever IMAGE_SEARCH_PUBLIC says
        return self

    @property
    def limits(self) -> AlbumLimits:
        """The public deployment's caps (per-visitor caps fixed, totals from the environment)."""
        return AlbumLimits(albums_total=self.max_collections_total, images_total=self.max_images_total,
                           store_bytes=self.max_store_mb * MB)

    @property
    def upload_budget_bytes(self) -> int:
        """Bytes Gradio's upload and cache folder may hold before visitors' uploads are refused."""
        return self.upload_budget_mb * MB

    @property
    def chroma(self) -> ChromaServer | None:
        """The Chroma server CHROMA_HOST names, or None for the embedded store."""
        if not self.chroma_host:
            return None
        return ChromaServer(host=self.chroma_host, port=self.chroma_port, token=self.chroma_token,
                            timeout=self.chroma_timeout_s)


def load_settings() -> Settings:
    """The settings from the environment; a malformed variable stops the process with one line naming it."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        raise SystemExit(f"error: {first['loc'][0]}={first.get('input')!r}: {first['msg']}") from None


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


def _unset_or_none(value: object, default: str) -> object:
    """An environment value where empty means ``default`` and "none" (any case) means off."""
    if isinstance(value, str):
        value = value.strip()
        return default if not value else None if value.lower() == "none" else value
    return value


class _ChildEnvironment(Mapping[str, str]):
    """This process's environment as a child process sees it, read at each use, with ``defaults`` for
    variables the operator did not set."""

    def __init__(self, defaults: dict[str, str]):
        self.defaults = defaults

    def __getitem__(self, key: str) -> str:
        return os.environ[key] if key in os.environ else self.defaults[key]

    def __iter__(self) -> Iterator[str]:
        yield from os.environ
        yield from (k for k in self.defaults if k not in os.environ)

    def __len__(self) -> int:
        return len(os.environ) + sum(k not in os.environ for k in self.defaults)


def for_child_processes(**defaults: str) -> Mapping[str, str]:
    """The environment to start a child process with (Tesseract): this process's own, with ``defaults`` for what
    the operator did not set (config is the only module that reads the environment)."""
    return _ChildEnvironment(defaults)
