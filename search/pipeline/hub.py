"""What a build needs from the Hugging Face Hub, checked once before it starts.

Without this, each library finds out on its own that the Hub is out of reach, after minutes of retries, and
one at a time (the dataset first, the model on the next try). ``check`` asks once: where the build names a
model or a dataset by Hub name, one short request to the Hub's endpoint (``HF_ENDPOINT``; none at all under
``HF_HUB_OFFLINE=1``). Where nothing answers, this process goes on in huggingface_hub's offline mode (so
what is in the local cache loads at once), and whatever is not in the cache is said in one ``OfflineError``,
each with what to do about it.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from search.embedders.clip_input import hub_repo
from search.embedders.pixels import PIXELS
from search.errors import OfflineError
from search.sources.base import DATA_FILE_SUFFIXES

log = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 3.0  # a reachable Hub answers in well under a second; a dead route fails or hangs
# Why a probe found the Hub out of reach, once this process went offline on its word: later checks say the same
# (the library's flag alone would read as HF_HUB_OFFLINE) and do not ask again.
_found: list[str] = []


@dataclass(frozen=True)
class Plan:
    """Where the build opens its dataset from: as given, or a copy in the local Hub cache where the Hub is out of
    reach (then ``name`` is its Hub name)."""

    dataset: str | None
    name: str | None = None


def check(dataset: str | None, models: Sequence[str], *, app: bool = False) -> Plan:
    """Whether ``dataset`` and ``models`` can be had: from disk, from the Hub, or from the local Hub cache.

    Raises OfflineError naming every one that cannot, with the choices that work without the Hub (in the
    builder's words, or with ``app`` in the app's: the IMAGE_SEARCH_* variables it reads).
    """
    hub_dataset = dataset if dataset is not None and _hub_name(dataset) else None
    hub_models = [m for m in dict.fromkeys(models) if m != PIXELS and _hub_name(m)]
    if hub_dataset is None and not hub_models:
        return Plan(dataset)  # all on disk: the network is never asked
    why = unreachable()
    if why is None:
        return Plan(dataset)
    go_offline(why)
    missing_models = [m for m in hub_models if not model_cached(m)]
    cached = dataset_cached(hub_dataset) if hub_dataset else None
    if missing_models or (hub_dataset and cached is None):
        raise _offline_error(why, missing_models, hub_dataset if cached is None else None, app)
    log.warning("the Hugging Face Hub cannot be reached (%s): what this build needs comes from the local cache", why)
    if cached is not None:
        log.info("the dataset %s is read from its copy in the Hugging Face cache, %s", hub_dataset, cached)
        return Plan(str(cached), hub_dataset)
    return Plan(dataset)


def reach() -> None:
    """Find out once whether the Hub answers (a few seconds at most) and, where it does not, go offline, so that
    every later load reads the local cache at once instead of retrying (an app's start: its models, the
    multilingual text model, by Hub name)."""
    from huggingface_hub import constants

    if constants.is_offline_mode():  # HF_HUB_OFFLINE, or an earlier probe: nothing to ask
        return
    why = unreachable()
    if why is not None:
        go_offline(why)
        log.warning("the Hugging Face Hub cannot be reached (%s): models come from the local cache only", why)


def unreachable(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the Hub cannot be reached (``HF_HUB_OFFLINE``, or no answer from its endpoint within ``timeout``
    seconds), in the operator's words, or None where it answers."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if _found:
        return _found[0]
    if constants.is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    try:  # the library's own session: its proxies, certificates and headers, as the downloads would use them
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception as exc:  # whatever stops an answer (refused, timed out, no route, TLS) means the same
        return f"nothing answered at {constants.ENDPOINT} within {timeout:g} s: {type(exc).__name__}: {exc}"
    return None  # any HTTP answer, an error status included: the Hub is there, and the libraries say the rest


def go_offline(why: str) -> None:
    """Put this process in huggingface_hub's offline mode: models then load from the local cache at once,
    instead of each request retrying the Hub (transformers and sentence-transformers ask the library)."""
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        _found.append(why)
        constants.HF_HUB_OFFLINE = True  # the flag is_offline_mode() reads, as HF_HUB_OFFLINE=1 sets it


def model_cached(name: str) -> bool:
    """Whether the model ``name`` (a Hub name) is in the local Hub cache: a sentence-transformers checkpoint
    (modules.json; a bare name is the sentence-transformers organisation's) or a transformers one (config.json)."""
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(hub_repo(name), f), str) for f in ("modules.json", "config.json"))


def dataset_cached(name: str) -> Path | None:
    """The snapshot of the Hub dataset ``name`` in the local Hub cache, where it holds data files: a folder laid
    out like the Hub repo, which ``open_source`` reads as it is (datasets streams a Hub name from the network
    only, cache or not)."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(name, repo_type="dataset", local_files_only=True))
    except OSError:  # LocalEntryNotFoundError: not in the cache
        return None
    files = islice(folder.rglob("*"), 10_000)
    return folder if any(f.suffix in DATA_FILE_SUFFIXES for f in files) else None


def _hub_name(name: str) -> bool:
    """Whether ``name`` can only mean something on the Hub: no such path here, and a valid repo id."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if Path(name).expanduser().exists():
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False  # a path that is not there: the source's or the model's own error says so
    return True


def _offline_error(why: str, models: list[str], dataset: str | None, app: bool) -> OfflineError:
    things = [f"the model {m!r}" for m in models] + ([f"the dataset {dataset!r}"] if dataset else [])
    if len(things) == 2:
        missing = f"neither {things[0]} nor {things[1]} is"
    else:
        missing = f"{', '.join(things)} {'is' if len(things) == 1 else 'are'} not"
    problem = f"the Hugging Face Hub cannot be reached and {missing} in the local Hugging Face cache"
    steps: list[str] = []
    if models:
        folder, pixels = (("set IMAGE_SEARCH_MODEL to a local checkpoint folder", "set it to pixels") if app else
                          ("--model /path/to/folder, a local checkpoint", "--model pixels"))
        steps.append(f"For the model: {folder} (a sentence-transformers CLIP folder written by "
                     "SentenceTransformer.save, or a SigLIP / SigLIP 2 checkpoint): it searches by description and "
                     f"by keywords (file names, folders, captions). Or {pixels}: no model at all; it searches by "
                     "image only, with no text and no keyword search.")
    if dataset:
        where = "set IMAGE_SEARCH_DEFAULT_DATASET to a folder" if app else "--dataset FOLDER, a folder"
        steps.append(f"For the dataset: {where} of images or a local copy of the dataset (a folder with "
                     "data/train-*.parquet, or one written by Dataset.save_to_disk)"
                     + (", or to none to start with no index (`python index_builder.py` then builds one)." if app
                        else "."))
    if why.startswith("HF_HUB_OFFLINE"):
        steps.append("Or, where the Hub can be reached, unset HF_HUB_OFFLINE and what is missing is downloaded.")
    else:
        steps.append("Or connect this machine to the Hub (or set HF_ENDPOINT to a mirror of it) and what is missing "
                     "is downloaded.")
    if app:
        steps.append("Then restart the app.")
    return OfflineError(problem, steps, internals=why)
