"""Model families by name: each says which models it makes and how; ``load_embedder`` finds the family a model
name calls for, makes its embedder, loads it and sets its precision, once per process (simonw/llm's registered
embedding models, immich's ``get_model_class``). A new family is a module with its embedder and one ``register``
call below.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from search.embedders.base import DEFAULT_MODEL, Embedder, Inputs
from search.embedders.precision import AUTO, Chooser, settle
from search.errors import ModelError

Make = Callable[[str, "str | None", "str | None"], Embedder]  # name, device, text model -> an embedder, not loaded


@dataclass(frozen=True)
class Family:
    """A kind of model: ``accepts`` tells whether it loads a model of that name; ``make`` makes its embedder
    (cheaply: nothing is loaded until its ``load()``); ``inputs`` reads how images become its input from its
    configuration, without loading it."""

    name: str
    accepts: Callable[[str], bool]
    make: Make
    inputs: Callable[[str], Inputs]


_FAMILIES: list[Family] = []


def register(family: Family) -> None:
    """Offer a family; families registered later are asked first (a test's fake before the built-in ones)."""
    _FAMILIES.insert(0, family)
    load_embedder.cache_clear()


def family_of(name: str) -> Family:
    """The family that loads the model ``name``."""
    for family in _FAMILIES:
        if family.accepts(name):
            return family
    raise ModelError(f"no model family loads {name!r}")


def make_embedder(name: str = DEFAULT_MODEL, device: str | None = None, text_model: str | None = None) -> Embedder:
    """The embedder for the model ``name`` (see ``load_embedder``), made but not loaded."""
    return family_of(name).make(name, device, text_model)


@functools.lru_cache(maxsize=4)
def load_embedder(name: str = DEFAULT_MODEL, device: str | None = None, text_model: str | None = None,
                  precision: str = AUTO, batch_size: int = 1, decisions: str | None = None) -> Embedder:
    """An embedder loaded once per process: ``pixels``, or a model by name or path that a family loads (SigLIP
    and SigLIP 2: a transformers checkpoint; CLIP: a sentence-transformers checkpoint).

    ``text_model``: a text model to pair for non-English queries (see ``clip.paired_text_model``; ``"auto"``
    is the app's default). ``precision``: fp32, bf16 or int8 for both towers, or ``auto``: decided here by a
    ``precision.Chooser``, the image tower at ``batch_size`` (1: the app's queries; a build passes its own) and
    the text tower at one text (the app decides in the background instead: it loads at ``precision.SAFE``).
    ``decisions``: a JSON file (in the store) remembering earlier decisions, so that only a first load measures.
    """
    embedder = make_embedder(name, device, text_model)
    embedder.load()
    settle(embedder, precision, batch_size, Chooser(decisions))
    return embedder


def model_inputs(name: str) -> Inputs:
    """How images become the model ``name``'s input (``prepare``, ``min_edges``), without its weights."""
    return family_of(name).inputs(name)


def _pixels(name: str, device: str | None, text_model: str | None) -> Embedder:
    from search.embedders.clip import paired_text_model
    from search.embedders.pixels import PixelEmbedder

    if paired_text_model(name, text_model)[1]:
        raise ModelError("the pixel method has no text side; a text model cannot be paired with it")
    return PixelEmbedder()


def _clip(name: str, device: str | None, text_model: str | None) -> Embedder:
    from search.embedders.clip import ClipEmbedder

    return ClipEmbedder(name, device=device, text_model=text_model)


def _siglip(name: str, device: str | None, text_model: str | None) -> Embedder:
    from search.embedders.clip import paired_text_model
    from search.embedders.siglip import SiglipEmbedder

    if paired_text_model(name, text_model)[1]:
        raise ModelError("SigLIP reads every language with its own text tower; a text model cannot be paired with it")
    return SiglipEmbedder(name, device=device)


def _is_siglip(name: str) -> bool:
    from search.embedders.siglip import is_siglip

    return is_siglip(name)


def _clip_inputs(name: str) -> Inputs:
    from search.embedders.clip_input import clip_inputs

    return clip_inputs(name)


def _siglip_inputs(name: str) -> Inputs:
    from search.embedders.siglip import siglip_inputs

    return siglip_inputs(name)


def _pixel_inputs(name: str) -> Inputs:
    from search.embedders.pixels import PixelEmbedder

    return PixelEmbedder()  # no weights: the embedder is its own input steps


# any other name: a sentence-transformers CLIP checkpoint
register(Family("clip", lambda name: True, _clip, _clip_inputs))
register(Family("siglip", _is_siglip, _siglip, _siglip_inputs))
register(Family("pixels", lambda name: name == "pixels", _pixels, _pixel_inputs))
