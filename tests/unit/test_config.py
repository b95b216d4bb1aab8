"""The settings: every variable of docs/configuration.md's table read into one checked object, nothing else reading them."""
from __future__ import annotations

from pathlib import Path

import pytest

from search.config import DEFAULT_STORE, AlbumLimits, Settings


def test_defaults_need_no_environment(environment):
    settings = environment()
    assert settings.store == DEFAULT_STORE == Path("data/store") and settings.collection is None
    assert settings.chroma is None and not settings.public and settings.limits == AlbumLimits()
    assert settings.upload_budget_bytes == 512 * 1024**2 and (settings.queue_size, settings.concurrency) == (64, 4)


def test_each_variable_reaches_its_setting(environment, tmp_path):
    settings = environment(IMAGE_SEARCH_STORE=str(tmp_path), IMAGE_SEARCH_COLLECTION="mine", IMAGE_SEARCH_PUBLIC="yes",
                           IMAGE_SEARCH_MAX_STORE_MB="10", IMAGE_SEARCH_MAX_IMAGES_TOTAL="7",
                           IMAGE_SEARCH_UPLOAD_BUDGET_MB="3", CHROMA_HOST=" db.internal ", CHROMA_PORT="9000",
                           CHROMA_TOKEN="sekret", CHROMA_TIMEOUT_S="2.5", IMAGE_SEARCH_ALLOW_PRIVATE_URLS="1")
    assert settings.store == tmp_path and settings.collection == "mine" and settings.public and settings.allow_private_urls
    assert settings.limits.store_bytes == 10 * 1024**2 and settings.limits.images_total == 7
    assert settings.upload_budget_bytes == 3 * 1024**2
    server = settings.chroma
    assert server is not None and (str(server), server.timeout) == ("db.internal:9000", 2.5)
    assert server.token is not None and server.token.get_secret_value() == "sekret" and "sekret" not in repr(settings)


def test_a_space_is_a_public_deployment(environment):
    assert environment(SPACE_ID="someone/image-search").public
    assert Settings(space_id="someone/x", public=False).public


@pytest.mark.parametrize(("name", "value"), [("IMAGE_SEARCH_QUEUE_SIZE", "0"), ("IMAGE_SEARCH_CONCURRENCY", "four"),
                                             ("CHROMA_PORT", "70000"), ("IMAGE_SEARCH_PUBLIC", "maybe"),
                                             ("CHROMA_TIMEOUT_S", "-1")])
def test_a_malformed_value_is_refused_naming_its_variable(environment, name, value):
    with pytest.raises(ValueError, match=name):
        environment(**{name: value})
